"""A hypothesis state machine comparing a backend's queue with a tiny pure-Python model.

Random sequences of enqueue (now or later), claim, complete, fail (by the core's retry rule or
with a retry time or dead letter decided by the caller), release, renew, clock
moves, move_scheduled, reap_expired and requeue_dead run against both; after every step
the queue depths must agree, and every claim must return what the model allows. Two kinds
of trouble are mixed in: stale settles (a worker reports on a copy of a job whose claim was
reaped, settled or superseded: it must change nothing) and, when the suite can plant one,
poison records (a stored job nobody can read: it must go to the dead letter queue alone).
On a backend with ``groups``, grouped jobs and group limits are mixed in: every claim must
take only jobs their group's limit admits (:mod:`bananas.groups`), and never stop while a
job it could take is ready (a held-back group blocks nobody). Each group's rate is fixed for
a run; its ``max_running`` (and the default ``"*"``) changes as the machine likes.

The model follows :mod:`bananas.protocols` exactly: routing keys in the order given,
``high`` > ``normal`` > ``low``, FIFO within a priority. Where the protocol leaves an order
open (jobs made ready together by one ``move_scheduled``, ``reap_expired`` or
``requeue_dead``), the model keeps them as one *batch* whose members may come in any order.
Which group's turn it is, the machine leaves to the backend (the suite tests the turns): it
checks that each job claimed is the oldest ready job of a group (or of the jobs without one)
that its limit admits.
Time is a :class:`~bananas.clock.ManualClock`; the machine never lands the clock exactly on
a lease deadline or due time, where "expired" and "due" would be a matter of ``<`` vs ``<=``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, TypeVar

import attrs
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from bananas.backend import Backend
from bananas.cancel import CANCELLED_WHILE_RUNNING, CancelOutcome
from bananas.capabilities import Capability
from bananas.clock import Clock, ManualClock
from bananas.errors import JobDecodeError, JobNotFound, LeaseLost
from bananas.groups import DEFAULT_GROUP, GroupLimit, Rate, admits, effective_limit
from bananas.job import ALL_PRIORITIES, Job, JobPriority, JobStatus, backoff_seconds
from bananas.protocols import LEASE_EXPIRED_ERROR, Cancellation, GroupLimits, UniqueEnqueue
from bananas.unique import UniqueKey, key_held

__all__ = [
    "DEFAULT_SETTINGS",
    "POISON_RECORDS",
    "Overwrite",
    "QueueModel",
    "QueueStateMachine",
    "make_state_machine",
    "run_state_machine",
]

Overwrite = Callable[[Backend, str, str], Coroutine[Any, Any, None]]
"""``overwrite(backend, job_id, text)``: replace a stored job's record with ``text`` exactly
(the conformance suite's ``bananas_overwrite_record`` fixture)."""

POISON_RECORDS: tuple[str, ...] = (
    "not json at all",
    "[]",
    '{"id": "%s", "name": "task", "payload": NaN, "status": "pending"}',
    '{"id": "%s", "name": "task", "status": "pending", "payload": ' + "[" * 3000 + "]" * 3000 + "}",
    '{"id": "%s", "name": "task", "status": "pending", "attempts": "many"}',
    '{"id": "%s", "name": "task", "status": "pending", "created_at": "yesterday"}',
)
"""Records no reader can take for a job: ``%s`` is the job's id. Each must hurt only itself."""

T = TypeVar("T")
Line = tuple[str, JobPriority]
KEYS = ("default", "gpu")
UNIQUE_KEYS = ("invoice:1", "invoice:2")
GROUPS = ("g1", "g2")
RATES = (None, Rate(2, 60.0), Rate(3, 60.0))
TICK = 1 / 64  # exact in binary and in microseconds, so every backend stores times exactly

DEFAULT_SETTINGS = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@attrs.define
class ModelJob:
    id: str
    line: Line
    max_retries: int
    status: JobStatus = JobStatus.PENDING
    attempts: int = 0
    group: str | None = None


@attrs.define
class QueueModel:
    """Where each job is, as the protocols say it must be."""

    jobs: dict[str, ModelJob] = attrs.field(factory=dict)
    lines: dict[Line, list[set[str]]] = attrs.field(factory=dict)  # FIFO of batches
    processing: dict[str, float] = attrs.field(factory=dict)  # id -> lease deadline
    scheduled: dict[str, float] = attrs.field(factory=dict)  # id -> due time
    dead: list[str] = attrs.field(factory=list)
    poisoned: set[str] = attrs.field(factory=set)  # ids whose stored record is unreadable
    unique: dict[str, tuple[str, float]] = attrs.field(factory=dict)  # unique key -> (holder id, unique_for)
    finished: dict[str, float] = attrs.field(factory=dict)  # completed id -> when
    limits: dict[str, GroupLimit] = attrs.field(factory=dict)  # stored group limits, "*" included
    starts: dict[str, list[float]] = attrs.field(factory=dict)  # group -> when its jobs were claimed under a rate

    def limit_of(self, group: str) -> GroupLimit:
        return effective_limit(self.limits.get(group), self.limits.get(DEFAULT_GROUP))

    def admitted(self, group: str | None, now: float) -> bool:
        """Whether a claim at ``now`` may take a job of ``group`` (always for no group)."""
        if group is None:
            return True
        running = sum(1 for i, d in self.processing.items() if self.jobs[i].group == group and d > now)
        return admits(self.limit_of(group), running, self.starts.get(group, ()), now)

    def candidates(self, line: Line, now: float) -> set[str]:
        """The jobs a claim of ``line`` may take next: for each group (and for the jobs without
        one) its limit admits, the oldest ready batch's jobs of it."""
        heads: dict[str | None, set[str]] = {}
        for batch in self.lines.get(line, []):
            for job_id in batch:
                group = self.jobs[job_id].group
                if group not in heads:
                    heads[group] = {i for i in batch if self.jobs[i].group == group}
        return {i for group, ids in heads.items() if self.admitted(group, now) for i in ids}

    def started(self, job_id: str, now: float) -> None:
        """A claim took ``job_id``: a start of its group, counted while the group has a rate."""
        group = self.jobs[job_id].group
        if group is not None and self.limit_of(group).rate is not None:
            self.starts.setdefault(group, []).append(now)

    def unique_holder(self, key: str, now: float) -> str | None:
        """The job holding unique ``key`` at ``now`` by :func:`bananas.unique.key_held`, or ``None``."""
        if key not in self.unique:
            return None
        holder, unique_for = self.unique[key]
        return holder if key_held(self.jobs[holder].status, self.finished.get(holder), unique_for, now) else None

    def bury(self, job_id: str) -> None:
        """A poisoned job found by a claim or a move: taken off its line, dead."""
        for batches in self.lines.values():
            for batch in batches:
                batch.discard(job_id)
            batches[:] = [b for b in batches if b]
        self.scheduled.pop(job_id, None)
        self.jobs[job_id].status = JobStatus.FAILED
        self.dead.append(job_id)

    def make_ready(self, ids: list[str], *, front: bool = False) -> None:
        """Ids made ready together: one batch per line (in front of the line for a release)."""
        by_line: dict[Line, set[str]] = {}
        for job_id in ids:
            job = self.jobs[job_id]
            job.status = JobStatus.PENDING
            by_line.setdefault(job.line, set()).add(job_id)
        for line, batch in by_line.items():
            self.lines.setdefault(line, []).insert(0, batch) if front else self.lines.setdefault(line, []).append(batch)

    def check_claim(
        self, keys: list[str], priorities: list[JobPriority], limit: int, got: list[str], buried: set[str], now: float
    ) -> None:
        """Assert ``got`` is a claim the protocol allows, and apply it.

        ``buried`` are poisoned jobs this claim sent to the dead letter queue; a claim that
        met one may return fewer jobs than were ready.
        """
        for job_id in buried:
            self.bury(job_id)
        if buried:
            limit = len(got)
        taken = 0
        for key in dict.fromkeys(keys):
            for priority in sorted(set(priorities), key=lambda p: p.rank):
                batches = self.lines.get((key, priority), [])
                while taken < limit and (allowed := self.candidates((key, priority), now)):
                    assert taken < len(got), (
                        f"claim({keys}, {[p.value for p in priorities]}, limit={limit}) returned {len(got)} "
                        f"jobs but more were ready, e.g. in {key}/{priority.value}: {sorted(allowed)}"
                    )
                    job_id = got[taken]
                    assert job_id in allowed, (
                        f"claim returned {job_id} as job #{taken + 1}; next in line is {key}/{priority.value} "
                        f"{sorted(allowed)} (routing keys in order, then priority, then FIFO per group "
                        "among the groups whose limits admit one more)"
                    )
                    for batch in batches:
                        batch.discard(job_id)
                    batches[:] = [b for b in batches if b]
                    self.started(job_id, now)
                    self.processing[job_id] = float("inf")  # holds its slot; the caller sets the deadline
                    taken += 1
        assert taken == len(got), f"claim returned {got[taken:]} beyond the ready jobs it may take"

    def ready_counts(self) -> dict[Line, int]:
        counts = {line: sum(len(b) for b in batches) for line, batches in self.lines.items()}
        return {line: n for line, n in counts.items() if n}

    def failed_attempt(self, job_id: str, now: float, *, retry_delay: bool) -> bool:
        """Count a failed attempt; True if the job will be retried."""
        job = self.jobs[job_id]
        self.processing.pop(job_id, None)
        job.attempts += 1
        if job.attempts < job.max_retries:
            job.status = JobStatus.PENDING
            if retry_delay:
                self.scheduled[job_id] = now + backoff_seconds(job.attempts)
            return True
        job.status = JobStatus.FAILED
        self.dead.append(job_id)
        return False

    def decided_failure(self, job_id: str, retry_at: float | None) -> None:
        """A failed attempt stored as its caller decided: retried at ``retry_at``, or dead for ``None``."""
        job = self.jobs[job_id]
        self.processing.pop(job_id, None)
        job.attempts += 1
        if retry_at is None:
            job.status = JobStatus.FAILED
            self.dead.append(job_id)
        else:
            job.status = JobStatus.PENDING
            self.scheduled[job_id] = retry_at


class QueueStateMachine(RuleBasedStateMachine):
    """Subclass with a ``factory`` (see :func:`make_state_machine`) to run it on a backend."""

    factory: Callable[[Clock], Backend]
    overwrite: Overwrite | None = None

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.clock = ManualClock()
        self.backend = self.factory(self.clock)
        self.model = QueueModel()
        self.claimed: dict[str, Job] = {}
        self.stale: list[tuple[Job, str]] = []  # claimed copies whose claim no longer holds the job, and why
        self.counter = 0
        self.rates: dict[str, Rate | None] = {}

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def teardown(self) -> None:
        try:
            self.run(self.backend.close())
        finally:
            self.runner.close()

    def _new_id(self) -> str:
        self.counter += 1
        return f"job-{self.counter:04d}"

    # -- rules ------------------------------------------------------------------------

    @initialize(specs=st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(ALL_PRIORITIES)), max_size=6),
                max_retries=st.integers(min_value=0, max_value=3))  # fmt: skip
    def start_with_jobs(self, specs: list[tuple[str, JobPriority]], max_retries: int) -> None:
        if specs:
            self.enqueue(specs, max_retries)

    @rule(
        specs=st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(ALL_PRIORITIES)), min_size=1, max_size=3),
        max_retries=st.integers(min_value=0, max_value=3),
    )
    def enqueue(self, specs: list[tuple[str, JobPriority]], max_retries: int) -> None:
        jobs = [Job.create("task", {"i": self.counter}, routing_key=key, priority=prio, max_retries=max_retries,
                           job_id=self._new_id(), now=self.clock.now()) for key, prio in specs]  # fmt: skip
        self.run(self.backend.queue.enqueue_many(jobs) if len(jobs) > 1 else self.backend.queue.enqueue(jobs[0]))
        for job in jobs:
            self.model.jobs[job.id] = ModelJob(job.id, (job.routing_key, job.priority), max_retries)
        for job in jobs:  # one at a time: FIFO within the batch too
            self.model.make_ready([job.id])

    @initialize(
        rates=st.tuples(*(st.sampled_from(RATES) for _ in (*GROUPS, DEFAULT_GROUP))),
        max_running=st.tuples(*(st.sampled_from([1, 0, 2]) for _ in GROUPS)),
        specs=st.lists(
            st.tuples(st.sampled_from(KEYS), st.sampled_from(ALL_PRIORITIES), st.sampled_from(GROUPS)),
            min_size=2,
            max_size=6,
        ),
    )
    def start_with_groups(
        self,
        rates: tuple[Rate | None, ...],
        max_running: tuple[int | None, ...],
        specs: list[tuple[str, JobPriority, str]],
    ) -> None:
        """Each group's (and the default's) rate, fixed for the run (its limits change only
        ``max_running``), the groups' first limits and jobs."""
        self.rates = dict(zip((*GROUPS, DEFAULT_GROUP), rates, strict=True))
        if not self.backend.supports(Capability.GROUPS):
            return
        for group, most in zip(GROUPS, max_running, strict=True):
            self.set_group_limit(group, most)
        if specs:
            self.enqueue_grouped(specs)

    @precondition(lambda self: self.backend.supports(Capability.GROUPS))
    @rule(
        specs=st.lists(
            st.tuples(st.sampled_from(KEYS), st.sampled_from(ALL_PRIORITIES), st.sampled_from(GROUPS)),
            min_size=1,
            max_size=3,
        )
    )
    def enqueue_grouped(self, specs: list[tuple[str, JobPriority, str]]) -> None:
        jobs = [Job.create("task", None, routing_key=key, priority=prio, group=group, job_id=self._new_id(),
                           now=self.clock.now()) for key, prio, group in specs]  # fmt: skip
        self.run(self.backend.queue.enqueue_many(jobs))
        for job in jobs:
            line = (job.routing_key, job.priority)
            self.model.jobs[job.id] = ModelJob(job.id, line, job.max_retries, group=job.group)
            self.model.make_ready([job.id])

    def _group_limits(self) -> GroupLimits:
        queue = self.backend.queue
        assert isinstance(queue, GroupLimits), "the backend declares groups, but its queue is not a GroupLimits"
        return queue

    @precondition(lambda self: self.backend.supports(Capability.GROUPS))
    @rule(group=st.sampled_from((*GROUPS, DEFAULT_GROUP)), max_running=st.sampled_from([None, 0, 1, 2]))
    def set_group_limit(self, group: str, max_running: int | None) -> None:
        limit = GroupLimit(max_running=max_running, rate=self.rates[group])
        self.run(self._group_limits().set_group_limit(group, limit))
        self.model.limits[group] = limit
        assert self.run(self._group_limits().group_limits()) == self.model.limits, "stored limits differ"

    @precondition(lambda self: self.model.limits)
    @rule(data=st.data())
    def remove_group_limit(self, data: st.DataObject) -> None:
        group = data.draw(st.sampled_from(sorted(self.model.limits)), label="group")
        assert self.run(self._group_limits().remove_group_limit(group)) is True
        del self.model.limits[group]
        assert self.run(self._group_limits().get_group_limit(group)) is None

    @precondition(lambda self: self.backend.supports(Capability.UNIQUE_JOBS))
    @rule(unique_key=st.sampled_from(UNIQUE_KEYS), unique_for=st.sampled_from([0, 5, 40]), key=st.sampled_from(KEYS))
    def enqueue_unique(self, unique_key: str, unique_for: int, key: str) -> None:
        job = Job.create("once", None, routing_key=key, job_id=self._new_id(), now=self.clock.now())
        holder = self.model.unique_holder(unique_key, self.clock())
        queue = self.backend.queue
        assert isinstance(queue, UniqueEnqueue), "declares unique_jobs but its queue is not a UniqueEnqueue"
        [answer] = self.run(queue.enqueue_unique([(job, UniqueKey(unique_key, unique_for))]))
        assert answer == (holder or job.id), (
            f"unique key {unique_key!r}: the submit stood for {answer}, the rule says {holder or 'a new job'}"
        )
        if holder is None:
            self.model.jobs[job.id] = ModelJob(job.id, (key, job.priority), job.max_retries)
            self.model.make_ready([job.id])
            self.model.unique[unique_key] = (job.id, unique_for)

    @rule(key=st.sampled_from(KEYS), priority=st.sampled_from(ALL_PRIORITIES), delay=st.integers(1, 40))
    def enqueue_scheduled(self, key: str, priority: JobPriority, delay: int) -> None:
        when = self.clock.now() + timedelta(seconds=delay)
        job = Job.create("later", None, routing_key=key, priority=priority, job_id=self._new_id(), now=self.clock.now())
        job = job.evolve(status=JobStatus.SCHEDULED, scheduled_for=when)
        self.run(self.backend.queue.enqueue(job))
        self.model.jobs[job.id] = ModelJob(job.id, (key, priority), job.max_retries, status=JobStatus.SCHEDULED)
        self.model.scheduled[job.id] = when.timestamp()

    @rule(
        keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=2, unique=True),
        priorities=st.lists(st.sampled_from(ALL_PRIORITIES), min_size=1, max_size=3, unique=True),
        limit=st.integers(1, 3),
        lease=st.sampled_from([5, 20, 60]),
    )
    def claim(self, keys: list[str], priorities: list[JobPriority], limit: int, lease: int) -> None:
        jobs = self.run(self.backend.queue.claim(keys, priorities, limit=limit, lease=lease))
        got = [j.id for j in jobs]
        assert len(got) == len(set(got)), f"claim returned a job twice: {got}"
        for job_id in got:
            assert job_id not in self.model.processing, f"{job_id} claimed while its lease still runs"
            assert job_id not in self.model.poisoned, f"claim returned {job_id}, whose record is unreadable"
        now = self.clock()
        self.model.check_claim(keys, priorities, limit, got, self._buried(), now)
        for job in jobs:
            model_job = self.model.jobs[job.id]
            assert (job.status, job.attempts) == (JobStatus.PROCESSING, model_job.attempts), job.id
            assert job.lease_token, f"claim returned {job.id} without a lease token"
            model_job.status = JobStatus.PROCESSING
            self.model.processing[job.id] = now + lease
            self._retire(job.id, "claimed again")
            self.claimed[job.id] = job

    def _retire(self, job_id: str, why: str) -> None:
        """The claimed copy of ``job_id`` (if any) no longer holds the job."""
        old = self.claimed.pop(job_id, None)
        if old is not None:
            self.stale.append((old, why))

    def _buried(self) -> set[str]:
        """Poisoned ready or scheduled jobs that the backend has sent to the dead letter queue."""
        buried: set[str] = set()
        for job_id in sorted(self.model.poisoned):
            if self.model.jobs[job_id].status is JobStatus.FAILED:
                continue
            try:
                stored = self.run(self.backend.queue.get_job(job_id))
            except JobDecodeError:
                continue  # still waiting where it was
            assert stored.status is JobStatus.FAILED and stored.error, (
                f"poisoned job {job_id} reads back as {stored.status.value}; it must be dead with an error"
            )
            buried.add(job_id)
        return buried

    def _complete(self, job_id: str) -> None:
        done = self.run(self.backend.queue.complete(self.claimed[job_id]))
        assert (done.id, done.status) == (job_id, JobStatus.COMPLETED)
        del self.model.processing[job_id]
        self.model.jobs[job_id].status = JobStatus.COMPLETED
        self.model.finished[job_id] = self.clock()
        self._retire(job_id, "complete")

    def _fail(self, job_id: str) -> None:
        now = self.clock()
        stored = self.run(self.backend.queue.fail(self.claimed[job_id], "boom"))
        self._retire(job_id, "fail")
        retried = self.model.failed_attempt(job_id, now, retry_delay=True)
        model_job = self.model.jobs[job_id]
        assert (stored.status, stored.attempts, stored.error) == (model_job.status, model_job.attempts, "boom")
        if retried:
            assert stored.scheduled_for is not None
            assert stored.scheduled_for.timestamp() == self.model.scheduled[job_id], "retry not at now + 2**attempts"
            self.move_scheduled()  # nothing is due between clock moves: a retry waits 2**attempts >= 2 seconds

    def _release(self, job_id: str) -> None:
        self.run(self.backend.queue.release(self.claimed[job_id]))
        del self.model.processing[job_id]
        self.model.make_ready([job_id], front=True)
        self._retire(job_id, "release")

    def _renew(self, job_id: str) -> None:
        unknown = Job(name="task", id="job-unknown", status=JobStatus.PROCESSING, lease_token="no-such-claim")
        held = self.run(self.backend.queue.renew([self.claimed[job_id], unknown], lease=30))
        assert held == {job_id}
        self.model.processing[job_id] = self.clock() + 30

    @precondition(lambda self: self.stale)
    @rule(data=st.data(), action=st.sampled_from(["fail", "complete", "release", "renew"]))
    def stale_settle(self, data: st.DataObject, action: str) -> None:
        """A worker reports on a copy whose claim was reaped, settled or superseded: nothing changes."""
        job, why = data.draw(st.sampled_from(self.stale), label="stale copy")
        before = self.run(self.backend.queue.get_job(job.id))
        queue = self.backend.queue
        if action in ("fail", "complete"):
            try:
                self.run(queue.fail(job, "boom") if action == "fail" else queue.complete(job))
            except LeaseLost:
                pass
            else:  # the same call again may count as a retry of an applied one, and change nothing
                assert action == why, f"a {action} of {job.id} after its claim ended ({why}) did not raise LeaseLost"
        elif action == "release":
            self.run(queue.release(job))
        else:
            held = self.run(queue.renew([job], lease=600))
            assert held == set(), f"a stale renew of {job.id} said it is still held"
        after = self.run(self.backend.queue.get_job(job.id))
        assert (after.status, after.attempts, after.error) == (before.status, before.attempts, before.error), (
            f"a stale {action} changed job {job.id}: {before.status.value} -> {after.status.value}"
        )

    @precondition(lambda self: self.overwrite is not None)
    @rule(
        key=st.sampled_from(KEYS),
        priority=st.sampled_from(ALL_PRIORITIES),
        record=st.sampled_from(POISON_RECORDS),
        delay=st.sampled_from([0, 3, 20]),
    )
    def poison(self, key: str, priority: JobPriority, record: str, delay: int) -> None:
        """A job whose stored record is then made unreadable (by a foreign or buggy producer)."""
        assert self.overwrite is not None
        job = Job.create("task", None, routing_key=key, priority=priority, job_id=self._new_id(), now=self.clock.now())
        model_job = ModelJob(job.id, (key, priority), job.max_retries)
        if delay:
            job = job.evolve(status=JobStatus.SCHEDULED, scheduled_for=self.clock.now() + timedelta(seconds=delay))
        self.run(self.backend.queue.enqueue(job))
        self.run(self.overwrite(self.backend, job.id, record.replace("%s", job.id)))
        self.model.jobs[job.id] = model_job
        self.model.poisoned.add(job.id)
        if delay:
            model_job.status = JobStatus.SCHEDULED
            assert job.scheduled_for is not None
            self.model.scheduled[job.id] = job.scheduled_for.timestamp()
        else:
            self.model.make_ready([job.id])

    @precondition(lambda self: self.model.processing)
    @rule(data=st.data(), action=st.sampled_from(["fail", "complete", "release", "renew"]))
    def finish(self, data: st.DataObject, action: str) -> None:
        """A worker reports on a job it holds."""
        job_id = data.draw(st.sampled_from(sorted(self.model.processing)), label="job")
        getattr(self, "_" + action)(job_id)

    @precondition(lambda self: self.model.processing)
    @rule(data=st.data(), delay=st.sampled_from([None, 0.5, 3, 40]))
    def fail_as_decided(self, data: st.DataObject, delay: float | None) -> None:
        """A worker fails a job it holds with a decision of its own, whatever the retries left:
        retry ``delay`` seconds from now, or dead (``None``)."""
        job_id = data.draw(st.sampled_from(sorted(self.model.processing)), label="job")
        retry_at = None if delay is None else self.clock.now() + timedelta(seconds=delay)
        stored = self.run(self.backend.queue.fail(self.claimed[job_id], "decided", retry_at=retry_at))
        self._retire(job_id, "fail")
        self.model.decided_failure(job_id, None if retry_at is None else retry_at.timestamp())
        model_job = self.model.jobs[job_id]
        assert (stored.status, stored.attempts, stored.error, stored.scheduled_for) == (
            model_job.status, model_job.attempts, "decided", retry_at,
        ), f"fail(retry_at={retry_at}) did not store that decision"  # fmt: skip

    @rule(seconds=st.sampled_from([61, 30, 13, 8, 5, 3, 2, 1, 0.5]))
    def advance(self, seconds: float) -> None:
        """Time passes (never onto a deadline), then a worker's housekeeping runs."""
        boundaries = set(self.model.processing.values()) | set(self.model.scheduled.values())
        boundaries |= {self.model.finished.get(h, 0) + w for h, w in self.model.unique.values()}
        windows = {rate.window for rate in RATES if rate is not None}
        boundaries |= {t + window for starts in self.model.starts.values() for t in starts for window in windows}
        target = self.clock() + seconds
        while target in boundaries:
            target += TICK
        self.clock.set(target)
        self.move_scheduled()
        self.reap_expired()
        for job_id, stale in list(self.claimed.items()):
            if job_id not in self.model.processing:  # reaped: that claim holds nothing now
                del self.claimed[job_id]
                self.stale.append((stale, "reaped"))
        assert self.run(self.backend.queue.move_scheduled()) == 0, "move_scheduled moved a job twice"
        assert self.run(self.backend.queue.reap_expired()) == 0, "reap_expired took a job back twice"

    def move_scheduled(self) -> None:
        now = self.clock()
        due = sorted(job_id for job_id, when in self.model.scheduled.items() if when <= now)
        healthy = [job_id for job_id in due if job_id not in self.model.poisoned]
        assert self.run(self.backend.queue.move_scheduled()) == len(healthy), f"expected {healthy} to become ready"
        for job_id in due:
            if job_id in self.model.poisoned:
                self.model.bury(job_id)
                stored = self.run(self.backend.queue.get_job(job_id))
                assert stored.status is JobStatus.FAILED and stored.error, f"poisoned {job_id} was not buried"
            else:
                del self.model.scheduled[job_id]
        self.model.make_ready(healthy)

    def reap_expired(self) -> None:
        now = self.clock()
        expired = sorted(job_id for job_id, deadline in self.model.processing.items() if deadline <= now)
        assert self.run(self.backend.queue.reap_expired()) == len(expired), f"expected {expired} to be reaped"
        again = [job_id for job_id in expired if self.model.failed_attempt(job_id, now, retry_delay=False)]
        self.model.make_ready(again)
        for job_id in expired:
            stored = self.run(self.backend.queue.get_job(job_id))
            assert (stored.attempts, stored.error) == (self.model.jobs[job_id].attempts, LEASE_EXPIRED_ERROR)

    @precondition(lambda self: self.model.jobs and self.backend.supports(Capability.CANCEL))
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        """A client cancels a job: one waiting never runs, a running one is settled cancelled by
        its worker (told by cancel_requested), a finished one is left alone."""
        candidates = sorted(set(self.model.jobs) - self.model.poisoned)
        if not candidates:
            return
        job_id = data.draw(st.sampled_from(candidates), label="job")
        queue = self.backend.queue
        assert isinstance(queue, Cancellation), "the backend declares cancel, but its queue is not a Cancellation"
        job = self.model.jobs[job_id]
        try:
            outcome = self.run(queue.cancel(job_id))
        except JobNotFound:
            assert job.status.is_final, f"cancel({job_id}) found no job; it is {job.status.value}"
            return  # a finished record whose TTL ran out
        if job.status.is_final:
            assert outcome is CancelOutcome.ALREADY_FINISHED, f"cancel of a {job.status.value} job answered {outcome}"
        elif job_id in self.model.processing:
            assert outcome is CancelOutcome.REQUESTED, f"cancel of a running job answered {outcome}"
            claimed = self.claimed[job_id]
            assert self.run(queue.cancel_requested([claimed])) == {job_id}, "the worker was not told"
            stored = self.run(queue.settle_cancelled(claimed, CANCELLED_WHILE_RUNNING))
            assert stored.status is JobStatus.CANCELLED
            del self.model.processing[job_id]
            job.status = JobStatus.CANCELLED
            self._retire(job_id, "complete")
        else:
            assert outcome is CancelOutcome.CANCELLED, f"cancel of a waiting job answered {outcome}"
            for batches in self.model.lines.values():
                for batch in batches:
                    batch.discard(job_id)
                batches[:] = [b for b in batches if b]
            self.model.scheduled.pop(job_id, None)
            job.status = JobStatus.CANCELLED
        assert self.run(queue.get_job(job_id)).status is job.status

    @precondition(lambda self: self.model.dead and self.backend.supports(Capability.DEAD_LETTER_ADMIN))
    @rule()
    def requeue_dead(self) -> None:
        dead = [job_id for job_id in self.model.dead if job_id not in self.model.poisoned]
        self.model.dead = [job_id for job_id in self.model.dead if job_id in self.model.poisoned]
        assert self.run(self.backend.queue.requeue_dead(dead)) == len(dead)
        for job_id in dead:
            self.model.jobs[job_id].attempts = 0
        self.model.make_ready(dead)

    # -- invariants -------------------------------------------------------------------

    @invariant()
    def depths_agree(self) -> None:
        depths = self.run(self.backend.queue.depths())
        assert {k: v for k, v in depths.ready.items() if v} == self.model.ready_counts(), "ready jobs differ"
        assert depths.processing == len(self.model.processing), "processing count differs"
        assert depths.scheduled == len(self.model.scheduled), "scheduled count differs"
        assert depths.dead == len(self.model.dead), "dead count differs"


def make_state_machine(
    factory: Callable[[Clock], Backend], overwrite: Overwrite | None = None
) -> type[QueueStateMachine]:
    """A :class:`QueueStateMachine` bound to ``factory`` (called once per example with a ManualClock).

    With ``overwrite``, poison records are mixed in too.
    """
    attributes = {"factory": staticmethod(factory), "overwrite": staticmethod(overwrite) if overwrite else None}
    return type("BackendStateMachine", (QueueStateMachine,), attributes)


def run_state_machine(
    factory: Callable[[Clock], Backend], settings_: settings | None = None, overwrite: Overwrite | None = None
) -> None:
    """Run the state machine against ``factory``'s backends; raises on the first disagreement."""
    run_state_machine_as_test(make_state_machine(factory, overwrite), settings=settings_ or DEFAULT_SETTINGS)

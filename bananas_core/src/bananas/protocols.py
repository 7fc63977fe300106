"""The storage contracts every backend implements: :class:`Queue`, :class:`ResultBackend`,
:class:`Scheduler` (cron storage) and :class:`WorkerRegistry` (liveness).

All methods are coroutines. All times a backend compares (leases, due jobs, heartbeats)
come from its clock (:attr:`BackendOptions.clock <bananas.backend.BackendOptions.clock>`),
never from the server, so tests can move time by hand. Every method may raise
:class:`~bananas.errors.BackendUnavailable` when the store cannot be reached.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import attrs

from bananas.cancel import CancelOutcome
from bananas.groups import GroupLimit
from bananas.job import ALL_PRIORITIES, Job, JobPriority, JobResult
from bananas.policy import BY_POLICY, LEASE_EXPIRED_ERROR, RetryAt
from bananas.unique import UniqueKey
from bananas.workflows.plan import WorkflowPlan, WorkflowRecord, WorkflowStop

__all__ = [
    "BlockingEnqueue",
    "Cancellation",
    "Checkpoints",
    "CompleteAndStore",
    "UniqueEnqueue",
    "DEFAULT_LEASE_SECONDS",
    "GroupLimits",
    "HandOff",
    "LEASE_EXPIRED_ERROR",
    "Queue",
    "QueueDepths",
    "ResultBackend",
    "ScheduleState",
    "Scheduler",
    "WorkerInfo",
    "WorkerRegistry",
    "WorkflowSteps",
]

DEFAULT_LEASE_SECONDS = 60.0


@attrs.frozen(kw_only=True)
class QueueDepths:
    """How many jobs are where. ``ready`` maps ``(routing_key, priority)`` to a count (zeros may be left out)."""

    ready: Mapping[tuple[str, JobPriority], int] = attrs.field(factory=dict)
    processing: int = 0
    scheduled: int = 0
    dead: int = 0

    @property
    def total_ready(self) -> int:
        """All ready jobs, over every routing key and priority."""
        return sum(self.ready.values())

    def ready_for(self, routing_key: str) -> int:
        """Ready jobs of one routing key, over every priority."""
        return sum(n for (key, _), n in self.ready.items() if key == routing_key)


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


def _priorities(values: Iterable[JobPriority | str]) -> tuple[JobPriority, ...]:
    return tuple(JobPriority.parse(p) for p in values)


@attrs.frozen(kw_only=True)
class WorkerInfo:
    """A live worker as it announces itself."""

    id: str
    host: str
    pid: int
    routing_keys: tuple[str, ...] = attrs.field(converter=_strings)
    priorities: tuple[JobPriority, ...] = attrs.field(converter=_priorities)
    concurrency: int
    in_flight: int = 0
    mode: str = "default"
    started_at: float = 0.0
    last_heartbeat: float = 0.0
    completed: int | None = None
    """Attempts this worker completed since it started (``None``: a worker that does not say)."""
    failed: int | None = None
    """Attempts this worker failed (retried or dead) since it started (``None``: it does not say)."""

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready mapping (what backends store)."""
        d = attrs.asdict(self)
        d["routing_keys"] = list(self.routing_keys)
        d["priorities"] = [p.value for p in self.priorities]
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> WorkerInfo:
        """Read what :meth:`to_dict` wrote."""
        fields = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})  # type: ignore[arg-type]


@attrs.frozen(kw_only=True)
class ScheduleState:
    """What the store remembers of one cron schedule."""

    schedule_id: str
    last_run: datetime | None = None
    next_run: datetime | None = None
    last_success: datetime | None = None
    last_error: str = ""
    run_count: int = 0


@runtime_checkable
class Queue(Protocol):
    """Where jobs wait, are claimed under a lease, and end completed or dead.

    A job is always in exactly one place: ready, scheduled, processing (claimed), dead,
    or finished. No operation leaves a job half-moved.

    Fencing: every claim gives the claimed copy a fresh :attr:`Job.lease_token
    <bananas.job.Job.lease_token>`. :meth:`complete`, :meth:`fail`, :meth:`release` and
    :meth:`renew` apply only while that claim still holds the job (checked in the same
    atomic statement or script that writes): once the lease was reaped, or the job was
    claimed again or settled by anyone else, a settle with the old copy changes nothing.

    Unreadable records: any record that cannot be decoded or re-encoded, for whatever
    reason, affects that record alone. :meth:`claim`, :meth:`reap_expired` and
    :meth:`move_scheduled` send it to the dead letter queue with a readable error (and log
    a WARNING naming its id) and carry on with the others of their batch.
    """

    async def ping(self) -> None:
        """Return if the store answers; raise :class:`~bananas.errors.BackendUnavailable` otherwise."""
        ...

    async def enqueue(self, job: Job) -> None:
        """Store ``job`` and make it claimable.

        A ``pending`` job becomes ready at once; a ``scheduled`` one when its
        ``scheduled_for`` has passed and :meth:`move_scheduled` has run. Atomic: the job
        is stored completely or not at all. Raises :class:`~bananas.errors.DuplicateJob`
        if a job with the same id exists and :class:`~bananas.errors.InvalidJob` for any
        other status.
        """
        ...

    async def enqueue_many(self, jobs: Sequence[Job]) -> None:
        """Enqueue every job in one batch, all or nothing (same rules as :meth:`enqueue`)."""
        ...

    async def claim(
        self,
        routing_keys: Sequence[str],
        priorities: Sequence[JobPriority] = ALL_PRIORITIES,
        *,
        limit: int = 1,
        lease: float = DEFAULT_LEASE_SECONDS,
        job_names: Collection[str] | None = None,
    ) -> list[Job]:
        """Claim up to ``limit`` ready jobs, each leased for ``lease`` seconds.

        Order: routing keys in the order given; within one, ``high`` before ``normal``
        before ``low`` (only the ``priorities`` given); FIFO within a priority. Returned
        jobs have status ``processing`` and a :attr:`~bananas.job.Job.lease_token` unique
        to this claim. While its lease runs, a job is returned to no other caller. A
        claimed id whose stored job is missing or unreadable goes to the dead letter queue
        with an explanatory error and is not returned; the other jobs of the batch are. ``job_names``
        (needs :attr:`Capability.JOB_NAME_FILTER <bananas.capabilities.Capability>`)
        takes only jobs with those names and leaves the others where they are.
        Returns an empty list when nothing is ready; never blocks waiting for work.
        """
        ...

    async def renew(self, jobs: Sequence[Job], lease: float = DEFAULT_LEASE_SECONDS) -> set[str]:
        """Extend the leases of claimed jobs (fenced by their lease tokens) to now + ``lease``;
        return the ids still held.

        An id missing from the answer has lost its lease (it was reaped, finished, claimed
        again or never claimed): nothing of it was changed, and its worker's settles will
        raise :class:`~bananas.errors.LeaseLost`.
        """
        ...

    async def complete(self, job: Job) -> Job:
        """Mark a claimed job ``completed``, release its lease; return the stored job.

        The finished record is kept for the completed-job TTL. Raises
        :class:`~bananas.errors.LeaseLost` (nothing changed) if ``job``'s claim no longer
        holds the job. Repeating a call that was applied (a retry after a lost reply) is
        not an error.
        """
        ...

    async def fail(self, job: Job, error: str, *, retry_at: RetryAt = BY_POLICY) -> Job:
        """Record a failed attempt of a claimed job as the caller decided; return the stored job.

        ``attempts`` grows by one and ``error`` is set. With a ``retry_at`` time the job is
        retried: status ``pending``, ``scheduled_for`` = ``retry_at`` (claimable once that has
        passed and :meth:`move_scheduled` ran), whatever ``attempts`` and ``max_retries`` say.
        With ``None`` it is ``failed`` and goes to the dead letter queue, even if retries
        remain. The default, :data:`~bananas.policy.BY_POLICY`, means the core's rule
        (:func:`bananas.policy.next_retry`: 2**attempts seconds from now while
        ``attempts < max_retries``, else dead). The backend decides nothing: it resolves
        ``retry_at`` with :func:`bananas.policy.decide_retry` (or builds the record with
        :func:`bananas.policy.failed_attempt`) and stores it in one atomic write. Raises
        :class:`~bananas.errors.InvalidJob` (nothing changed) for a ``retry_at`` that is not an
        aware datetime in range. Fenced like :meth:`complete`: raises
        :class:`~bananas.errors.LeaseLost` (nothing changed) if ``job``'s claim no longer
        holds the job.
        """
        ...

    async def release(self, job: Job) -> None:
        """Hand a claimed, unfinished job back as next in line; ``attempts`` unchanged.

        For a worker that stops gracefully before the job ran or finished. Fenced: a job
        that ``job``'s claim no longer holds is left as it is (no error).
        """
        ...

    async def move_scheduled(self) -> int:
        """Make every scheduled or retrying job whose time has come ready; return how many.

        Safe to run from any number of workers at once: a job is never made ready twice.
        Works through the due jobs in bounded batches; an unreadable one goes to the dead
        letter queue and the others move on.
        """
        ...

    async def reap_expired(self) -> int:
        """Take back every claimed job whose lease has run out; return how many.

        Each counts as a failed attempt with :data:`LEASE_EXPIRED_ERROR`: it is ready
        again at once while ``attempts < max_retries``, otherwise dead; that is the record
        :func:`bananas.policy.lease_expired` gives, the one rule every backend applies to each
        job it takes back (inside its store, batch by batch). Safe to run from
        any number of workers at once. Works in bounded batches; an unreadable job goes to
        the dead letter queue and the others are taken back all the same.
        """
        ...

    async def get_job(self, job_id: str) -> Job:
        """The stored job; raises :class:`~bananas.errors.JobNotFound`."""
        ...

    async def depths(self) -> QueueDepths:
        """How many jobs are ready (per routing key and priority), processing, scheduled and dead."""
        ...

    async def dead_letters(self, *, limit: int = 100, offset: int = 0) -> list[Job]:
        """Dead jobs, most recently dead first (needs ``DEAD_LETTER_ADMIN``)."""
        ...

    async def requeue_dead(self, job_ids: Sequence[str] | None = None) -> int:
        """Make dead jobs ready again with ``attempts`` 0 and no error; ``None`` means all.

        Returns how many were requeued (ids not in the dead letter queue are ignored).
        Needs ``DEAD_LETTER_ADMIN``.
        """
        ...

    async def purge_dead(self, job_ids: Sequence[str] | None = None) -> int:
        """Delete dead jobs for good; ``None`` means all. Needs ``DEAD_LETTER_ADMIN``."""
        ...

    async def wait_for_work(self, routing_keys: Sequence[str], timeout: float) -> None:
        """Return when new work may be ready, or after ``timeout`` real seconds.

        A hint only: the caller claims afterwards and may find nothing. Backends with
        ``PUSH_WAKEUP`` return within milliseconds of an enqueue anywhere.
        """
        ...

    async def close(self) -> None:
        """Release connections. Idempotent."""
        ...


@runtime_checkable
class BlockingEnqueue(Protocol):
    """Optional on a :class:`Queue`: enqueue from any thread without an event loop.

    The synchronous :class:`bananas.Client` submits through it from the caller's thread
    when the queue offers it, instead of hopping to its event loop thread and back (most
    of a single submit's cost on a fast store). It must be safe to call from several
    threads at once and keep every rule of :meth:`Queue.enqueue_many`: all or nothing,
    :class:`~bananas.errors.DuplicateJob` and :class:`~bananas.errors.InvalidJob` with
    nothing written, the same retries. The conformance suite holds a queue that offers it
    to that.
    """

    def enqueue_many_blocking(self, jobs: Sequence[Job]) -> None:
        """:meth:`Queue.enqueue_many`, blocking the calling thread until stored."""
        ...


@runtime_checkable
class HandOff(Protocol):
    """Optional on a :class:`Queue` (:attr:`Capability.HAND_OFF <bananas.capabilities.Capability>`):
    an idle worker waits inside the store and is handed jobs as they become ready.

    The worker uses it instead of :meth:`Queue.wait_for_work` when the backend declares the
    capability: one hop from producer to worker. Every job it returns is claimed exactly as
    :meth:`Queue.claim` claims (status ``processing``, a lease, a fresh lease token), in the
    same order rules.
    """

    async def claim_or_wait(
        self,
        routing_keys: Sequence[str],
        priorities: Sequence[JobPriority] = ALL_PRIORITIES,
        *,
        limit: int = 1,
        lease: float = DEFAULT_LEASE_SECONDS,
        waiter: str,
        timeout: float,
    ) -> list[Job]:
        """Claim like :meth:`Queue.claim`; if nothing is ready, wait up to ``timeout`` real
        seconds for jobs handed to ``waiter`` (a token unique to the worker) and return them.

        Returns ``[]`` when the wait ran out or :meth:`wake_waiter` ended it. Jobs handed over
        while the worker was not waiting are returned by its next call.
        """
        ...

    async def wake_waiter(self, waiter: str) -> None:
        """End the current (or next) wait of ``waiter`` early; it returns what it was handed, or ``[]``."""
        ...

    async def stop_waiting(self, waiter: str) -> list[Job]:
        """Unregister ``waiter``; return the jobs handed to it that it has not taken (claimed:
        the caller releases them)."""
        ...


@runtime_checkable
class CompleteAndStore(Protocol):
    """Optional on a :class:`Queue` (:attr:`Capability.COMPLETE_AND_STORE
    <bananas.capabilities.Capability>`): complete a job and store its result in one atomic write."""

    def shares_store_with(self, results: object) -> bool:
        """True if ``results`` keeps its results in this queue's store, so that
        :meth:`complete_and_store` can write both together."""
        ...

    async def complete_and_store(self, job: Job, result: JobResult) -> Job:
        """:meth:`Queue.complete` and ``results.store(result)`` as one atomic write (for a
        ``results`` of :meth:`shares_store_with`); fenced like :meth:`Queue.complete`: raises
        :class:`~bananas.errors.LeaseLost` and writes neither when the claim no longer holds the job."""
        ...


@runtime_checkable
class UniqueEnqueue(Protocol):
    """Optional on a :class:`Queue` (:attr:`Capability.UNIQUE_JOBS <bananas.capabilities.Capability>`):
    enqueue jobs that carry a unique key, writing none whose key another job holds."""

    async def enqueue_unique(self, entries: Sequence[tuple[Job, UniqueKey | None]]) -> list[str]:
        """Enqueue each job of ``entries`` unless its key is held; return, in order, the id of
        the job each entry now stands for (its own, or the holder's).

        A key is held by the job last stored with it while :func:`bananas.unique.key_held`
        says so for that job (the backend decides nothing else). A job whose key is held is
        not written and its entry answers with the holder's id; a later entry of the same
        batch with a key an earlier one took answers with that one's id. Every other job is
        stored as :meth:`Queue.enqueue_many` stores it and takes its key. All of it is one
        atomic write: racing calls with one key store exactly one job, and a
        :class:`~bananas.errors.DuplicateJob` or :class:`~bananas.errors.InvalidJob` leaves
        nothing written, keys included.
        """
        ...


@runtime_checkable
class Cancellation(Protocol):
    """Optional on a :class:`Queue` (:attr:`Capability.CANCEL <bananas.capabilities.Capability>`):
    cancel jobs, stopping those not started at once and those running through their workers."""

    async def cancel(self, job_id: str) -> CancelOutcome:
        """Cancel the job, in one atomic write; raises :class:`~bananas.errors.JobNotFound` for an unknown id.

        Pending, scheduled or waiting for a retry: it leaves the line it waits in and is stored
        as :func:`bananas.cancel.cancelled_record` makes it (no claim can take it afterwards) and
        the answer is ``CANCELLED``. Processing: the job is marked cancel-requested (it keeps
        running; :meth:`cancel_requested` names it from now on) and the answer is ``REQUESTED``.
        Completed, failed (dead) or cancelled: nothing changes, the answer is ``ALREADY_FINISHED``.
        The backend stores no result: the caller does. A workflow step cancelled here is also
        recorded ``cancelled`` and follows its dead link in the same write (see
        :class:`WorkflowSteps`).
        """
        ...

    async def cancel_requested(self, jobs: Sequence[Job]) -> set[str]:
        """The ids of the given claimed jobs that are marked cancel-requested (one round trip)."""
        ...

    async def settle_cancelled(self, job: Job, error: str) -> Job:
        """Store claimed ``job`` as cancelled (:func:`bananas.cancel.cancelled_record` with ``error``),
        release its lease and forget its cancel request; return the stored job. Fenced like
        :meth:`Queue.complete`: raises :class:`~bananas.errors.LeaseLost` (nothing changed) once
        ``job``'s claim no longer holds the job, except that a job already stored cancelled is
        returned as stored and nothing is written (a repeated settle is answered like the first).
        The record is kept for the completed-job TTL. A workflow step is also recorded
        ``cancelled`` and follows its dead link in the same write (see :class:`WorkflowSteps`)."""
        ...


@runtime_checkable
class GroupLimits(Protocol):
    """Optional on a :class:`Queue` (:attr:`Capability.GROUPS <bananas.capabilities.Capability>`):
    limits per group, kept in the store, that every claim obeys (see :mod:`bananas.groups`).

    No new call runs jobs: the queue's own methods apply the limits to jobs whose
    :attr:`~bananas.job.Job.group` is set. :meth:`Queue.claim` (and :meth:`HandOff.claim_or_wait`)
    takes a grouped job only while :func:`bananas.groups.admits` says so for its group's
    :func:`~bananas.groups.effective_limit` at the clock's now, and takes the slot and records the
    start in the same atomic step. A slot is held by a claimed job whose lease deadline is still
    ahead: it is freed by every settle (complete, fail, release, cancel, a workflow step's), by
    :meth:`Queue.reap_expired`, and, reaper or not, once the deadline passes; :meth:`Queue.renew`
    extends it. A job held back stays where it is, unchanged (no attempt, no error), and claims
    take the jobs behind it. Within one routing key and priority, the groups with ready jobs and
    the jobs without a group (together, FIFO) take turns: a participant that was served waits
    behind every other participant with ready jobs before it is served again, so a group with a
    huge backlog gets its share and no more; FIFO within a group. Where a group that has just got
    ready jobs joins the turns is the backend's choice (memory:// serves the participant served
    longest ago first, a newcomer first of all; Redis puts a newcomer at the back).
    :meth:`Queue.wait_for_work` counts only work a claim could take, and wakes when a slot frees.
    """

    async def set_group_limit(self, group: str, limit: GroupLimit) -> None:
        """Store ``limit`` for ``group`` (a checked group name, or ``"*"`` for the default), replacing any."""
        ...

    async def get_group_limit(self, group: str) -> GroupLimit | None:
        """The limit stored for ``group`` itself (not the default it may fall back on), or ``None``."""
        ...

    async def group_limits(self) -> dict[str, GroupLimit]:
        """Every stored limit by group name, ``"*"`` included (unreadable ones left out)."""
        ...

    async def remove_group_limit(self, group: str) -> bool:
        """Forget the limit stored for ``group``; True if there was one."""
        ...


@runtime_checkable
class Checkpoints(Protocol):
    """Optional on a :class:`Queue` (:attr:`Capability.CHECKPOINTS <bananas.capabilities.Capability>`):
    a claimed job's saved progress, kept in the store with the job (see :mod:`bananas.checkpoints`)."""

    async def save_checkpoint(self, job: Job, state: str) -> None:
        """Keep ``state`` (JSON text) as the checkpoint of claimed ``job``, replacing the last one.
        Fenced like :meth:`Queue.complete`: raises :class:`~bananas.errors.LeaseLost` (nothing
        written) once ``job``'s claim no longer holds the job."""
        ...

    async def load_checkpoint(self, job_id: str) -> str | None:
        """The last checkpoint saved for the job, or ``None``."""
        ...


@runtime_checkable
class WorkflowSteps(Protocol):
    """Optional on a :class:`Queue` (:attr:`Capability.WORKFLOWS <bananas.capabilities.Capability>`):
    store workflows and settle their steps together with what follows them.

    The core compiles a workflow into steps and links (:mod:`bananas.workflows.plan`, which
    says what a link does); the backend follows the links of a settled step in the same atomic
    write as the settle (one script, one transaction), so a crash can neither lose what
    follows nor create it twice, and a join completed by racing members fires once. A step
    cancelled (:class:`Cancellation`) follows its dead link like a dead one, in the cancel's
    write. The write that leaves no step running (the workflow's final state) makes the record
    expire :func:`~bananas.workflows.plan.record_ttl` seconds later.
    """

    async def submit_workflow(self, plan: WorkflowPlan) -> None:
        """Store ``plan`` (document, steps, joins) and enqueue its initial jobs, all in one atomic write."""
        ...

    async def complete_step(self, job: Job, result: JobResult) -> Job:
        """:meth:`Queue.complete` of a workflow step, and in the same write: record its outcome
        (``result.result``) and follow its ``on_success`` link. Fenced like :meth:`Queue.complete`
        (:class:`~bananas.errors.LeaseLost`, nothing written)."""
        ...

    async def fail_step(self, job: Job, error: str, *, retry_at: RetryAt = BY_POLICY) -> Job:
        """:meth:`Queue.fail` of a workflow step; when that makes it dead, in the same write:
        record its outcome and follow its ``on_dead`` link (a retry follows nothing)."""
        ...

    async def workflow_record(self, workflow_id: str) -> WorkflowRecord | None:
        """The stored document and every step's record, or ``None`` for an unknown id (or one
        whose record expired: see :func:`bananas.workflows.plan.record_ttl`)."""
        ...

    async def stop_workflow(self, workflow_id: str) -> WorkflowStop | None:
        """In one atomic write, unless no step is running (the workflow is finished, and nothing
        changes): record every step not created yet ``cancelled`` with the outcome
        :func:`~bananas.workflows.plan.cancelled_outcome` of
        :data:`~bananas.workflows.plan.CANCELLED_WAITING` (it is never created afterwards), and
        name the steps created and not yet settled. ``None`` for an unknown id."""
        ...


@runtime_checkable
class ResultBackend(Protocol):
    """Where results of finished jobs are kept for their TTL, and waited on."""

    async def store(self, result: JobResult) -> None:
        """Store ``result`` (success TTL or failure TTL by status) and wake its waiters."""
        ...

    async def get(self, job_id: str) -> JobResult | None:
        """The stored result, or ``None`` if there is none (not finished, or expired)."""
        ...

    async def wait(self, job_id: str, timeout: float) -> JobResult:
        """The result, waiting up to ``timeout`` real seconds; raises :class:`~bananas.errors.Timeout`.

        A result stored at any moment, including between a first look and the start of
        waiting, is not missed.
        """
        ...

    async def delete(self, job_id: str) -> None:
        """Forget the result (no error if there is none)."""
        ...

    async def close(self) -> None:
        """Release connections. Idempotent."""
        ...


@runtime_checkable
class Scheduler(Protocol):
    """Storage for cron schedules: each tick fired once across all schedulers."""

    async def fire(self, schedule_id: str, tick: datetime, job: Job, next_run: datetime) -> bool:
        """Enqueue ``job`` for ``tick`` unless this or a later tick of the schedule already fired.

        Atomic with the enqueue: on ``True`` the job is stored, ``last_run`` is ``tick``,
        ``next_run`` is set and ``run_count`` grew by one; on ``False`` nothing changed.
        """
        ...

    async def record(
        self,
        schedule_id: str,
        *,
        next_run: datetime | None = None,
        last_success: datetime | None = None,
        last_error: str | None = None,
    ) -> None:
        """Update the given fields of the schedule's state (``last_error=""`` clears it)."""
        ...

    async def state(self, schedule_id: str) -> ScheduleState | None:
        """The schedule's state, or ``None`` if it never fired or was recorded."""
        ...

    async def states(self) -> list[ScheduleState]:
        """Every known schedule's state, ordered by id."""
        ...

    async def close(self) -> None:
        """Release connections. Idempotent."""
        ...


@runtime_checkable
class WorkerRegistry(Protocol):
    """Which workers are alive: each announces itself and renews the announcement."""

    async def heartbeat(self, info: WorkerInfo, ttl: float) -> None:
        """Announce (or renew) ``info``; it disappears ``ttl`` clock seconds after the last call."""
        ...

    async def deregister(self, worker_id: str) -> None:
        """Remove a worker's record at once (it stopped). No error if absent."""
        ...

    async def workers(self) -> list[WorkerInfo]:
        """The live workers (last heartbeat within its TTL), ordered by id."""
        ...

    async def close(self) -> None:
        """Release connections. Idempotent."""
        ...

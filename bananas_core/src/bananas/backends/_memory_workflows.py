"""memory://'s :class:`~bananas.protocols.WorkflowSteps`: workflow records kept next to the
store, written under the store's lock together with the settle of each step (and the cancel
of one), and forgotten :func:`~bananas.workflows.plan.record_ttl` seconds after the last step
settled."""

from __future__ import annotations

import heapq
import weakref
from typing import TYPE_CHECKING

import attrs

from bananas import policy
from bananas.backend import BackendOptions
from bananas.backends._memory_store import MemoryStore, check_new
from bananas.errors import DuplicateJob
from bananas.job import Job, JobResult, JobStatus, dumps
from bananas.policy import BY_POLICY, LEASE_EXPIRED_ERROR, RetryAt
from bananas.workflows.follow import settle_step
from bananas.workflows.plan import (
    CANCELLED_WAITING,
    WORKFLOW_FIELD,
    Join,
    Link,
    StepRecord,
    WorkflowPlan,
    WorkflowRecord,
    WorkflowStop,
    cancelled_outcome,
    record_ttl,
    with_field,
)

__all__ = ["MemoryWorkflows"]


@attrs.define
class _Workflow:
    document: str
    jobs: dict[str, str]  # step id -> job JSON, as submitted
    links: dict[str, tuple[Link, Link]]
    states: dict[str, StepRecord]
    joins: dict[str, Join]
    slots: dict[str, dict[int, tuple[str, str, bool]]]  # join id -> slot -> (outcome, value, ok)
    open: int = 0  # steps created and not yet settled
    expires_at: float | None = None  # set when ``open`` reaches 0
    id: str = ""


_WORKFLOWS: weakref.WeakKeyDictionary[MemoryStore, dict[str, _Workflow]] = weakref.WeakKeyDictionary()
_EXPIRIES: weakref.WeakKeyDictionary[MemoryStore, list[tuple[float, str]]] = weakref.WeakKeyDictionary()


def _workflows(store: MemoryStore, now: float | None = None) -> dict[str, _Workflow]:
    """The store's workflows; with ``now``, those expired by then are forgotten first. Holds the lock."""
    flows = _WORKFLOWS.setdefault(store, {})
    due = _EXPIRIES.get(store)
    while now is not None and due and due[0][0] <= now:
        _, workflow_id = heapq.heappop(due)
        wf = flows.get(workflow_id)
        if wf is not None and wf.expires_at is not None and wf.expires_at <= now:
            del flows[workflow_id]
    return flows


class _Steps:
    """:class:`~bananas.workflows.follow.StepStore` of one workflow; the caller holds the lock
    (its coroutines never suspend, so they run inside it)."""

    def __init__(self, store: MemoryStore, wf: _Workflow, now: float) -> None:
        self.store, self.wf, self.now = store, wf, now
        self.created = False

    async def links(self, job_id: str) -> tuple[Link, Link] | None:
        record = self.wf.states.get(job_id)
        return self.wf.links.get(job_id) if record is not None and record.state == "created" else None

    async def set_outcome(self, job_id: str, state: str, outcome: str) -> None:
        self.wf.states[job_id] = StepRecord(state, outcome)

    async def create(self, job_ids: tuple[str, ...], field: str, value: str) -> int:
        created = 0
        for job_id in job_ids:
            if self.wf.states[job_id].state != "waiting" or job_id in self.store.jobs:
                continue
            text = with_field(self.wf.jobs[job_id], field, value)
            self.store.add(Job.from_json(text), text)
            self.wf.states[job_id] = StepRecord("created")
            self.created = True
            created += 1
        return created

    async def join(self, join_id: str) -> Join:
        return self.wf.joins[join_id]

    async def arrive(self, join_id: str, slot: int, outcome: str, value: str, ok: bool) -> tuple[int, int]:
        slots = self.wf.slots.setdefault(join_id, {})
        slots.setdefault(slot, (outcome, value, ok))
        return len(slots), sum(1 for _, _, good in slots.values() if not good)

    async def slots(self, join_id: str) -> list[tuple[str, str]]:
        slots = self.wf.slots[join_id]
        return [(slots[i][0], slots[i][1]) for i in sorted(slots)]

    async def add_open(self, delta: int) -> int | None:
        self.wf.open += delta
        return self.wf.open

    async def expire(self, ttl: float) -> None:
        self.wf.expires_at = self.now + ttl
        heapq.heappush(_EXPIRIES.setdefault(self.store, []), (self.wf.expires_at, self.wf.id))


class MemoryWorkflows:
    """Mixed into :class:`~bananas.backends.memory.MemoryQueue`."""

    _store: MemoryStore
    _options: BackendOptions

    if TYPE_CHECKING:  # provided by MemoryPart and MemoryQueue

        def _now(self) -> float: ...

        def _complete_locked(self, job: Job) -> Job: ...

        def _store_failed(self, job: Job, now: float) -> Job: ...

        def _fence(self, job: Job) -> None: ...

    async def submit_workflow(self, plan: WorkflowPlan) -> None:
        """Store the workflow and enqueue its first steps under one lock."""
        initial = [(check_new(job), job.to_json()) for job in plan.initial]
        s = self._store
        with s.lock:
            s.expire(self._now())
            flows = _workflows(s, self._now())
            if plan.id in flows:
                raise DuplicateJob(f"a workflow with id {plan.id!r} already exists; nothing was submitted")
            for job, _ in initial:
                if job.id in s.jobs:
                    raise DuplicateJob(f"a job with id {job.id!r} already exists; nothing was submitted")
            flows[plan.id] = _Workflow(
                document=plan.document,
                jobs={step.job.id: step.job.to_json() for step in plan.steps},
                links={step.job.id: (step.on_success, step.on_dead) for step in plan.steps},
                states={step.job.id: StepRecord("created" if step.initial else "waiting") for step in plan.steps},
                joins={join.id: join for join in plan.joins},
                slots={},
                open=len(initial),
                id=plan.id,
            )
            for job, text in initial:
                s.add(job, text)
        s.work_signal.wake_all()

    def _steps_of(self, job: Job) -> _Steps | None:
        now = self._now()
        wf = _workflows(self._store, now).get(str(job.extra.get(WORKFLOW_FIELD, "")))
        return None if wf is None else _Steps(self._store, wf, now)

    def _record_ttl(self) -> float:
        return record_ttl(self._options.result_success_ttl, self._options.result_failure_ttl)

    async def _settle_step(self, job: Job, state: str, value: str, error: str = "") -> bool:
        """Record workflow step ``job`` settled and follow its link (nothing for a plain job);
        whether it created a step. The caller holds the lock."""
        steps = self._steps_of(job)
        if steps is None:
            return False
        await settle_step(steps, job.id, state, value, error, ttl=self._record_ttl())
        return steps.created

    async def complete_step(self, job: Job, result: JobResult) -> Job:
        """Complete ``job`` and follow its success link, under one lock."""
        s = self._store
        with s.lock:
            stored = self._complete_locked(job)
            created = await self._settle_step(stored, "completed", dumps(result.result))
        if created:
            s.work_signal.wake_all()
        return stored

    async def fail_step(self, job: Job, error: str, *, retry_at: RetryAt = BY_POLICY) -> Job:
        """A failed attempt; if it is the last, the step's dead link, under one lock."""
        s = self._store
        created = False
        with s.lock:
            now = self._now()
            when = policy.decide_retry(job, retry_at, now)
            self._fence(job)
            s.unlink(job.id)
            found = s.load(job.id)
            stored = self._store_failed(policy.failed_attempt(found, error, now, when), now)
            if stored.status is JobStatus.FAILED:
                created = await self._settle_step(stored, "dead", "null", error)
        if created:
            s.work_signal.wake_all()
        return stored

    async def follow_reaped(self, job: Job) -> None:
        """A step the lease reaper made dead follows its dead link; the caller (the reaper)
        holds the lock, so it is one write with the reap. Plain jobs are left alone."""
        if job.status is JobStatus.FAILED:
            await self._settle_step(job, "dead", "null", LEASE_EXPIRED_ERROR)

    async def workflow_record(self, workflow_id: str) -> WorkflowRecord | None:
        """The stored workflow, or ``None``."""
        with self._store.lock:
            wf = _workflows(self._store, self._now()).get(workflow_id)
            if wf is None:
                return None
            return WorkflowRecord(wf.document, dict(wf.states))

    async def stop_workflow(self, workflow_id: str) -> WorkflowStop | None:
        """Record the steps not created yet cancelled and name the running ones, under one lock."""
        with self._store.lock:
            wf = _workflows(self._store, self._now()).get(workflow_id)
            if wf is None:
                return None
            running = tuple(k for k, v in wf.states.items() if v.state == "created")
            if not running:
                return WorkflowStop()
            waiting = tuple(k for k, v in wf.states.items() if v.state == "waiting")
            outcome = cancelled_outcome(CANCELLED_WAITING)
            for job_id in waiting:
                wf.states[job_id] = StepRecord("cancelled", outcome)
            return WorkflowStop(waiting, running)

"""memory://'s :class:`~bananas.protocols.WorkflowSteps`: workflow records kept next to the
store, written under the store's lock together with the settle of each step."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import attrs

from bananas import policy
from bananas.backends._memory_store import MemoryStore, check_new
from bananas.errors import DuplicateJob
from bananas.job import Job, JobResult, JobStatus, dumps
from bananas.policy import BY_POLICY, LEASE_EXPIRED_ERROR, RetryAt
from bananas.workflows.follow import settle_step
from bananas.workflows.plan import WORKFLOW_FIELD, Join, Link, StepRecord, WorkflowPlan, WorkflowRecord, with_field

__all__ = ["MemoryWorkflows"]


@attrs.define
class _Workflow:
    document: str
    jobs: dict[str, str]  # step id -> job JSON, as submitted
    links: dict[str, tuple[Link, Link]]
    states: dict[str, StepRecord]
    joins: dict[str, Join]
    slots: dict[str, dict[int, tuple[str, str, bool]]]  # join id -> slot -> (outcome, value, ok)


_WORKFLOWS: weakref.WeakKeyDictionary[MemoryStore, dict[str, _Workflow]] = weakref.WeakKeyDictionary()


def _workflows(store: MemoryStore) -> dict[str, _Workflow]:
    return _WORKFLOWS.setdefault(store, {})


class _Steps:
    """:class:`~bananas.workflows.follow.StepStore` of one workflow; the caller holds the lock
    (its coroutines never suspend, so they run inside it)."""

    def __init__(self, store: MemoryStore, wf: _Workflow) -> None:
        self.store, self.wf = store, wf
        self.created = False

    async def links(self, job_id: str) -> tuple[Link, Link] | None:
        return self.wf.links.get(job_id)

    async def set_outcome(self, job_id: str, state: str, outcome: str) -> None:
        self.wf.states[job_id] = StepRecord(state, outcome)

    async def create(self, job_ids: tuple[str, ...], field: str, value: str) -> None:
        for job_id in job_ids:
            if self.wf.states[job_id].state != "waiting" or job_id in self.store.jobs:
                continue
            text = with_field(self.wf.jobs[job_id], field, value)
            self.store.add(Job.from_json(text), text)
            self.wf.states[job_id] = StepRecord("created")
            self.created = True

    async def join(self, join_id: str) -> Join:
        return self.wf.joins[join_id]

    async def arrive(self, join_id: str, slot: int, outcome: str, value: str, ok: bool) -> tuple[int, int]:
        slots = self.wf.slots.setdefault(join_id, {})
        slots.setdefault(slot, (outcome, value, ok))
        return len(slots), sum(1 for _, _, good in slots.values() if not good)

    async def slots(self, join_id: str) -> list[tuple[str, str]]:
        slots = self.wf.slots[join_id]
        return [(slots[i][0], slots[i][1]) for i in sorted(slots)]


class MemoryWorkflows:
    """Mixed into :class:`~bananas.backends.memory.MemoryQueue`."""

    _store: MemoryStore

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
            flows = _workflows(s)
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
            )
            for job, text in initial:
                s.add(job, text)
        s.work_signal.wake_all()

    def _steps_of(self, job: Job) -> _Steps | None:
        wf = _workflows(self._store).get(str(job.extra.get(WORKFLOW_FIELD, "")))
        return None if wf is None else _Steps(self._store, wf)

    async def complete_step(self, job: Job, result: JobResult) -> Job:
        """Complete ``job`` and follow its success link, under one lock."""
        s = self._store
        with s.lock:
            stored = self._complete_locked(job)
            steps = self._steps_of(stored)
            if steps is not None:
                await settle_step(steps, job.id, True, dumps(result.result))
        if steps is not None and steps.created:
            s.work_signal.wake_all()
        return stored

    async def fail_step(self, job: Job, error: str, *, retry_at: RetryAt = BY_POLICY) -> Job:
        """A failed attempt; if it is the last, the step's dead link, under one lock."""
        s = self._store
        steps = None
        with s.lock:
            now = self._now()
            when = policy.decide_retry(job, retry_at, now)
            self._fence(job)
            s.unlink(job.id)
            found = s.load(job.id)
            stored = self._store_failed(policy.failed_attempt(found, error, now, when), now)
            if stored.status is JobStatus.FAILED:
                steps = self._steps_of(stored)
                if steps is not None:
                    await settle_step(steps, job.id, False, "null", error)
        if steps is not None and steps.created:
            s.work_signal.wake_all()
        return stored

    async def follow_reaped(self, job: Job) -> None:
        """A step the lease reaper made dead follows its dead link; the caller (the reaper)
        holds the lock, so it is one write with the reap. Plain jobs are left alone."""
        if job.status is not JobStatus.FAILED:
            return
        steps = self._steps_of(job)
        if steps is not None:
            await settle_step(steps, job.id, False, "null", LEASE_EXPIRED_ERROR)

    async def workflow_record(self, workflow_id: str) -> WorkflowRecord | None:
        """The stored workflow, or ``None``."""
        with self._store.lock:
            wf = _workflows(self._store).get(workflow_id)
            if wf is None:
                return None
            return WorkflowRecord(wf.document, dict(wf.states))

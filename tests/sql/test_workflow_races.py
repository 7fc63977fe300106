"""cancel_workflow racing the settle that creates a workflow's next steps, on PostgreSQL's
concurrent transactions (and SQLite's single writer): no deadlock, and each waiting step ends
either created (then cancelled as a job) or cancelled before it was, never both."""

from __future__ import annotations

import asyncio

import pytest
from bananas.backend import Backend
from bananas.cancel import CancelOutcome
from bananas.clock import ManualClock
from bananas.job import Job, JobResult, JobStatus
from bananas.workflows import chain, group, task
from bananas.workflows.canvas import Node, Task
from bananas.workflows.submit import cancel_workflow, get_workflow, submit_workflow

pytestmark = pytest.mark.anyio

WIDTH = 20


async def _submit(backend: Backend, clock: ManualClock, root: Node) -> str:
    def make(node: Task, job_id: str) -> Job:
        return Job.create(node.name, node.payload, job_id=job_id, now=clock.now())

    return await submit_workflow(backend, root, make)


async def test_cancel_workflow_racing_the_settle_that_creates_steps(backend: Backend, clock: ManualClock) -> None:
    root = chain(task("first"), group(*(task("member", n) for n in range(WIDTH))))
    wids = [await _submit(backend, clock, root) for _ in range(10)]
    firsts = await backend.queue.claim(["default"], limit=10)
    assert len(firsts) == 10

    async def settle(job: Job) -> None:
        result = JobResult(job_id=job.id, status=JobStatus.COMPLETED, result=1, completed_at=job.updated_at)
        await backend.queue.complete_step(job, result)  # type: ignore[attr-defined]

    answers = await asyncio.gather(*(settle(job) for job in firsts), *(cancel_workflow(backend, wid) for wid in wids))
    assert await backend.queue.claim(["default"], limit=1000) == [], "a member of a cancelled workflow is ready"
    for wid, answer in zip(wids, answers[10:], strict=True):
        assert isinstance(answer, dict)
        info = await get_workflow(backend, wid)
        members = [s for s in info.step_list() if s.name == "member"]
        assert [s.state for s in members] == ["cancelled"] * WIDTH
        created = {m.job_id for m in members if answer.get(m.job_id) is not CancelOutcome.CANCELLED}
        assert created == set(), "a member was neither cancelled waiting nor as a job"
        assert info.state == "cancelled"

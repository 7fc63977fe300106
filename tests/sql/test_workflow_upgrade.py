"""The schema step that lets finished workflows expire, on a database written before it: the
workflows already stored get their count of running steps, so one still running expires once it
finishes, and one already finished is kept as before."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.job import Job, JobResult, JobStatus
from bananas.plugins import connect
from bananas.workflows import chain, task
from bananas.workflows.canvas import Node, Task
from bananas.workflows.submit import WorkflowNotFound, get_workflow, submit_workflow
from bananas_sql.urls import postgres_sqlalchemy_url, sqlite_sqlalchemy_url
from sqlalchemy.ext.asyncio import create_async_engine

import bananas_sql

pytestmark = pytest.mark.anyio


async def _submit(backend: Backend, clock: ManualClock, root: Node) -> str:
    def make(node: Task, job_id: str) -> Job:
        return Job.create(node.name, node.payload, job_id=job_id, now=clock.now())

    return await submit_workflow(backend, root, make)


async def _run_one(backend: Backend) -> None:
    [job] = await backend.queue.claim(["default"])
    result = JobResult(job_id=job.id, status=JobStatus.COMPLETED, result=1, completed_at=job.updated_at)
    await backend.queue.complete_step(job, result)  # type: ignore[attr-defined]


async def test_upgrading_counts_the_running_steps_of_stored_workflows(db_url: str, namespace: str) -> None:
    clock = ManualClock()
    await bananas_sql.upgrade(db_url, namespace=namespace)
    async with connect(db_url, namespace=namespace, clock=clock, result_success_ttl=5, result_failure_ttl=5) as b:
        finished = await _submit(b, clock, chain(task("a")))
        await _run_one(b)
        running = await _submit(b, clock, chain(task("b"), task("c")))
    sa_url = sqlite_sqlalchemy_url(db_url) if db_url.startswith("sqlite") else postgres_sqlalchemy_url(db_url)
    engine = create_async_engine(sa_url)
    try:
        async with engine.begin() as conn:  # the workflows table as schema version 8 had it
            await conn.execute(sa.text(f"DROP INDEX IF EXISTS ix_{namespace}_workflows_expires_at"))
            for column in ("open_steps", "expires_at"):
                await conn.execute(sa.text(f"ALTER TABLE {namespace}_workflows DROP COLUMN {column}"))
            await conn.execute(sa.text(f"UPDATE {namespace}_schema_version SET version = 8"))
    finally:
        await engine.dispose()
    done = await bananas_sql.upgrade(db_url, namespace=namespace)
    assert "8 -> 9: workflows.open_steps and workflows.expires_at" in done
    async with connect(db_url, namespace=namespace, clock=clock, result_success_ttl=5, result_failure_ttl=5) as b:
        await _run_one(b)
        await _run_one(b)  # its last step: nothing runs any more
        assert (await get_workflow(b, running)).state == "completed"
        clock.advance(6)
        await b.queue.reap_expired()
        with pytest.raises(WorkflowNotFound):
            await get_workflow(b, running)
        assert (await get_workflow(b, finished)).state == "completed", "a workflow finished before the upgrade"

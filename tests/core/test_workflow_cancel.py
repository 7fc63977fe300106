"""Cancelling workflow steps and whole workflows on memory:// with a real worker pool: a step
stopped while it runs follows its dead link in the worker's settle, a chord that allows failures
gets the member's outcome marked cancelled, ``cancel_workflow`` (async and sync clients) ends
the workflow ``cancelled``, and a backend without the capability says so."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from bananas import (
    AsyncClient,
    Backend,
    Capability,
    CapabilityNotSupported,
    Client,
    Job,
    JobContext,
    JobStatus,
    Registry,
    chain,
    chord,
    connect,
    group,
    task,
)
from bananas.backend import BackendOptions
from bananas.backends.memory import CAPABILITIES, memory_backend, store_for
from bananas.cancel import CANCELLED_WHILE_RUNNING, CancelOutcome
from bananas.config import WorkerConfig
from bananas.worker import Executor, Pool
from bananas.workflows.plan import CANCELLED_WAITING
from bananas.workflows.submit import WorkflowNotFound

pytestmark = pytest.mark.anyio

LEASE = 0.6
"""A short lease: the worker renews (and learns of cancellations) every 0.2 s."""


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = connect(f"memory://wfc-{uuid.uuid4().hex}")
    yield b
    await b.close()


class Worker:
    """An in-process pool whose ``forever`` handler runs until it is cancelled."""

    def __init__(self, backend: Backend) -> None:
        self.started = asyncio.Event()
        self.runs: list[str] = []
        reg = Registry()

        @reg.handler("forever")
        async def forever(ctx: JobContext, job: Job) -> Any:
            self.runs.append(job.id)
            self.started.set()
            await asyncio.Event().wait()

        @reg.handler("add")
        async def add(ctx: JobContext, job: Job) -> Any:
            self.runs.append(job.id)
            return int(job.payload)

        @reg.handler("outcomes")
        async def outcomes(ctx: JobContext, job: Job) -> Any:
            assert ctx.group_outcomes is not None
            return [[o.ok, o.cancelled, o.result, o.error] for o in ctx.group_outcomes]

        config = WorkerConfig(concurrency=4, scheduler_interval=0.1, lease=LEASE)
        executor = Executor(reg, backend.queue, 4, clock=backend.clock, lease=LEASE)
        executor.set_result_backend(backend.results)
        self.pool = Pool(executor, backend, config, poll_interval=0.05)

    async def __aenter__(self) -> Worker:
        await self.pool.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.stop()


async def test_a_running_step_cancelled_gives_the_chord_a_cancelled_outcome(backend: Backend) -> None:
    root = chord(group(task("forever"), task("add", 1)), task("outcomes"), allow_failures=True)
    async with Worker(backend) as worker, AsyncClient(backend=backend) as client:
        wid = await client.submit(root)
        await asyncio.wait_for(worker.started.wait(), 5)
        forever = (await client.get_workflow(wid)).step_list()[0]
        assert await client.cancel(forever.job_id) is CancelOutcome.REQUESTED
        info = await client.wait_for_workflow(wid, timeout=10 * LEASE)
    assert info.state == "completed"
    assert info.result == [[False, True, None, CANCELLED_WHILE_RUNNING], [True, False, 1, ""]]
    assert info.steps[forever.job_id].state == "cancelled"
    assert worker.runs.count(forever.job_id) == 1, "a cancelled step ran again"


async def test_cancel_workflow_stops_the_running_step_and_cancels_the_rest(backend: Backend) -> None:
    async with Worker(backend) as worker, AsyncClient(backend=backend) as client:
        wid = await client.submit(chain(task("forever"), group(task("add", 1), task("add", 2)), task("add", 3)))
        await asyncio.wait_for(worker.started.wait(), 5)
        first, *rest = [s.job_id for s in (await client.get_workflow(wid)).step_list()]
        answer = await client.cancel_workflow(wid)
        assert answer == {first: CancelOutcome.REQUESTED, **dict.fromkeys(rest, CancelOutcome.CANCELLED)}
        info = await client.wait_for_workflow(wid, timeout=10 * LEASE)
        assert info.state == "cancelled"
        assert [s.state for s in info.step_list()] == ["cancelled"] * 4
        assert {info.steps[i].error for i in rest} == {CANCELLED_WAITING}
        result = await client.get_result(first)
        assert result is not None and result.status is JobStatus.CANCELLED
        assert await client.cancel_workflow(wid) == {}
    assert worker.runs == [first], "a step of the cancelled workflow ran"


def test_the_sync_client_cancels_a_workflow() -> None:
    with Client(f"memory://wfc-{uuid.uuid4().hex}") as client:
        wid = client.submit(chain(task("add", 1), task("add", 2)))
        first, second = [s.job_id for s in client.get_workflow(wid).step_list()]
        assert client.cancel_workflow(wid) == {first: CancelOutcome.CANCELLED, second: CancelOutcome.CANCELLED}
        info = client.get_workflow(wid)
        assert info.state == "cancelled" and info.done
        assert client.get_job(first).status is JobStatus.CANCELLED
        with pytest.raises(WorkflowNotFound):
            client.cancel_workflow("no-such-workflow")


async def test_without_the_cancel_capability_cancel_workflow_names_it() -> None:
    caps = CAPABILITIES - {Capability.CANCEL}
    b = memory_backend(store_for(f"wfc-{uuid.uuid4().hex}", ""), BackendOptions(), capabilities=caps)
    async with AsyncClient(backend=b) as client:
        wid = await client.submit(chain(task("add", 1)))
        with pytest.raises(CapabilityNotSupported, match="cancel"):
            await client.cancel_workflow(wid)
        assert (await client.get_workflow(wid)).state == "running", "a refused cancel changed the workflow"

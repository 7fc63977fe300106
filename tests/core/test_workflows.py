"""Workflows end to end on memory:// with a real worker pool: what handlers receive
(``ctx.previous_result``, ``ctx.group_results``), the failure policy, the sync client, and the
error of a backend without the capability."""

from __future__ import annotations

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
    InvalidJob,
    Job,
    JobContext,
    Registry,
    Timeout,
    chain,
    chord,
    connect,
    group,
    task,
)
from bananas.backend import BackendOptions
from bananas.backends.memory import CAPABILITIES, memory_backend, store_for
from bananas.config import WorkerConfig
from bananas.worker import Executor, Pool
from bananas.workflows.submit import WorkflowNotFound


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = connect(f"memory://wf-{uuid.uuid4().hex}")
    yield b
    await b.close()


def registry() -> Registry:
    reg = Registry()

    @reg.handler("add")
    async def add(ctx: JobContext, job: Job) -> Any:
        return (ctx.previous_result or 0) + int(job.payload)

    @reg.handler("total")
    def total(ctx: JobContext, job: Job) -> Any:  # a sync handler: the same context
        assert ctx.group_results is not None
        return sum(ctx.group_results)

    @reg.handler("seen")
    async def seen(ctx: JobContext, job: Job) -> Any:
        return {"previous": ctx.previous_result, "group": ctx.group_results, "payload": job.payload}

    @reg.handler("outcomes")
    async def outcomes(ctx: JobContext, job: Job) -> Any:
        assert ctx.group_outcomes is not None
        return [[o.ok, o.result, o.error] for o in ctx.group_outcomes]

    @reg.handler("boom")
    async def boom(ctx: JobContext, job: Job) -> Any:
        raise RuntimeError("boom")

    @reg.handler("readme_add")
    async def readme_add(ctx: JobContext, job: Job) -> Any:
        return job.payload["a"] + job.payload["b"]

    @reg.handler("readme_total")
    async def readme_total(ctx: JobContext, job: Job) -> Any:
        return sum(ctx.group_results or [])

    return reg


class running:
    def __init__(self, backend: Backend) -> None:
        config = WorkerConfig(concurrency=4, scheduler_interval=0.1)
        executor = Executor(registry(), backend.queue, 4, clock=backend.clock)
        executor.set_result_backend(backend.results)
        self.pool = Pool(executor, backend, config, poll_interval=0.05)

    async def __aenter__(self) -> Pool:
        await self.pool.start()
        return self.pool

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.stop()


@pytest.mark.anyio
async def test_chain_passes_each_result_to_the_next_step(backend: Backend) -> None:
    async with running(backend), AsyncClient(backend=backend) as client:
        wid = await client.submit(chain(task("add", 1), task("add", 10), task("add", 100)))
        info = await client.wait_for_workflow(wid, timeout=10)
    assert info.state == "completed" and info.result == 111
    assert [s.result for s in info.step_list()] == [1, 11, 111]


@pytest.mark.anyio
async def test_chord_callback_gets_the_results_in_member_order(backend: Backend) -> None:
    async with running(backend), AsyncClient(backend=backend) as client:
        wid = await client.submit(chord([task("add", n) for n in range(10)], task("total")))
        info = await client.wait_for_workflow(wid, timeout=10)
    assert info.result == sum(range(10))


@pytest.mark.anyio
async def test_results_never_mix_into_the_payload(backend: Backend) -> None:
    async with running(backend), AsyncClient(backend=backend) as client:
        wid = await client.submit(chain(task("add", 2), task("seen", {"mine": 1})))
        info = await client.wait_for_workflow(wid, timeout=10)
    assert info.result == {"previous": 2, "group": None, "payload": {"mine": 1}}


@pytest.mark.anyio
async def test_a_dead_step_stops_the_chain_and_says_why(backend: Backend) -> None:
    async with running(backend), AsyncClient(backend=backend) as client:
        wid = await client.submit(chain(task("add", 1), task("boom", max_retries=1), task("add", 5)))
        info = await client.wait_for_workflow(wid, timeout=10)
    assert info.state == "failed"
    first, dead, skipped = info.step_list()
    assert (first.state, dead.state, skipped.state) == ("completed", "dead", "skipped")
    assert "boom" in dead.error and "ended dead" in skipped.note


@pytest.mark.anyio
async def test_allow_failures_callback_sees_each_outcome(backend: Backend) -> None:
    root = chord(group(task("add", 1), task("boom", max_retries=1)), task("outcomes"), allow_failures=True)
    async with running(backend), AsyncClient(backend=backend) as client:
        info = await client.wait_for_workflow(await client.submit(root), timeout=10)
    assert info.state == "completed"
    assert info.result == [[True, 1, ""], [False, None, "RuntimeError: boom"]]


@pytest.mark.anyio
async def test_nested_group_of_chains_then_a_step(backend: Backend) -> None:
    root = chain(group(chain(task("add", 1), task("add", 2)), chain(task("add", 10), task("add", 20))), task("total"))
    async with running(backend), AsyncClient(backend=backend) as client:
        info = await client.wait_for_workflow(await client.submit(root), timeout=10)
    assert info.result == 33


def test_sync_client_submits_and_waits() -> None:
    with Client(f"memory://wf-{uuid.uuid4().hex}") as client:
        wid = client.submit(chain(task("add", 1), task("add", 2)))
        info = client.get_workflow(wid)
        assert info.state == "running" and [s.state for s in info.step_list()] == ["pending", "waiting"]
        with pytest.raises(Timeout):
            client.wait_for_workflow(wid, timeout=0.05)


@pytest.mark.anyio
async def test_a_backend_without_the_capability_names_it() -> None:
    caps = CAPABILITIES - {Capability.WORKFLOWS}
    b = memory_backend(store_for(f"wf-{uuid.uuid4().hex}", ""), BackendOptions(), capabilities=caps)
    async with AsyncClient(backend=b) as client:
        with pytest.raises(CapabilityNotSupported, match="'workflows' capability"):
            await client.submit(chain(task("add", 1), task("add", 2)))
        assert await b.queue.depths() == type(await b.queue.depths())(), "something was written"


@pytest.mark.anyio
async def test_bad_workflows_are_refused_before_writing(backend: Backend) -> None:
    async with AsyncClient(backend=backend, registry=registry()) as client:
        with pytest.raises(InvalidJob, match="options are"):
            task("add", 1, delay=5)
        with pytest.raises(InvalidJob, match="at least one step"):
            chain()
        with pytest.raises(InvalidJob, match="step 1 is a str"):
            chain(task("add"), "add")  # type: ignore[arg-type]
        with pytest.raises(InvalidJob, match="takes a workflow"):
            await client.submit("add")  # type: ignore[arg-type]
        with pytest.raises(Exception, match="no handler"):
            await client.submit(chain(task("add", 1), task("nope")))
        assert (await backend.queue.depths()).total_ready == 0
        with pytest.raises(WorkflowNotFound):
            await client.get_workflow("nope")


@pytest.mark.anyio
async def test_the_readme_example(backend: Backend) -> None:
    """README's Workflows section: completed, 6."""
    async with running(backend), AsyncClient(backend=backend) as client:
        workflow_id = await client.submit(
            chain(
                task("readme_add", {"a": 1, "b": 2}),
                chord([task("readme_add", {"a": n, "b": n}) for n in range(3)], task("readme_total")),
            )
        )
        info = await client.wait_for_workflow(workflow_id, timeout=10)
    assert (info.state, info.result) == ("completed", 6)


@pytest.mark.anyio
async def test_waiting_for_a_wide_chord(backend: Backend) -> None:
    """More members running than the wait builds full reports for: it still sees the end."""
    async with AsyncClient(backend=backend) as client:
        wid = await client.submit(chord([task("add", n) for n in range(60)], task("total")))
        with pytest.raises(Timeout, match="did not finish"):
            await client.wait_for_workflow(wid, timeout=0.05)
        async with running(backend):
            info = await client.wait_for_workflow(wid, timeout=10)
    assert (info.state, info.result) == ("completed", sum(range(60)))

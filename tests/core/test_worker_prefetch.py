"""Prefetch: a pool holds claimed jobs waiting for a slot, runs no more than its concurrency,
claims in batches, and hands never-started jobs back at once when it stops."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from bananas import AsyncClient, Backend, Job, JobStatus, Registry, connect
from bananas.config import WorkerConfig
from bananas.worker import Executor, JobContext, Pool

pytestmark = pytest.mark.anyio


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = connect(f"memory://prefetch-{uuid.uuid4().hex}")
    yield b
    await b.close()


def make_pool(registry: Registry, backend: Backend, concurrency: int, prefetch: int, **kw: Any) -> Pool:
    config = WorkerConfig(concurrency=concurrency, scheduler_interval=0.1)
    executor = Executor(registry, backend.queue, concurrency, clock=backend.clock)
    executor.set_result_backend(backend.results)
    return Pool(executor, backend, config, prefetch=prefetch, poll_interval=0.1, **kw)


async def eventually(check: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


def counting_claims(backend: Backend) -> list[int]:
    """Record the number of jobs every non-empty claim returned."""
    sizes: list[int] = []
    real = backend.queue.claim

    async def claim(*args: Any, **kwargs: Any) -> list[Job]:
        jobs = await real(*args, **kwargs)
        if jobs:
            sizes.append(len(jobs))
        return jobs

    backend.queue.claim = claim  # type: ignore[method-assign]
    return sizes


async def test_prefetched_jobs_wait_for_a_slot_and_all_run(backend: Backend) -> None:
    registry = Registry()
    running = peak = 0

    @registry.handler("work")
    async def work(ctx: JobContext, job: Job) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.005)
        running -= 1
        return int(job.payload)

    sizes = counting_claims(backend)
    async with AsyncClient(backend=backend) as client:
        ids = await client.submit_many([{"name": "work", "payload": n} for n in range(60)])
        pool = make_pool(registry, backend, concurrency=3, prefetch=6)
        await pool.start()
        try:
            results = [await client.wait_for_result(i, timeout=10) for i in ids]
        finally:
            await pool.stop()
    assert [r.result for r in results] == list(range(60))
    assert peak == 3  # never more than the concurrency at once
    assert sizes[0] == 9  # the first claim fills slots and buffer
    assert min(sizes[:-1]) >= 3  # later claims come in batches (at least half the buffer)
    assert sum(sizes) == 60


async def test_stop_hands_never_started_jobs_back_at_once(backend: Backend) -> None:
    registry = Registry()
    release = asyncio.Event()
    started: list[str] = []

    @registry.handler("slow")
    async def slow(ctx: JobContext, job: Job) -> None:
        started.append(job.id)
        await release.wait()

    async with AsyncClient(backend=backend) as client:
        ids = await client.submit_many([{"name": "slow"} for _ in range(5)])
        pool = make_pool(registry, backend, concurrency=2, prefetch=3, grace_period=30)
        await pool.start()
        await eventually(lambda: len(started) == 2 and pool.in_flight == 5)
        stopping = asyncio.create_task(pool.stop())
        waiting = [i for i in ids if i not in started]

        async def handed_back() -> bool:
            jobs = [await client.get_job(i) for i in waiting]
            return all(j.status is JobStatus.PENDING and j.attempts == 0 for j in jobs)

        for _ in range(200):  # well before the 30 s grace period ends
            if await handed_back():
                break
            await asyncio.sleep(0.01)
        assert await handed_back()
        assert not stopping.done()  # the two running jobs are still waited for
        release.set()
        await asyncio.wait_for(stopping, 5)
        assert [(await client.get_job(i)).status for i in started] == [JobStatus.COMPLETED] * 2
    assert (await backend.queue.depths()).total_ready == 3


async def test_prefetch_must_not_be_negative(backend: Backend) -> None:
    with pytest.raises(ValueError, match="prefetch must be >= 0"):
        make_pool(Registry(), backend, concurrency=1, prefetch=-1)


async def test_a_job_whose_outcome_is_being_written_holds_no_slot(backend: Backend) -> None:
    # concurrency 1, no prefetch: the second job starts while the first one's outcome is
    # still being written (a slow store), instead of waiting for that write.
    registry = Registry()
    started: list[int] = []

    @registry.handler("work")
    async def work(ctx: JobContext, job: Job) -> None:
        started.append(int(job.payload))

    release = asyncio.Event()
    real = backend.queue.complete

    async def slow_complete(job: Job) -> Job:
        if job.payload == 0:
            await release.wait()
        return await real(job)

    backend.queue.complete = slow_complete  # type: ignore[method-assign]
    async with AsyncClient(backend=backend) as client:
        await client.submit_many([{"name": "work", "payload": n} for n in range(2)])
        config = WorkerConfig(concurrency=1, scheduler_interval=0.1)
        pool = Pool(Executor(registry, backend.queue, 1, clock=backend.clock), backend, config, poll_interval=0.1)
        await pool.start()
        try:
            await eventually(lambda: started == [0, 1])
            assert pool.in_flight == 1  # the first job, its completion still being written
        finally:
            release.set()
            await pool.stop()
    depths = await backend.queue.depths()
    assert depths.processing == 0 and sum(depths.ready.values()) == 0


async def test_a_claim_loop_that_dies_stops_the_worker_with_the_reason(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry()

    async def work(ctx: JobContext, job: Job) -> None:
        return None

    registry.register("t", work)
    pool = make_pool(registry, backend, concurrency=2, prefetch=0)

    def broken(job: Job) -> None:
        raise RuntimeError("bug in the worker")

    pool._launch = broken  # type: ignore[method-assign]
    await pool.start()
    async with AsyncClient(backend=backend) as client:
        await client.submit_job("t", {})
    await asyncio.wait_for(pool._stopped.wait(), 5)
    assert not pool.running
    assert any("claim loop stopped" in r.getMessage() and r.exc_info for r in caplog.records)

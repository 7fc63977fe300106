"""Cancellation on memory:// through the client and a real in-process worker pool: a job not
started never runs, a running async handler is cancelled, a sync one sees ctx.cancelled, no
attempt is retried, waiters wake, and a backend without the capability says so."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator

import pytest
from bananas import (
    AsyncClient,
    Backend,
    Capability,
    CapabilityNotSupported,
    Client,
    Job,
    JobNotFound,
    JobStatus,
    Registry,
    connect,
)
from bananas.backend import BackendOptions
from bananas.backends.memory import CAPABILITIES, memory_backend, store_for
from bananas.cancel import CancelOutcome
from bananas.config import WorkerConfig
from bananas.worker import Executor, JobContext, Pool
from waiting import eventually

pytestmark = pytest.mark.anyio

LEASE = 0.6
"""A short lease: the worker renews (and learns of cancellations) every 0.2 s."""


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = connect(f"memory://cancel-{uuid.uuid4().hex}")
    yield b
    await b.close()


def make_pool(registry: Registry, backend: Backend) -> Pool:
    config = WorkerConfig(concurrency=2, scheduler_interval=0.1, lease=LEASE)
    executor = Executor(registry, backend.queue, 2, clock=backend.clock, lease=LEASE)
    executor.set_result_backend(backend.results)
    return Pool(executor, backend, config, poll_interval=0.05)


async def test_a_pending_job_is_cancelled_its_result_says_so_and_waiters_wake(backend: Backend) -> None:
    async with AsyncClient(backend=backend) as client:
        job_id = await client.submit_job("never", {})
        waiter = asyncio.ensure_future(client.wait_for_result(job_id, timeout=5))
        await asyncio.sleep(0)
        assert await client.cancel(job_id) is CancelOutcome.CANCELLED
        result = await waiter
        assert result.is_cancelled() and not result.is_failed(), result
        assert (await client.get_job(job_id)).status is JobStatus.CANCELLED
        assert await client.cancel(job_id) is CancelOutcome.ALREADY_FINISHED
        with pytest.raises(JobNotFound):
            await client.cancel("no-such-job")


async def test_a_running_async_handler_is_cancelled_and_not_retried(backend: Backend) -> None:
    registry = Registry()
    started, was_cancelled = asyncio.Event(), asyncio.Event()
    runs = 0

    @registry.handler("forever")
    async def forever(ctx: JobContext, job: Job) -> None:
        nonlocal runs
        runs += 1
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            was_cancelled.set()
            raise

    pool = make_pool(registry, backend)
    await pool.start()
    try:
        async with AsyncClient(backend=backend) as client:
            job_id = await client.submit_job("forever", {}, max_retries=5)
            await asyncio.wait_for(started.wait(), 5)
            assert await client.cancel(job_id) is CancelOutcome.REQUESTED
            result = await client.wait_for_result(job_id, timeout=10 * LEASE)
            assert result.is_cancelled(), result
            assert was_cancelled.is_set(), "the async handler was not cancelled"
            job = await client.get_job(job_id)
            assert job.status is JobStatus.CANCELLED and job.attempts == 0
            assert await client.cancel(job_id) is CancelOutcome.ALREADY_FINISHED
    finally:
        await pool.stop()
    assert runs == 1, "a cancelled job ran again"


async def test_a_sync_handler_sees_ctx_cancelled_and_returns(backend: Backend) -> None:
    registry = Registry()
    started, saw = threading.Event(), threading.Event()

    @registry.handler("poll")
    def poll(ctx: JobContext, job: Job) -> str:
        started.set()
        while not ctx.wait_cancelled_sync(0.02):
            pass
        saw.set()
        return "stopped"

    pool = make_pool(registry, backend)
    await pool.start()
    try:
        async with AsyncClient(backend=backend) as client:
            job_id = await client.submit_job("poll", {})
            await eventually(started.is_set, what="the handler started")
            assert await client.cancel(job_id) is CancelOutcome.REQUESTED
            result = await client.wait_for_result(job_id, timeout=10 * LEASE)
            assert result.is_cancelled() and result.result is None, result
            assert saw.is_set()
            assert (await client.get_job(job_id)).status is JobStatus.CANCELLED
    finally:
        await pool.stop()


def test_without_the_capability_cancel_names_it() -> None:
    caps = CAPABILITIES - {Capability.CANCEL}
    backend = memory_backend(store_for(f"cancel-{uuid.uuid4().hex}", ""), BackendOptions(), capabilities=caps)
    with Client(backend=backend) as client:
        job_id = client.submit_job("x", {})
        with pytest.raises(CapabilityNotSupported, match="'cancel' capability"):
            client.cancel(job_id)
        assert client.get_job(job_id).status is JobStatus.PENDING


def test_the_sync_client_cancels_a_scheduled_job() -> None:
    with Client(f"memory://cancel-{uuid.uuid4().hex}") as client:
        job_id = client.submit_job_scheduled("later", {}, "normal", 3600)
        assert client.cancel(job_id) is CancelOutcome.CANCELLED
        assert client.get_result(job_id) is not None


async def test_memory_forgets_a_cancel_request_once_the_job_is_final(backend: Backend) -> None:
    """A request lives while the job may still run (a retry keeps it, so the next worker cancels
    it); a completion, a death or the reaper's last take-back drops it, so none is left behind."""
    from bananas.backends._memory_cancel import _REQUESTED

    queue = backend.queue
    jobs = [Job.create("t", {"n": n}, max_retries=m) for n, m in enumerate((3, 3, 3, 1))]
    await queue.enqueue_many(jobs)
    done, dead, retried, reaped = await queue.claim(["default"], limit=4, lease=LEASE)
    for job in jobs:
        assert await queue.cancel(job.id) is CancelOutcome.REQUESTED  # type: ignore[attr-defined]
    await queue.complete(done)
    await queue.fail(dead, "boom", retry_at=None)
    await queue.fail(retried, "flaky")
    store = queue._store  # type: ignore[attr-defined]
    assert _REQUESTED[store] == {retried.id, reaped.id}
    await asyncio.sleep(LEASE + 0.1)
    assert await queue.reap_expired() == 1
    assert _REQUESTED[store] == {retried.id}, "a request outlived its job's final settle"

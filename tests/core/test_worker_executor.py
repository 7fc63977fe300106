"""The executor on ``memory://``: every way a handler can end, for async and sync handlers."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from bananas import Backend, BackendUnavailable, Job, JobStatus, Registry, connect
from bananas.worker import Executor, JobContext

pytestmark = pytest.mark.anyio


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = connect(f"memory://executor-{uuid.uuid4().hex}")
    yield b
    await b.close()


async def claimed(backend: Backend, name: str, payload: Any = None, *, max_retries: int = 3) -> Job:
    await backend.queue.enqueue(Job.create(name, payload, max_retries=max_retries))
    [job] = await backend.queue.claim(["default"])
    return job


def executor_for(registry: Registry, backend: Backend, **kwargs: Any) -> Executor:
    executor = Executor(registry, backend.queue, 4, clock=backend.clock, **kwargs)
    executor.set_result_backend(backend.results)
    return executor


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_success_completes_the_job_and_stores_the_result(backend: Backend, kind: str) -> None:
    registry = Registry()
    if kind == "async":

        @registry.handler("add")
        async def add_async(ctx: JobContext, job: Job) -> dict[str, int]:
            return {"sum": job.payload["a"] + job.payload["b"]}

    else:

        @registry.handler("add")
        def add_sync(ctx: JobContext, job: Job) -> dict[str, int]:
            return {"sum": job.payload["a"] + job.payload["b"]}

    job = await claimed(backend, "add", {"a": 2, "b": 3})
    stored = await executor_for(registry, backend).execute_job(job)
    assert stored is not None
    assert stored.status is JobStatus.COMPLETED
    assert (await backend.queue.get_job(job.id)).status is JobStatus.COMPLETED
    result = await backend.results.get(job.id)
    assert result is not None
    assert result.is_success()
    assert result.result == {"sum": 5}


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_exception_is_a_retryable_failure_naming_the_exception_type(backend: Backend, kind: str) -> None:
    registry = Registry()

    async def boom_async(ctx: JobContext, job: Job) -> None:
        raise ValueError("the payload is upside down")

    def boom_sync(ctx: JobContext, job: Job) -> None:
        raise ValueError("the payload is upside down")

    registry.register("boom", boom_async if kind == "async" else boom_sync)
    job = await claimed(backend, "boom")
    stored = await executor_for(registry, backend).execute_job(job)
    assert stored is not None
    assert stored.status is JobStatus.PENDING
    assert stored.attempts == 1
    assert stored.error == "ValueError: the payload is upside down"
    assert await backend.results.get(job.id) is None  # not final: no result yet


async def test_last_attempt_failure_is_dead_and_stores_a_failed_result(backend: Backend) -> None:
    registry = Registry()

    @registry.handler("boom")
    async def boom(ctx: JobContext, job: Job) -> None:
        raise KeyError("missing")

    job = await claimed(backend, "boom", max_retries=1)
    stored = await executor_for(registry, backend).execute_job(job)
    assert stored is not None
    assert stored.status is JobStatus.FAILED
    assert (await backend.queue.depths()).dead == 1
    result = await backend.results.get(job.id)
    assert result is not None
    assert result.is_failed()
    assert result.error == "KeyError: 'missing'"


async def test_unknown_job_name_fails_with_handler_not_found(backend: Backend) -> None:
    registry = Registry()
    registry.register("known", lambda ctx, job: None)
    job = await claimed(backend, "unknown", max_retries=1)
    stored = await executor_for(registry, backend).execute_job(job)
    assert stored is not None
    assert stored.status is JobStatus.FAILED
    assert "HandlerNotFound" in stored.error
    assert "'unknown'" in stored.error
    assert "known" in stored.error


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_timeout_fails_the_attempt_and_cancels_the_handler(backend: Backend, kind: str) -> None:
    registry = Registry()
    seen: list[JobContext] = []

    async def slow_async(ctx: JobContext, job: Job) -> None:
        seen.append(ctx)
        await asyncio.sleep(30)

    def slow_sync(ctx: JobContext, job: Job) -> None:
        seen.append(ctx)
        ctx.wait_cancelled_sync(30)  # a cooperative sync handler

    registry.register("slow", slow_async if kind == "async" else slow_sync)
    job = await claimed(backend, "slow")
    stored = await executor_for(registry, backend).execute_job(job, timeout=0.2)
    assert stored is not None
    assert stored.status is JobStatus.PENDING
    assert stored.error.startswith("Timeout")
    assert "0.2s" in stored.error
    assert seen[0].cancelled
    assert "timed out" in seen[0].cancel_reason


async def test_non_json_result_is_a_failure_with_a_clear_error(backend: Backend) -> None:
    registry = Registry()

    @registry.handler("weird")
    async def weird(ctx: JobContext, job: Job) -> object:
        return {1, 2, 3}

    job = await claimed(backend, "weird", max_retries=1)
    stored = await executor_for(registry, backend).execute_job(job)
    assert stored is not None
    assert stored.status is JobStatus.FAILED
    assert "PayloadError" in stored.error
    assert "set" in stored.error
    assert "not JSON" in stored.error


async def test_a_handler_cancelling_itself_is_a_failure(backend: Backend) -> None:
    registry = Registry()

    @registry.handler("quits")
    async def quits(ctx: JobContext, job: Job) -> None:
        raise asyncio.CancelledError

    job = await claimed(backend, "quits")
    stored = await executor_for(registry, backend).execute_job(job)
    assert stored is not None
    assert stored.attempts == 1
    assert stored.error.startswith("Cancelled")


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_sys_exit_or_keyboard_interrupt_in_a_handler_is_only_a_failure(backend: Backend, kind: str) -> None:
    registry = Registry()

    async def exits(ctx: JobContext, job: Job) -> None:
        sys.exit(3)

    def interrupted(ctx: JobContext, job: Job) -> None:
        raise KeyboardInterrupt

    registry.register("quit", exits if kind == "async" else interrupted)
    job = await claimed(backend, "quit")
    stored = await executor_for(registry, backend).execute_job(job)
    assert stored is not None
    assert stored.attempts == 1
    assert stored.error == ("SystemExit: 3" if kind == "async" else "KeyboardInterrupt")


async def test_handler_returning_none_completes_with_no_result_value(backend: Backend) -> None:
    registry = Registry()
    registry.register("noop", lambda ctx, job: None)
    job = await claimed(backend, "noop")
    await executor_for(registry, backend).execute_job(job)
    result = await backend.results.get(job.id)
    assert result is not None
    assert result.is_success()
    assert result.result is None


async def test_sync_handlers_do_not_block_the_event_loop(backend: Backend) -> None:
    """Two sync handlers wait for an event only the event loop sets: if either blocked the
    loop, the loop could never set it and both would time out."""
    registry = Registry()
    release = threading.Event()
    started = 0
    loop = asyncio.get_running_loop()
    both_started = asyncio.Event()

    @registry.handler("waits")
    def waits(ctx: JobContext, job: Job) -> str:
        nonlocal started
        started += 1
        if started == 2:
            loop.call_soon_threadsafe(both_started.set)
        return "released" if release.wait(10) else "never released"

    executor = executor_for(registry, backend)
    jobs = [await claimed(backend, "waits") for _ in range(2)]
    runs = [asyncio.ensure_future(executor.execute_job(job)) for job in jobs]
    await asyncio.wait_for(both_started.wait(), 10)
    release.set()
    await asyncio.gather(*runs)
    for job in jobs:
        result = await backend.results.get(job.id)
        assert result is not None
        assert result.result == "released"


async def test_context_offers_deadline_logger_and_lease_renewal(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry()
    seen: dict[str, Any] = {}

    @registry.handler("inspect")
    async def inspect_ctx(ctx: JobContext, job: Job) -> None:
        seen["job"] = ctx.job
        seen["time_left"] = ctx.time_left
        seen["renewed"] = await ctx.renew_lease()
        ctx.logger.info("working on it")

    @registry.handler("inspect_sync")
    def inspect_sync(ctx: JobContext, job: Job) -> None:
        seen["heartbeat"] = ctx.heartbeat()

    job = await claimed(backend, "inspect")
    with caplog.at_level(logging.INFO, logger="bananas.job"):
        await executor_for(registry, backend, job_timeout=50).execute_job(job)
    assert seen["job"] == job
    assert 0 < seen["time_left"] <= 50
    assert seen["renewed"] is True
    record = next(r for r in caplog.records if "working on it" in r.getMessage())
    assert job.id in record.getMessage()
    assert record.job_id == job.id  # type: ignore[attr-defined]

    job2 = await claimed(backend, "inspect_sync")
    await executor_for(registry, backend).execute_job(job2)
    assert seen["heartbeat"] is True


async def test_renewing_a_lost_lease_says_so_and_cancels(backend: Backend) -> None:
    registry = Registry()
    seen: dict[str, Any] = {}

    @registry.handler("late")
    async def late(ctx: JobContext, job: Job) -> None:
        await backend.queue.complete(job)  # someone else finished it: the lease is gone
        seen["renewed"] = await ctx.renew_lease()
        seen["cancelled"] = ctx.cancelled

    job = await claimed(backend, "late")
    await executor_for(registry, backend).execute_job(job)
    assert seen == {"renewed": False, "cancelled": True}


class _UnreachableOnComplete:
    """The memory queue, except that ``complete`` fails as if the server went away."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)

    async def complete(self, job: Job) -> Job:
        raise BackendUnavailable("connection refused")


async def test_a_store_failure_while_recording_is_logged_not_raised(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry()
    registry.register("fine", lambda ctx, job: "ok")
    job = await claimed(backend, "fine")
    executor = Executor(registry, _UnreachableOnComplete(backend.queue), 1)
    with caplog.at_level(logging.ERROR, logger="bananas.worker"):
        assert await executor.execute_job(job) is None
    assert "lease will run out" in caplog.text
    assert (await backend.queue.get_job(job.id)).status is JobStatus.PROCESSING


def test_concurrency_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Executor(Registry(), connect("memory://x").queue, 0)

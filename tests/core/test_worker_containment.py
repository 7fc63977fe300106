"""A handler can never take the worker down, and what the worker logs is honest.

SystemExit / KeyboardInterrupt from tasks and callbacks a handler started, crashes that
leave jobs to their leases, stale settles, a blocked event loop, abandoned handler threads
and job names that try to forge log lines; on ``memory://`` with the real Pool and Executor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from bananas import AsyncClient, Backend, Job, JobStatus, ManualClock, Registry, connect
from bananas.config import WorkerConfig
from bananas.protocols import LEASE_EXPIRED_ERROR
from bananas.worker import Executor, JobContext, Pool
from bananas.worker.executor import abandoned_handler_threads

pytestmark = pytest.mark.anyio


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = connect(f"memory://contain-{uuid.uuid4().hex}", clock=ManualClock())
    yield b
    await b.close()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


def make_pool(registry: Registry, backend: Backend, **kwargs: Any) -> Pool:
    config = kwargs.pop("config", None) or WorkerConfig(concurrency=2, scheduler_interval=0.1)
    lease = kwargs.pop("lease", 60.0)
    executor = Executor(registry, backend.queue, config.concurrency, clock=backend.clock, lease=lease)
    executor.set_result_backend(backend.results)
    kwargs.setdefault("poll_interval", 0.05)
    return Pool(executor, backend, config, lease=lease, **kwargs)


def _exit(kind: str) -> BaseException:
    return SystemExit(3) if kind == "SystemExit" else KeyboardInterrupt()


def _spawning_handler(how: str, kind: str) -> Callable[[JobContext, Job], Any]:
    """A handler that starts something raising ``kind`` the way ``how`` says, then waits."""

    def raise_it() -> None:
        raise _exit(kind)

    async def raising() -> None:
        await asyncio.sleep(0)
        raise_it()

    if how == "thread":

        def sync_handler(ctx: JobContext, job: Job) -> str:
            ctx._loop.call_soon_threadsafe(raise_it)
            ctx.wait_cancelled_sync(5)
            return "not contained"

        return sync_handler

    started: list[asyncio.Future[None]] = []  # keeps the tasks referenced

    async def handler(ctx: JobContext, job: Job) -> str:
        loop = asyncio.get_running_loop()
        if how == "create_task":
            started.append(asyncio.create_task(raising()))
        elif how == "ensure_future":
            started.append(asyncio.ensure_future(raising()))
        elif how == "call_soon":
            loop.call_soon(raise_it)
        elif how == "call_later":
            loop.call_later(0.01, raise_it)
        elif how == "awaited_task":
            await asyncio.gather(asyncio.create_task(raising()))
        await asyncio.sleep(5)
        return "not contained"

    return handler


@pytest.mark.parametrize("how", ["create_task", "ensure_future", "awaited_task"])
@pytest.mark.parametrize("kind", ["SystemExit", "KeyboardInterrupt"])
async def test_an_exit_raised_by_something_a_handler_started_fails_the_attempt_and_the_worker_runs_on(
    backend: Backend, how: str, kind: str
) -> None:
    """Each attempt fails with a readable error, the worker keeps running, and after
    max_retries the job is dead; a well-behaved job submitted afterwards still runs."""
    assert isinstance(backend.clock, ManualClock)
    registry = Registry()
    registry.register("poison", _spawning_handler(how, kind))
    registry.register("fine", lambda ctx, job: "ok")
    pool = make_pool(registry, backend)
    await pool.start()
    try:
        async with AsyncClient(backend=backend) as client:
            job_id = await client.submit_job("poison", None, max_retries=2)

            async def attempts(n: int) -> bool:
                return (await backend.queue.get_job(job_id)).attempts >= n

            await eventually(lambda: attempts(1))
            first = await backend.queue.get_job(job_id)
            assert first.status is JobStatus.PENDING  # a retry is scheduled: a counted, failed attempt
            backend.clock.advance(10)  # past the retry backoff
            await eventually(lambda: attempts(2))
            dead = await backend.queue.get_job(job_id)
            assert dead.status is JobStatus.FAILED
            assert [j.id for j in await backend.queue.dead_letters()] == [job_id]
            expected = "SystemExit: 3" if kind == "SystemExit" else "KeyboardInterrupt"
            assert dead.error.startswith(f"{expected} (raised by a task"), dead.error
            assert pool.running
            result = await client.submit_and_wait("fine", None, timeout=5)
            assert result.result == "ok"
    finally:
        await pool.stop()


async def test_an_exit_after_the_handler_finished_is_logged_with_the_job_id(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry()
    raised = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    @registry.handler("quick")
    async def quick(ctx: JobContext, job: Job) -> str:
        async def later() -> None:
            await asyncio.sleep(0.1)
            raised.set()
            sys.exit(7)

        tasks.append(asyncio.create_task(later()))
        return "done"

    pool = make_pool(registry, backend)
    await pool.start()
    try:
        with caplog.at_level(logging.ERROR, logger="bananas.worker"):
            async with AsyncClient(backend=backend) as client:
                result = await client.submit_and_wait("quick", None, timeout=5)
                await asyncio.wait_for(raised.wait(), 5)
                await asyncio.sleep(0.05)
        assert result.result == "done"
        assert pool.running
    finally:
        await pool.stop()
    [record] = [r for r in caplog.records if "after the handler had finished" in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert result.job_id in record.getMessage()
    assert "SystemExit: 7" in record.getMessage()


async def test_the_loop_is_restored_when_the_pool_stops(backend: Backend) -> None:
    loop = asyncio.get_running_loop()

    def mine(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(mine)
    try:
        pools = [make_pool(Registry(), backend), make_pool(Registry(), backend)]
        for pool in pools:
            await pool.start()
        assert loop.get_task_factory() is not mine
        for pool in pools:
            await pool.stop()
        assert loop.get_task_factory() is mine
    finally:
        loop.set_task_factory(None)


async def test_an_exit_from_the_runtime_itself_still_ends_the_loop() -> None:
    """Containment is for what handlers start: anything else raising SystemExit ends the loop."""

    def run() -> BaseException | None:
        async def main() -> None:
            pool = make_pool(Registry(), connect(f"memory://contain-{uuid.uuid4().hex}"))
            await pool.start()
            asyncio.get_running_loop().call_soon(sys.exit, 9)
            await asyncio.sleep(5)

        try:
            asyncio.run(main())
        except BaseException as exc:
            return exc
        return None

    outcome = await asyncio.to_thread(run)
    assert isinstance(outcome, SystemExit) and outcome.code == 9


# -- crashes leave started jobs to their leases ---------------------------------------------


@pytest.mark.parametrize("crash", ["cancelled", "system_exit"])
async def test_a_crash_leaves_started_jobs_to_their_lease_and_the_reaper_counts_the_attempt(crash: str) -> None:
    """Killed mid-job (its task cancelled, or SystemExit escaping its loop), a worker hands
    back only jobs that never started; the started one stays processing until its lease runs
    out, and the reap counts a failed attempt."""
    clock = ManualClock()
    url = f"memory://crash-{uuid.uuid4().hex}"
    backend = connect(url, clock=clock)

    def run() -> None:
        async def main() -> None:
            registry = Registry()
            started = asyncio.Event()

            @registry.handler("hang")
            async def hang(ctx: JobContext, job: Job) -> None:
                started.set()
                await asyncio.sleep(30)

            b = connect(url, clock=clock)
            config = WorkerConfig(concurrency=1, scheduler_interval=0.1)
            pool = make_pool(registry, b, config=config, lease=30.0, prefetch=1)
            runner = asyncio.create_task(pool.run())
            await asyncio.wait_for(started.wait(), 10)
            await eventually(lambda: _true(pool.in_flight == 2))  # the second job is claimed ahead
            if crash == "cancelled":
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
            else:
                asyncio.get_running_loop().call_soon(sys.exit, 1)
                await asyncio.sleep(5)

        with contextlib.suppress(SystemExit):
            asyncio.run(main())

    async with AsyncClient(backend=backend) as client:
        first = await client.submit_job("hang", None, max_retries=1)
        second = await client.submit_job("hang", None, max_retries=1)
    await asyncio.to_thread(run)

    hung = await backend.queue.get_job(first)
    assert hung.status is JobStatus.PROCESSING  # not released: no attempt would ever be counted
    assert hung.attempts == 0
    waiting = await backend.queue.get_job(second)
    assert waiting.status is JobStatus.PENDING and waiting.attempts == 0  # never started: handed back
    assert await backend.queue.reap_expired() == 0  # the lease still runs
    clock.advance(31)
    assert await backend.queue.reap_expired() == 1
    dead = await backend.queue.get_job(first)
    assert dead.attempts == 1
    assert dead.status is JobStatus.FAILED  # max_retries=1: a job that kills workers ends dead
    assert dead.error == LEASE_EXPIRED_ERROR
    await backend.close()


async def test_a_graceful_stop_still_hands_started_jobs_back(backend: Backend) -> None:
    registry = Registry()
    started = asyncio.Event()

    @registry.handler("hang")
    async def hang(ctx: JobContext, job: Job) -> None:
        started.set()
        await asyncio.sleep(30)

    pool = make_pool(registry, backend, grace_period=0.1)
    await pool.start()
    async with AsyncClient(backend=backend) as client:
        job_id = await client.submit_job("hang")
    await asyncio.wait_for(started.wait(), 5)
    await pool.stop()
    job = await backend.queue.get_job(job_id)
    assert job.status is JobStatus.PENDING and job.attempts == 0


# -- stale settles --------------------------------------------------------------------------


@pytest.mark.parametrize("ok", [True, False])
async def test_a_stale_settle_is_one_warning_and_stores_no_result(
    backend: Backend, caplog: pytest.LogCaptureFixture, ok: bool
) -> None:
    registry = Registry()

    @registry.handler("work")
    def work(ctx: JobContext, job: Job) -> str:
        if not ok:
            raise ValueError("nope")
        return "value"

    await backend.queue.enqueue(Job.create("work", None, max_retries=2))
    [job] = await backend.queue.claim(["default"], lease=10)
    assert isinstance(backend.clock, ManualClock)
    backend.clock.advance(11)  # this worker stalled: its lease ran out, another worker took the job over
    assert await backend.queue.reap_expired() == 1
    [_again] = await backend.queue.claim(["default"], lease=10)
    executor = Executor(registry, backend.queue, 1, clock=backend.clock)
    executor.set_result_backend(backend.results)
    with caplog.at_level(logging.DEBUG, logger="bananas.worker"):
        assert await executor.execute_job(job) is None
    assert await backend.results.get(job.id) is None
    records = [r for r in caplog.records if r.name == "bananas.worker"]
    assert len(records) == 1, [r.getMessage() for r in records]
    [record] = records
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    assert job.id in message and "(work)" in message
    assert ("its completion was discarded" if ok else "its failed attempt (ValueError: nope) was discarded") in message
    assert "another worker took the job over" in message


async def test_a_lease_lost_while_the_handler_runs_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    backend = connect(f"memory://lost-{uuid.uuid4().hex}", clock=clock)
    registry = Registry()
    started = asyncio.Event()
    finish = asyncio.Event()
    contexts: list[JobContext] = []

    @registry.handler("long")
    async def long(ctx: JobContext, job: Job) -> None:
        contexts.append(ctx)
        started.set()
        await finish.wait()

    config = WorkerConfig(concurrency=1, scheduler_interval=60)  # renews every 0.1 s; reaps only at start
    pool = make_pool(registry, backend, config=config, lease=0.3)
    await pool.start()
    try:
        with caplog.at_level(logging.WARNING, logger="bananas.worker"):
            async with AsyncClient(backend=backend) as client:
                job_id = await client.submit_job("long")
            await asyncio.wait_for(started.wait(), 5)
            clock.advance(10)
            assert await backend.queue.reap_expired() == 1  # another worker takes the job back
            await eventually(lambda: _true(contexts[0].cancelled))
            await asyncio.sleep(0.5)  # several more renewal rounds
            finish.set()
            await asyncio.sleep(0.1)
    finally:
        await pool.stop()
        await backend.close()
    lost = [r for r in caplog.records if "lost its lease" in r.getMessage()]
    assert len(lost) == 1, [r.getMessage() for r in lost]
    assert job_id in lost[0].getMessage() and "(long)" in lost[0].getMessage()
    assert "lease lost" in contexts[0].cancel_reason


async def _true(value: bool) -> bool:
    return value


async def test_a_claimed_ahead_job_that_lost_its_lease_is_dropped_and_runs_once_reclaimed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = ManualClock()
    backend = connect(f"memory://lost-ahead-{uuid.uuid4().hex}", clock=clock)
    registry = Registry()
    first_started = asyncio.Event()
    finish = asyncio.Event()
    runs: list[str] = []

    @registry.handler("long")
    async def long(ctx: JobContext, job: Job) -> None:
        runs.append(job.id)
        first_started.set()
        await finish.wait()

    config = WorkerConfig(concurrency=1, scheduler_interval=60)
    pool = make_pool(registry, backend, config=config, lease=0.3, prefetch=1)
    await pool.start()
    try:
        with caplog.at_level(logging.WARNING, logger="bananas.worker"):
            async with AsyncClient(backend=backend) as client:
                running_id = await client.submit_job("long")
                ahead_id = await client.submit_job("long")
            await asyncio.wait_for(first_started.wait(), 5)
            await eventually(lambda: _true(pool.in_flight == 2))
            clock.advance(10)
            assert await backend.queue.reap_expired() == 2  # both taken back from this worker
            await eventually(lambda: _true(any("before it started" in r.getMessage() for r in caplog.records)))
            finish.set()

            async def both_completed() -> bool:
                jobs = [await backend.queue.get_job(i) for i in (running_id, ahead_id)]
                return all(j.status is JobStatus.COMPLETED for j in jobs)

            await eventually(both_completed)
    finally:
        await pool.stop()
        await backend.close()
    ahead = [r.getMessage() for r in caplog.records if "before it started" in r.getMessage()]
    assert len(ahead) == 1 and ahead_id in ahead[0], ahead
    assert runs.count(ahead_id) == 1  # dropped unstarted, run once when claimed again
    assert runs.count(running_id) == 2  # the copy whose lease was lost, and the one claimed again


# -- a blocked event loop, abandoned threads ------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("lease", "level", "wording"),
    [(60.0, logging.WARNING, "a handler is blocking the loop"), (1.0, logging.ERROR, "leases may have expired")],
)
async def test_an_async_handler_blocking_the_loop_is_reported(
    backend: Backend, caplog: pytest.LogCaptureFixture, lease: float, level: int, wording: str
) -> None:
    registry = Registry()

    @registry.handler("blocker")
    async def blocker(ctx: JobContext, job: Job) -> str:
        time.sleep(0.8)  # noqa: ASYNC251 - the mistake under test: blocking code in an async def
        return "done"

    pool = make_pool(registry, backend, lease=lease, lag_threshold=0.4, lag_interval=0.05)
    await pool.start()
    try:
        with caplog.at_level(logging.WARNING, logger="bananas.worker"):
            async with AsyncClient(backend=backend) as client:
                result = await client.submit_and_wait("blocker", None, timeout=10)
            await asyncio.sleep(0.2)
    finally:
        await pool.stop()
    assert result.result == "done"
    reports = [r for r in caplog.records if "event loop was blocked" in r.getMessage()]
    assert len(reports) == 1, [r.getMessage() for r in reports]
    message = reports[0].getMessage()
    assert reports[0].levelno == level
    assert wording in message
    assert f"lease {lease:g}s" in message
    assert f"blocker {result.job_id}" in message


async def test_a_healthy_loop_is_not_reported(backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    registry = Registry()

    @registry.handler("polite")
    async def polite(ctx: JobContext, job: Job) -> None:
        await asyncio.sleep(0.3)

    pool = make_pool(registry, backend, lag_threshold=0.2, lag_interval=0.02)
    await pool.start()
    try:
        with caplog.at_level(logging.WARNING, logger="bananas.worker"):
            async with AsyncClient(backend=backend) as client:
                await client.submit_and_wait("polite", None, timeout=10)
    finally:
        await pool.stop()
    assert not [r for r in caplog.records if "event loop was blocked" in r.getMessage()]


async def test_a_sync_handler_outliving_its_timeout_is_said_abandoned_and_counted(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry()
    release = threading.Event()

    @registry.handler("stuck")
    def stuck(ctx: JobContext, job: Job) -> None:
        release.wait(10)  # ignores ctx.cancelled

    await backend.queue.enqueue(Job.create("stuck"))
    [job] = await backend.queue.claim(["default"])
    executor = Executor(registry, backend.queue, 1, clock=backend.clock)
    before = abandoned_handler_threads()
    try:
        with caplog.at_level(logging.WARNING, logger="bananas.worker"):
            stored = await executor.execute_job(job, timeout=0.2)
        assert stored is not None and stored.error.startswith("Timeout")
        assert abandoned_handler_threads() == before + 1
        assert executor.abandoned_threads == before + 1
    finally:
        release.set()
    [record] = [r for r in caplog.records if "abandoned" in r.getMessage()]
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    assert job.id in message and "(stuck)" in message
    assert f"{before + 1} abandoned handler thread(s) still running" in message
    await eventually(lambda: _true(abandoned_handler_threads() == before))  # it returned: no longer counted


# -- stored strings in log lines ------------------------------------------------------------


async def test_a_job_name_with_a_newline_cannot_forge_log_lines(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    name = "evil\n2026-12-04 04:00:00 INFO bananas.worker: all good\r\x1b[2K"
    registry = Registry()

    @registry.handler(name)
    async def evil(ctx: JobContext, job: Job) -> None:
        ctx.logger.warning("from the handler")
        raise ValueError("bad\nFORGED")

    await backend.queue.enqueue(Job.create("evil", None, max_retries=1))
    [job] = await backend.queue.claim(["default"])
    # Job.create refuses such a name, but storage is written by any producer (other SDKs, the
    # store's own tools): the copy the worker read back carries it.
    object.__setattr__(job, "name", name)
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    with caplog.at_level(logging.INFO):
        await Executor(registry, backend.queue, 1, clock=backend.clock).execute_job(job)
    lines = [formatter.format(r) for r in caplog.records if r.name in ("bananas.worker", "bananas.job")]
    assert len(lines) == 2, lines
    for line in lines:
        assert "\n" not in line and "\r" not in line and "\x1b" not in line, line
        assert "evil\\n2026-12-04" in line
    assert "ValueError: bad\\nFORGED" in lines[1]

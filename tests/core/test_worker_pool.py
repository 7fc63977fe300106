"""The worker pool on ``memory://``: claiming within the concurrency limit, prefetch, leases,
graceful and forced stops, heartbeats, worker modes, retries, scheduled jobs and cron."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from bananas import (
    AsyncClient,
    Backend,
    BackendUnavailable,
    Capability,
    Job,
    JobResult,
    JobStatus,
    ManualClock,
    Registry,
    connect,
)
from bananas.config import WorkerConfig, load_worker_config
from bananas.protocols import LEASE_EXPIRED_ERROR
from bananas.worker import Executor, JobContext, Pool
from waiting import eventually

pytestmark = pytest.mark.anyio


@pytest.fixture
def url() -> str:
    return f"memory://pool-{uuid.uuid4().hex}"


@pytest.fixture
async def backend(url: str) -> AsyncIterator[Backend]:
    b = connect(url)
    yield b
    await b.close()


def make_pool(registry: Registry, backend: Backend, config: WorkerConfig | None = None, **kwargs: Any) -> Pool:
    config = config or WorkerConfig(concurrency=4, scheduler_interval=0.1)
    executor = Executor(registry, backend.queue, max(config.concurrency, 1), clock=backend.clock)
    executor.set_result_backend(backend.results)
    kwargs.setdefault("poll_interval", 0.1)
    return Pool(executor, backend, config, **kwargs)


async def test_runs_submitted_jobs_and_results_reach_the_client(backend: Backend) -> None:
    registry = Registry()

    @registry.handler("double")
    async def double(ctx: JobContext, job: Job) -> int:
        return int(job.payload) * 2

    pool = make_pool(registry, backend)
    await pool.start()
    try:
        async with AsyncClient(backend=backend) as client:
            results = await asyncio.gather(*(client.submit_and_wait("double", n, timeout=5) for n in range(10)))
    finally:
        await pool.stop()
    assert [r.result for r in results] == [n * 2 for n in range(10)]
    assert all(r.is_success() for r in results)


async def test_concurrency_limit_is_honoured_and_every_slot_is_used(backend: Backend) -> None:
    """Twelve jobs, three slots: never more than three run at once, and three do run at once."""
    registry = Registry()
    running = 0
    peak = 0
    three_running = asyncio.Event()

    @registry.handler("work")
    async def work(ctx: JobContext, job: Job) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 3:
            three_running.set()
        await asyncio.wait_for(three_running.wait(), 5)  # each slot waits until all three are busy
        running -= 1

    async with AsyncClient(backend=backend) as client:
        await client.submit_many([{"name": "work"} for _ in range(12)])
    pool = make_pool(registry, backend, WorkerConfig(concurrency=3, scheduler_interval=0.1))
    await pool.start()
    try:
        await eventually(lambda: _done(backend, 12))
    finally:
        await pool.stop()
    assert peak == 3


async def _done(backend: Backend, n: int) -> bool:
    depths = await backend.queue.depths()
    return depths.total_ready == 0 and depths.processing == 0 and depths.scheduled == 0


async def test_one_claim_fetches_as_many_jobs_as_there_are_free_slots(backend: Backend) -> None:
    """Prefetch: with five free slots, five waiting jobs start together (one claim of five)."""
    registry = Registry()
    gate = asyncio.Event()
    started: list[str] = []

    @registry.handler("wait")
    async def wait(ctx: JobContext, job: Job) -> None:
        started.append(job.id)
        await gate.wait()

    calls: list[int] = []
    real_claim = backend.queue.claim

    async def counting_claim(*args: Any, **kwargs: Any) -> list[Job]:
        jobs = await real_claim(*args, **kwargs)
        if jobs:
            calls.append(kwargs["limit"])
        return jobs

    backend.queue.claim = counting_claim  # type: ignore[method-assign]
    async with AsyncClient(backend=backend) as client:
        await client.submit_many([{"name": "wait"} for _ in range(5)])
    pool = make_pool(registry, backend, WorkerConfig(concurrency=5, scheduler_interval=0.1))
    await pool.start()
    try:
        await eventually(lambda: len(started) == 5)
        assert calls == [5]
        assert pool.in_flight == 5
    finally:
        gate.set()
        await pool.stop()


async def test_graceful_stop_waits_for_jobs_that_finish_within_the_grace_period(backend: Backend) -> None:
    registry = Registry()

    @registry.handler("short")
    async def short(ctx: JobContext, job: Job) -> str:
        await asyncio.sleep(0.3)  # the thing under test: a job still running when the stop begins
        return "done"

    pool = make_pool(registry, backend, grace_period=5)
    await pool.start()
    async with AsyncClient(backend=backend) as client:
        job_id = await client.submit_job("short")
        await eventually(lambda: pool.in_flight == 1)
        await pool.stop()
        assert (await client.get_job(job_id)).status is JobStatus.COMPLETED


@pytest.mark.parametrize("force", [False, True])
async def test_stop_hands_unfinished_jobs_back_without_counting_an_attempt(backend: Backend, force: bool) -> None:
    registry = Registry()
    contexts: list[JobContext] = []

    @registry.handler("forever")
    async def forever(ctx: JobContext, job: Job) -> None:
        contexts.append(ctx)
        await asyncio.Event().wait()  # outlives any grace period

    pool = make_pool(registry, backend, WorkerConfig(concurrency=2, scheduler_interval=0.1), grace_period=0.2)
    async with AsyncClient(backend=backend) as client:
        ids = [await client.submit_job("forever") for _ in range(3)]
        await pool.start()
        await eventually(lambda: pool.in_flight == 2)
        await pool.stop(force=force)
        jobs = [await client.get_job(i) for i in ids]
    assert [j.status for j in jobs] == [JobStatus.PENDING] * 3
    assert [j.attempts for j in jobs] == [0, 0, 0]
    depths = await backend.queue.depths()
    assert (depths.total_ready, depths.processing) == (3, 0)
    assert all(ctx.cancelled for ctx in contexts)
    # released jobs are next in line: the first two submitted are claimed first again
    again = await backend.queue.claim(["default"], limit=2)
    assert {j.id for j in again} == set(ids[:2])


async def test_lease_renewal_keeps_a_long_job_from_being_reaped() -> None:
    clock = ManualClock()
    backend = connect(f"memory://lease-{uuid.uuid4().hex}", clock=clock)
    registry = Registry()
    finish = asyncio.Event()
    starts = 0

    @registry.handler("long")
    async def long(ctx: JobContext, job: Job) -> str:
        nonlocal starts
        starts += 1
        await finish.wait()
        return "finished"

    renewed = asyncio.Event()
    real_renew = backend.queue.renew

    async def noting_renew(*args: Any, **kwargs: Any) -> Any:
        held = await real_renew(*args, **kwargs)
        renewed.set()
        return held

    backend.queue.renew = noting_renew  # type: ignore[method-assign]
    async with AsyncClient(backend=backend) as client:
        long_id = await client.submit_job("long")
        # a control job on a routing key the pool does not serve, claimed once and never renewed
        control_id = await client.submit_job_with_route("long", None, "normal", "elsewhere")
        [control] = await backend.queue.claim(["elsewhere"], lease=1.5)
        assert control.id == control_id
        pool = make_pool(registry, backend, lease=1.5)
        await pool.start()
        try:
            await eventually(lambda: pool.in_flight == 1)
            for _ in range(5):  # 5 clock seconds pass, far beyond the 1.5 s lease
                renewed.clear()
                await asyncio.wait_for(renewed.wait(), 10)  # the pool renews every 0.5 real seconds
                clock.advance(1.0)
                await backend.queue.reap_expired()
            kept = await client.get_job(long_id)
            assert (kept.status, kept.attempts, kept.error, starts) == (JobStatus.PROCESSING, 0, "", 1)
            reaped = await client.get_job(control_id)
            assert reaped.error == LEASE_EXPIRED_ERROR
            assert reaped.attempts == 1
            finish.set()
            result = await client.wait_for_result(long_id, timeout=5)
            assert result.result == "finished"
        finally:
            await pool.stop()
    await backend.close()


async def test_heartbeats_show_the_worker_and_stop_removes_it(backend: Backend) -> None:
    registry = Registry()
    gate = asyncio.Event()

    @registry.handler("wait")
    async def wait(ctx: JobContext, job: Job) -> None:
        await gate.wait()

    config = WorkerConfig(concurrency=3, routing_keys=("gpu", "default"), scheduler_interval=0.1)
    pool = make_pool(registry, backend, config, heartbeat_interval=0.05)
    await pool.start()
    try:
        [info] = await backend.workers.workers()
        assert info.id == pool.worker_id
        assert info.concurrency == 3
        assert info.routing_keys == ("gpu", "default")
        assert info.mode == "default"
        assert info.pid > 0
        async with AsyncClient(backend=backend) as client:
            await client.submit_many([{"name": "wait"}, {"name": "wait", "routing_key": "gpu"}])

        async def two_in_flight() -> bool:
            workers = await backend.workers.workers()
            return bool(workers) and workers[0].in_flight == 2

        await eventually(two_in_flight)
    finally:
        gate.set()
        await pool.stop()
    assert await backend.workers.workers() == []


async def _job_specialized(backend: Backend) -> None:
    registry = Registry()
    ran: list[str] = []

    @registry.handler("mine")
    async def mine(ctx: JobContext, job: Job) -> None:
        ran.append(job.name)

    async with AsyncClient(backend=backend) as client:
        other = await client.submit_job("theirs")
        first = await client.submit_job("mine")
        config = load_worker_config({"WORKER_MODE": "job-specialized", "WORKER_JOB_TYPES": "mine"})
        pool = make_pool(registry, backend, config)
        await pool.start()
        try:
            await client.wait_for_result(first, timeout=5)
            # another claim round, with the foreign job still first in line
            await client.wait_for_result(await client.submit_job("mine"), timeout=5)
        finally:
            await pool.stop()
        untouched = await client.get_job(other)
    assert ran == ["mine", "mine"]
    assert untouched.status is JobStatus.PENDING
    assert (untouched.attempts, untouched.error) == (0, "")
    assert (await backend.queue.depths()).total_ready == 1


async def test_job_specialized_takes_only_its_job_types(backend: Backend) -> None:
    assert backend.supports(Capability.JOB_NAME_FILTER)
    await _job_specialized(backend)


async def test_job_specialized_without_name_filter_releases_other_jobs_untouched(backend: Backend) -> None:
    plain = Backend(
        name="memory-no-filter",
        url=backend.url,
        queue=backend.queue,
        results=backend.results,
        workers=backend.workers,
        capabilities=backend.capabilities - {Capability.JOB_NAME_FILTER},
        options=backend.options,
    )
    await _job_specialized(plain)


def _count_rounds(backend: Backend) -> list[int]:
    """Count the pool's scheduler rounds: ``[n]``, n going up once per ``move_scheduled``."""
    rounds = [0]
    real_move = backend.queue.move_scheduled

    async def counting_move(*args: Any, **kwargs: Any) -> int:
        moved = await real_move(*args, **kwargs)
        rounds[0] += 1
        return moved

    backend.queue.move_scheduled = counting_move  # type: ignore[method-assign]
    return rounds


async def test_scheduler_only_claims_nothing_but_moves_scheduled_jobs() -> None:
    clock = ManualClock()
    backend = connect(f"memory://sched-{uuid.uuid4().hex}", clock=clock)
    rounds = _count_rounds(backend)
    registry = Registry()
    registry.register("later", lambda ctx, job: None)
    async with AsyncClient(backend=backend) as client:
        now_id = await client.submit_job("later")
        later_id = await client.submit_job_scheduled("later", None, "normal", 60)
        config = load_worker_config({"WORKER_MODE": "scheduler-only", "SCHEDULER_INTERVAL": "100ms"})
        pool = make_pool(registry, backend, config)
        await pool.start()
        try:
            await eventually(lambda: rounds[0] >= 3, what="three scheduler rounds")
            assert (await backend.queue.depths()).scheduled == 1
            clock.advance(61)

            async def moved() -> bool:
                return (await backend.queue.depths()).total_ready == 2

            await eventually(moved)
            after = rounds[0]
            await eventually(lambda: rounds[0] >= after + 2, what="two more scheduler rounds")
            for job_id in (now_id, later_id):
                assert (await client.get_job(job_id)).status is JobStatus.PENDING
        finally:
            await pool.stop()
    await backend.close()


async def test_failing_job_is_retried_until_dead_with_attempts_equal_to_max_retries() -> None:
    clock = ManualClock()
    backend = connect(f"memory://retry-{uuid.uuid4().hex}", clock=clock)
    registry = Registry()
    attempts: list[int] = []

    @registry.handler("flaky")
    async def flaky(ctx: JobContext, job: Job) -> None:
        attempts.append(job.attempts)
        raise RuntimeError(f"attempt {job.attempts} failed")

    pool = make_pool(registry, backend)
    await pool.start()
    try:
        async with AsyncClient(backend=backend) as client:
            job_id = await client.submit_job("flaky", max_retries=3)
            for expected in (1, 2):

                async def failed_times(n: int = expected) -> bool:
                    job = await client.get_job(job_id)
                    return job.attempts == n and job.status is JobStatus.PENDING

                await eventually(failed_times)
                clock.advance(2**expected + 0.1)  # past the backoff: the pool's scheduler moves it
            result = await client.wait_for_result(job_id, timeout=5)
            job = await client.get_job(job_id)
    finally:
        await pool.stop()
    assert attempts == [0, 1, 2]
    assert result.is_failed()
    assert result.error == "RuntimeError: attempt 2 failed"
    assert job.status is JobStatus.FAILED
    assert job.attempts == job.max_retries == 3
    assert [d.id for d in await backend.queue.dead_letters()] == [job_id]
    await backend.close()


async def test_cron_schedules_fire_through_the_pool() -> None:
    clock = ManualClock(1_750_000_020.0)  # 20 s past a minute boundary
    backend = connect(f"memory://cron-{uuid.uuid4().hex}", clock=clock)
    registry = Registry()
    fired: list[Any] = []

    @registry.handler("tick")
    async def tick(ctx: JobContext, job: Job) -> None:
        fired.append(job.payload)

    registry.schedule("every-minute", "* * * * *", "tick", {"from": "cron"})
    rounds = _count_rounds(backend)
    pool = make_pool(registry, backend)
    await pool.start()
    try:
        await eventually(lambda: len(fired) == 1)
        after = rounds[0]
        # each round moves scheduled jobs, then ticks: two more rounds mean at least one more tick
        await eventually(lambda: rounds[0] >= after + 2, what="two more scheduler rounds")
        await eventually(lambda: _done(backend, 1))  # a second job for the tick would run before this
        assert len(fired) == 1  # the same tick is not fired again
        clock.advance(60)
        await eventually(lambda: len(fired) == 2)
    finally:
        await pool.stop()
    assert fired == [{"from": "cron"}, {"from": "cron"}]
    await backend.close()


async def test_a_pool_cannot_be_started_twice_and_stop_is_idempotent(backend: Backend) -> None:
    pool = make_pool(Registry(), backend)
    await pool.stop()  # never started: nothing to do
    await pool.start()
    assert pool.running
    with pytest.raises(RuntimeError, match="already started"):
        await pool.start()
    await pool.stop()
    await pool.stop()
    assert not pool.running


async def test_run_returns_when_stopped_from_another_task(backend: Backend) -> None:
    pool = make_pool(Registry(), backend)
    runner = asyncio.ensure_future(pool.run())
    await eventually(lambda: pool.running)
    await pool.stop()
    await asyncio.wait_for(runner, 5)
    assert await backend.workers.workers() == []


async def test_the_pool_survives_a_store_outage_while_claiming(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry()
    registry.register("after_outage", lambda ctx, job: "ran")
    failures = 3
    real_claim = backend.queue.claim

    async def flaky_claim(*args: Any, **kwargs: Any) -> list[Job]:
        nonlocal failures
        if failures:
            failures -= 1
            raise BackendUnavailable("connection refused")
        return await real_claim(*args, **kwargs)

    backend.queue.claim = flaky_claim  # type: ignore[method-assign]
    pool = make_pool(registry, backend)
    async with AsyncClient(backend=backend) as client:
        job_id = await client.submit_job("after_outage")
        await pool.start()
        try:
            result = await client.wait_for_result(job_id, timeout=5)
        finally:
            await pool.stop()
    assert result.result == "ran"
    assert failures == 0
    assert "claim failed (connection refused)" in caplog.text


async def test_a_side_task_that_swallows_its_cancellation_does_not_keep_the_worker_from_stopping(
    backend: Backend,
) -> None:
    """A cancellation that lands inside a store call can be lost by the library making it (seen
    with redis-py): the maintenance loop then carries on, and a stop that cancelled it once
    would wait for it forever. The stop cancels what is still running again until it ends."""
    swallowed = 0
    reap = backend.queue.reap_expired

    async def reap_losing_one_cancellation() -> int:
        nonlocal swallowed
        if not swallowed:
            try:
                await asyncio.sleep(5)  # the call under way when the stop cancels the side tasks
            except asyncio.CancelledError:
                swallowed += 1  # lost, as such a library loses it
        return await reap()

    backend.queue.reap_expired = reap_losing_one_cancellation  # type: ignore[method-assign]
    pool = make_pool(Registry(), backend, config=WorkerConfig(concurrency=1, scheduler_interval=0.1))
    await pool.start()
    await asyncio.sleep(0.2)  # the first maintenance step is in its reap
    await asyncio.wait_for(pool.stop(), 10)
    assert swallowed == 1
    assert not pool.running


async def test_a_forced_stop_lets_an_outcome_being_written_finish(backend: Backend) -> None:
    """The handler has returned and its completion is on its way to a slow store when the
    second signal comes: the write is not cut off (the job would run again), and the stop
    returns once it has landed."""
    registry = Registry()

    @registry.handler("work")
    async def work(ctx: JobContext, job: Job) -> str:
        return "done"

    writing, land = asyncio.Event(), asyncio.Event()
    complete = backend.queue.complete_and_store  # what the executor records a success with here

    async def slow_complete(job: Job, result: JobResult) -> Job:
        writing.set()
        await land.wait()
        return await complete(job, result)

    backend.queue.complete_and_store = slow_complete  # type: ignore[attr-defined]
    pool = make_pool(registry, backend, config=WorkerConfig(concurrency=1, scheduler_interval=0.1))
    async with AsyncClient(backend=backend) as client:
        job_id = await client.submit_job("work", None)
        await pool.start()
        await asyncio.wait_for(writing.wait(), 5)
        stopping = asyncio.create_task(pool.stop(force=True))
        await asyncio.sleep(0.7)  # past a re-cancel of what the stop cancels
        assert not stopping.done()  # waiting for the write, not cutting it off
        land.set()
        await asyncio.wait_for(stopping, 5)
        job = await client.get_job(job_id)
    assert job.status is JobStatus.COMPLETED and job.attempts == 0

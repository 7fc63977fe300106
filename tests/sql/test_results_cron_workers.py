"""Results, cron storage and the worker registry on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.errors import Timeout
from bananas.job import Job, JobResult, JobStatus
from bananas.protocols import WorkerInfo

pytestmark = pytest.mark.anyio


async def test_result_store_get_delete_and_ttl(backend: Backend, clock: ManualClock) -> None:
    ok = JobResult(job_id="j1", status=JobStatus.COMPLETED, result={"n": [1, "x"]}, completed_at=clock.now())
    bad = JobResult(job_id="j2", status=JobStatus.FAILED, error="kaput", completed_at=clock.now())
    await backend.results.store(ok)
    await backend.results.store(bad)
    assert await backend.results.get("j1") == ok
    assert await backend.results.get("j2") == bad
    assert await backend.results.get("j3") is None
    clock.advance(backend.options.result_success_ttl + 1)
    assert await backend.results.get("j1") is None  # success TTL passed
    assert await backend.results.get("j2") == bad  # failure TTL is longer
    await backend.results.delete("j2")
    await backend.results.delete("j2")
    assert await backend.results.get("j2") is None


async def test_result_wait_wakes_on_store_and_times_out(backend: Backend, clock: ManualClock) -> None:
    with pytest.raises(Timeout):
        await backend.results.wait("late", 0.2)
    result = JobResult(job_id="soon", status=JobStatus.COMPLETED, result=42, completed_at=clock.now())

    async def store_later() -> None:
        await asyncio.sleep(0.3)
        await backend.results.store(result)

    task = asyncio.ensure_future(store_later())
    assert await backend.results.wait("soon", 10) == result
    await task


async def test_cron_tick_fires_once(backend: Backend, clock: ManualClock) -> None:
    tick = clock.now()
    nxt = tick + timedelta(minutes=1)
    jobs = [Job.create("cron", now=tick) for _ in range(5)]
    fired = await asyncio.gather(*(backend.scheduler.fire("s1", tick, job, nxt) for job in jobs))
    assert sorted(fired) == [False] * 4 + [True]
    winner = jobs[fired.index(True)]
    assert (await backend.queue.get_job(winner.id)).status is JobStatus.PENDING
    assert (await backend.queue.depths()).total_ready == 1
    state = await backend.scheduler.state("s1")
    assert state is not None
    assert (state.last_run, state.next_run, state.run_count) == (tick, nxt, 1)
    assert not await backend.scheduler.fire("s1", tick - timedelta(minutes=1), Job.create("cron"), nxt)
    assert await backend.scheduler.fire("s1", nxt, Job.create("cron"), nxt + timedelta(minutes=1))
    assert (await backend.scheduler.state("s1")).run_count == 2  # type: ignore[union-attr]


async def test_cron_record_and_states(backend: Backend, clock: ManualClock) -> None:
    assert await backend.scheduler.state("b") is None
    when = clock.now()
    await backend.scheduler.record("b", next_run=when, last_error="bad")
    await backend.scheduler.record("a", last_success=when)
    await backend.scheduler.record("b", last_error="")
    states = await backend.scheduler.states()
    assert [s.schedule_id for s in states] == ["a", "b"]
    assert states[0].last_success == when
    assert (states[1].next_run, states[1].last_error, states[1].run_count) == (when, "", 0)


async def test_worker_registry_expires_by_clock(backend: Backend, clock: ManualClock) -> None:
    info = WorkerInfo(id="w1", host="h", pid=1, routing_keys=["a"], priorities=["high"], concurrency=4)
    await backend.workers.heartbeat(info, ttl=10)
    await backend.workers.heartbeat(WorkerInfo(id="w0", host="h", pid=2, routing_keys=[], priorities=[],
                                               concurrency=1), ttl=30)  # fmt: skip
    live = await backend.workers.workers()
    assert [w.id for w in live] == ["w0", "w1"]
    assert live[1].routing_keys == ("a",)
    assert live[1].last_heartbeat == clock()
    clock.advance(11)
    assert [w.id for w in await backend.workers.workers()] == ["w0"]
    await backend.workers.deregister("w0")
    await backend.workers.deregister("w0")
    assert await backend.workers.workers() == []

"""Cron storage (documented schedule hashes and lock) and the worker registry on Redis."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import bananas.plugins
import pytest
import redis.asyncio as aioredis
from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.job import Job, JobPriority
from bananas.protocols import WorkerInfo
from bananas.timefmt import format_time

pytestmark = pytest.mark.anyio


async def test_fire_once_per_tick_and_documented_fields(
    backend: Backend, raw: aioredis.Redis, namespace: str, clock: ManualClock
) -> None:
    s = backend.scheduler
    tick = clock.now()
    nxt = tick + timedelta(minutes=1)
    assert await s.fire("nightly", tick, Job.create("report", now=tick), nxt)
    assert not await s.fire("nightly", tick, Job.create("report", now=tick), nxt)
    assert not await s.fire("nightly", tick - timedelta(minutes=1), Job.create("report", now=tick), nxt)
    fields = await raw.hgetall(f"{namespace}:schedules:nightly")
    assert fields == {"last_run": format_time(tick), "next_run": format_time(nxt), "run_count": "1"}
    assert await raw.llen(f"{namespace}:queue:normal") == 1
    assert await s.fire("nightly", nxt, Job.create("report", now=nxt), nxt + timedelta(minutes=1))
    assert await raw.hget(f"{namespace}:schedules:nightly", "run_count") == "2"

    await s.record("nightly", last_success=nxt, last_error="oops")
    state = await s.state("nightly")
    assert state is not None and state.last_error == "oops" and state.last_success == nxt and state.run_count == 2
    await s.record("nightly", last_error="")
    assert await raw.hget(f"{namespace}:schedules:nightly", "last_error") is None
    await s.record("other", next_run=nxt)
    assert [st.schedule_id for st in await s.states()] == ["nightly", "other"]
    assert await s.state("never") is None


async def test_concurrent_schedulers_fire_a_tick_once(
    redis_url: str, namespace: str, clock: ManualClock, raw: aioredis.Redis
) -> None:
    backends = [bananas.plugins.connect(redis_url, namespace=namespace, clock=clock) for _ in range(5)]
    try:
        tick = clock.now()
        fired = await asyncio.gather(
            *(b.scheduler.fire("s", tick, Job.create("x", now=tick), tick + timedelta(seconds=60)) for b in backends)
        )
        assert sorted(fired) == [False] * 4 + [True]
        assert await raw.llen(f"{namespace}:queue:normal") == 1
    finally:
        for b in backends:
            await b.close()


async def test_lock_held_by_a_foreign_scheduler_is_respected(
    backend: Backend, raw: aioredis.Redis, namespace: str, clock: ManualClock
) -> None:
    await raw.set(f"{namespace}:schedule_lock:s", "token-of-go-scheduler", nx=True, ex=60)
    tick = clock.now()
    assert not await backend.scheduler.fire("s", tick, Job.create("x", now=tick), tick)
    assert await raw.llen(f"{namespace}:queue:normal") == 0


async def test_foreign_last_run_with_nanoseconds_is_compared_by_time(
    backend: Backend, raw: aioredis.Redis, namespace: str, clock: ManualClock
) -> None:
    tick = clock.now()
    await raw.hset(f"{namespace}:schedules:s", mapping={"last_run": format_time(tick)[:-1] + ".000000900Z"})
    assert not await backend.scheduler.fire("s", tick, Job.create("x", now=tick), tick)
    later = tick + timedelta(seconds=1)
    assert await backend.scheduler.fire("s", later, Job.create("x", now=later), later)


async def test_worker_registry_expires_by_clock(backend: Backend, clock: ManualClock) -> None:
    w = backend.workers
    info = WorkerInfo(id="w1", host="h", pid=1, routing_keys=["default"], priorities=[JobPriority.HIGH], concurrency=4)
    await w.heartbeat(info, ttl=10)
    await w.heartbeat(WorkerInfo(id="w0", host="h", pid=2, routing_keys=["gpu"], priorities=["low"], concurrency=1), 30)
    assert [x.id for x in await w.workers()] == ["w0", "w1"]
    assert (await w.workers())[1] == info
    clock.advance(11)
    assert [x.id for x in await w.workers()] == ["w0"]
    await w.deregister("w0")
    assert await w.workers() == []

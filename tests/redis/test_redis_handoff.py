"""Idle workers on Redis get jobs handed over by the enqueue that made them ready (one hop).

A worker whose claim finds nothing registers as a waiter in the same script call and blocks
on its inbox; the enqueue claims for it (processing list, lease, status) and pushes the jobs
there. These tests check the stored state with raw commands: a handed-over job is never in
no list and never without a lease, and nothing handed to a worker that stops is lost.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any

import bananas.plugins
import pytest
import redis.asyncio as aioredis
from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.config import WorkerConfig
from bananas.job import Job, JobStatus
from bananas.worker import Executor, Pool, Registry
from bananas_redis.queue import WAITER_GRACE, unpack_inbox
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from waiting import eventually

pytestmark = pytest.mark.anyio


def mk(clock: ManualClock, name: str = "t", **kw: Any) -> Job:
    return Job.create(name, {}, now=clock.now(), **kw)


# A claim_or_wait's own timeout, far longer than any test waits for it: a wait that ends
# within HANDED_WITHIN was ended by a hand-off or a wake-up, not by running out.
WAIT = 60
HANDED_WITHIN = 10


async def wait_registered(raw: aioredis.Redis, ns: str, route: str = "default", count: int = 1) -> None:
    """Return once ``count`` waiters are registered for ``route``."""

    async def registered() -> bool:
        return int(await raw.zcard(f"{ns}:waiting:{route}")) == count

    await eventually(registered, what=f"{count} registered waiter(s) on {route!r}")


async def test_an_idle_waiter_gets_the_job_already_claimed(
    backend: Backend, raw: aioredis.Redis, namespace: str, clock: ManualClock
) -> None:
    q: Any = backend.queue
    waiting = asyncio.ensure_future(q.claim_or_wait(["default"], limit=5, lease=30, waiter="w1", timeout=WAIT))
    await wait_registered(raw, namespace)
    job = mk(clock)
    await q.enqueue(job)
    [got] = await asyncio.wait_for(waiting, HANDED_WITHIN)  # handed over, not found when the wait ran out
    assert got.id == job.id and got.status is JobStatus.PROCESSING
    ns = namespace
    assert await raw.lrange(f"{ns}:queue:processing", 0, -1) == [job.id]
    assert float(await raw.zscore(f"{ns}:queue:leases", job.id) or 0) == pytest.approx(clock() + 30)
    assert json.loads(await raw.get(f"{ns}:job:{job.id}") or "")["status"] == "processing"
    assert await raw.llen(f"{ns}:queue:normal") == 0
    assert await raw.zcard(f"{ns}:waiting:default") == 0  # a waiter is served once
    assert not await raw.exists(f"{ns}:waiter:w1")
    done = await q.complete(got)  # an ordinary claimed job from here on
    assert done.status is JobStatus.COMPLETED
    assert await raw.llen(f"{ns}:queue:processing") == 0


async def test_the_waiter_gets_its_limit_in_its_own_order_and_the_rest_stays_ready(
    backend: Backend, raw: aioredis.Redis, namespace: str, clock: ManualClock
) -> None:
    q: Any = backend.queue
    waiting = asyncio.ensure_future(q.claim_or_wait(["gpu", "default"], limit=2, lease=30, waiter="w", timeout=WAIT))
    await wait_registered(raw, namespace, "gpu")
    low, high, normal = mk(clock, priority="low"), mk(clock, priority="high"), mk(clock)
    gpu = mk(clock, routing_key="gpu", priority="low")
    await q.enqueue_many([low, high, normal, gpu])
    got = await asyncio.wait_for(waiting, HANDED_WITHIN)
    assert [j.id for j in got] == [gpu.id, high.id]
    rest = await q.claim(["default"], limit=10)
    assert [j.id for j in rest] == [normal.id, low.id]


async def test_each_waiter_is_handed_its_share(backend: Backend, raw: aioredis.Redis, namespace: str,
                                               clock: ManualClock) -> None:  # fmt: skip
    q: Any = backend.queue
    one = asyncio.ensure_future(q.claim_or_wait(["default"], limit=1, lease=30, waiter="a", timeout=WAIT))
    two = asyncio.ensure_future(q.claim_or_wait(["default"], limit=1, lease=30, waiter="b", timeout=WAIT))
    await wait_registered(raw, namespace, count=2)
    jobs = [mk(clock) for _ in range(3)]
    await q.enqueue_many(jobs)
    got = [j.id for j in await asyncio.wait_for(one, HANDED_WITHIN)]
    got += [j.id for j in await asyncio.wait_for(two, HANDED_WITHIN)]
    assert sorted(got) == sorted(j.id for j in jobs[:2])
    assert [j.id for j in await q.claim(["default"], limit=5)] == [jobs[2].id]


async def test_a_waiter_for_other_routes_is_not_handed_anything(
    backend: Backend, raw: aioredis.Redis, namespace: str, clock: ManualClock
) -> None:
    q: Any = backend.queue
    waiting = asyncio.ensure_future(q.claim_or_wait(["gpu"], limit=5, lease=30, waiter="g", timeout=0.3))
    await wait_registered(raw, namespace, "gpu")
    job = mk(clock)
    await q.enqueue(job)
    assert await waiting == []
    assert await raw.lrange(f"{namespace}:queue:normal", 0, -1) == [job.id]


async def test_an_expired_registration_is_not_served(
    backend: Backend, raw: aioredis.Redis, namespace: str, clock: ManualClock
) -> None:
    q: Any = backend.queue
    assert await q.claim_or_wait(["default"], limit=5, lease=30, waiter="gone", timeout=0.05) == []
    clock.advance(0.05 + WAITER_GRACE + 0.01)  # the worker never came back (killed, say)
    job = mk(clock)
    await q.enqueue(job)
    assert await raw.lrange(f"{namespace}:queue:normal", 0, -1) == [job.id]
    assert await raw.llen(f"{namespace}:inbox:gone") == 0
    assert [j.id for j in await q.claim_or_wait(["default"], limit=5, lease=30, waiter="next", timeout=0.01)] == [
        job.id
    ]
    assert await q.claim_or_wait(["default"], limit=5, lease=30, waiter="next", timeout=0.01) == []
    assert await raw.zrange(f"{namespace}:waiting:default", 0, -1) == ["next"]  # the stale one is gone


async def test_jobs_handed_over_between_waits_are_taken_by_the_next_call(
    backend: Backend, raw: aioredis.Redis, namespace: str, clock: ManualClock
) -> None:
    q: Any = backend.queue
    assert await q.claim_or_wait(["default"], limit=5, lease=30, waiter="w", timeout=0.05) == []
    job = mk(clock)  # the registration outlives the wait by WAITER_GRACE: the enqueue serves it
    await q.enqueue(job)
    assert await raw.llen(f"{namespace}:inbox:w") == 1
    assert await raw.lrange(f"{namespace}:queue:processing", 0, -1) == [job.id]
    [got] = await asyncio.wait_for(
        q.claim_or_wait(["default"], limit=5, lease=30, waiter="w", timeout=WAIT), HANDED_WITHIN
    )
    assert got.id == job.id
    assert await raw.llen(f"{namespace}:inbox:w") == 0


async def test_stop_waiting_returns_what_was_handed_over_and_unregisters(
    backend: Backend, raw: aioredis.Redis, namespace: str, clock: ManualClock
) -> None:
    q: Any = backend.queue
    assert await q.claim_or_wait(["default"], limit=5, lease=30, waiter="w", timeout=0.05) == []
    job = mk(clock)
    await q.enqueue(job)
    [back] = await q.stop_waiting("w")
    assert back.id == job.id
    await q.release(back)
    assert await raw.lrange(f"{namespace}:queue:normal", 0, -1) == [job.id]
    assert await raw.llen(f"{namespace}:queue:processing") == 0
    assert await raw.zcard(f"{namespace}:waiting:default") == 0
    other = mk(clock)
    await q.enqueue(other)  # no longer served
    assert await raw.llen(f"{namespace}:inbox:w") == 0


async def test_a_promoted_scheduled_job_wakes_a_waiter(
    backend: Backend, raw: aioredis.Redis, namespace: str, clock: ManualClock
) -> None:
    q: Any = backend.queue
    later = Job.create("t", {}, now=clock.now(), scheduled_for=clock.now() + timedelta(seconds=2))
    await q.enqueue(later)
    waiting = asyncio.ensure_future(q.claim_or_wait(["default"], limit=5, lease=30, waiter="w", timeout=WAIT))
    await wait_registered(raw, namespace)
    clock.advance(3)
    assert await q.move_scheduled() == 1
    assert await asyncio.wait_for(waiting, HANDED_WITHIN) == []  # woken, not handed: the next claim takes it
    [got] = await asyncio.wait_for(
        q.claim_or_wait(["default"], limit=5, lease=30, waiter="w", timeout=WAIT), HANDED_WITHIN
    )
    assert got.id == later.id


async def test_wake_waiter_ends_a_wait(backend: Backend, raw: aioredis.Redis, namespace: str) -> None:
    q: Any = backend.queue
    waiting = asyncio.ensure_future(q.claim_or_wait(["default"], limit=5, lease=30, waiter="w", timeout=WAIT))
    await wait_registered(raw, namespace)
    await q.wake_waiter("w")
    assert await asyncio.wait_for(waiting, HANDED_WITHIN) == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ids=st.lists(
        st.text("0123456789:ab λ🍌", min_size=1, max_size=12).filter(lambda i: i == i.strip() and bool(i)),
        min_size=1,
        max_size=4,
        unique=True,
    ),
    payload=st.text(max_size=40),
)  # fmt: skip
async def test_inbox_entries_carry_any_id_and_json_exactly(
    redis_url: str, raw: aioredis.Redis, ids: list[str], payload: str
) -> None:
    ns = f"h{time.monotonic_ns()}"
    backend = bananas.plugins.connect(redis_url, namespace=ns)
    try:
        q: Any = backend.queue
        assert await q.claim_or_wait(["default"], limit=10, lease=30, waiter="w", timeout=0.01) == []
        jobs = [Job.create("t", {"s": payload, "id": i}, job_id=i) for i in ids]
        await q.enqueue_many(jobs)
        async with aioredis.Redis.from_url(redis_url) as plain:
            [entry] = await plain.lrange(f"{ns}:inbox:w", 0, -1)
        unpacked = unpack_inbox(entry)
        assert [x.decode() for x in unpacked[0::3]] == ids
        assert [x.decode() for x in unpacked[1::3]] == [await raw.get(f"{ns}:job:{i}") for i in ids]
        claims = [flag >> 1 for flag in unpacked[2::3]]  # each job its own claim number
        assert len(set(claims)) == len(ids) and all(n > 0 for n in claims)
        got = await asyncio.wait_for(
            q.claim_or_wait(["default"], limit=10, lease=30, waiter="w", timeout=WAIT), HANDED_WITHIN
        )
        assert [(j.id, j.payload) for j in got] == [(j.id, j.payload) for j in jobs]
    finally:
        await backend.close()


async def _idle_again(backend: Backend, plain: aioredis.Redis, ns: str) -> bool:
    """The job is done and the pool is registered as a waiter again."""
    depths = await backend.queue.depths()
    return depths.processing == 0 and int(await plain.zcard(f"{ns}:waiting:default")) == 1


async def test_an_idle_pool_runs_a_job_at_once_and_stops_without_waiting_out_its_poll(redis_url: str) -> None:
    backend = bananas.plugins.connect(redis_url, namespace=f"p{time.monotonic_ns()}")
    ran = asyncio.Event()
    registry = Registry()

    async def handler(ctx: Any, job: Job) -> None:
        ran.set()

    registry.register("t", handler)
    pool = Pool(Executor(registry, backend.queue), backend, WorkerConfig(), poll_interval=WAIT)
    ns = backend.queue.k.ns  # type: ignore[attr-defined]
    plain = aioredis.Redis.from_url(redis_url)
    try:
        await pool.start()
        await wait_registered(plain, ns)  # idle: registered and blocked on its inbox
        await backend.queue.enqueue(Job.create("t", {}))
        await asyncio.wait_for(ran.wait(), HANDED_WITHIN)  # a poll would take WAIT seconds
        await eventually(lambda: _idle_again(backend, plain, ns), what="the pool waiting again")
        await asyncio.wait_for(pool.stop(), HANDED_WITHIN)  # without waiting out its poll
        depths = await backend.queue.depths()
        assert depths.processing == 0 and depths.total_ready == 0
        # nothing of the waiter is left behind
        assert await plain.keys(f"{ns}:inbox:*") == []
        assert await plain.keys(f"{ns}:waiter:*") == []
        assert await plain.zcard(f"{ns}:waiting:default") == 0
    finally:
        await pool.stop(force=True)
        await plain.aclose()
        await backend.close()

"""The Queue contract on Redis: order, leases, reaping, scheduling, dead letters, wake-up."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import bananas.plugins
import pytest
import redis.asyncio as aioredis
from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.errors import BackendUnavailable, DuplicateJob, InvalidJob, JobNotFound, LeaseLost
from bananas.job import Job, JobPriority, JobStatus
from bananas.protocols import LEASE_EXPIRED_ERROR
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.anyio


def mk(clock: ManualClock, name: str = "t", **kw: object) -> Job:
    return Job.create(name, {}, now=clock.now(), **kw)  # type: ignore[arg-type]


async def test_priority_and_routing_order(backend: Backend, clock: ManualClock) -> None:
    q = backend.queue
    low, high, normal = mk(clock, priority="low"), mk(clock, priority="high"), mk(clock)
    gpu = mk(clock, routing_key="gpu", priority="low")
    await q.enqueue_many([low, high, normal, gpu])
    got = await q.claim(["gpu", "default"], limit=10)
    assert [j.id for j in got] == [gpu.id, high.id, normal.id, low.id]


async def test_only_given_priorities_and_limit(backend: Backend, clock: ManualClock) -> None:
    q = backend.queue
    jobs = [mk(clock, priority=p) for p in ("low", "high", "high", "normal")]
    await q.enqueue_many(jobs)
    got = await q.claim(["default"], [JobPriority.LOW, JobPriority.NORMAL], limit=1)
    assert [j.id for j in got] == [jobs[3].id]
    rest = await q.claim(["default"], limit=2)
    assert [j.id for j in rest] == [jobs[1].id, jobs[2].id]


async def test_enqueue_many_is_all_or_nothing(backend: Backend, clock: ManualClock) -> None:
    q = backend.queue
    a = mk(clock)
    await q.enqueue(a)
    with pytest.raises(DuplicateJob):
        await q.enqueue_many([mk(clock), a])
    assert (await q.depths()).total_ready == 1
    with pytest.raises(InvalidJob):
        await q.enqueue(mk(clock).evolve(status=JobStatus.COMPLETED))
    with pytest.raises(JobNotFound):
        await q.get_job("nope")


async def test_lease_is_exclusive_until_reaped(backend: Backend, clock: ManualClock) -> None:
    q = backend.queue
    job = mk(clock, max_retries=2)
    await q.enqueue(job)
    [first] = await q.claim(["default"], lease=10)
    assert await q.claim(["default"]) == []
    clock.advance(5)
    assert await q.renew([first, mk(clock)], lease=10) == {job.id}
    clock.advance(9)
    assert await q.reap_expired() == 0
    clock.advance(2)
    assert await q.reap_expired() == 1
    again = await q.get_job(job.id)
    assert again.status is JobStatus.PENDING and again.attempts == 1 and again.error == LEASE_EXPIRED_ERROR
    assert await q.renew([first]) == set()
    [second] = await q.claim(["default"], lease=10)
    clock.advance(11)
    assert await q.reap_expired() == 1
    dead = await q.get_job(job.id)
    assert dead.status is JobStatus.FAILED and dead.attempts == 2
    assert [j.id for j in await q.dead_letters()] == [job.id]
    result = await backend.results.get(job.id)
    assert result is not None and result.error == LEASE_EXPIRED_ERROR
    # the worker that lost its lease cannot put the job back anywhere
    with pytest.raises(LeaseLost):
        await q.fail(first, "late")
    await q.release(second)
    depths = await q.depths()
    assert (depths.total_ready, depths.processing, depths.dead, depths.scheduled) == (0, 0, 1, 0)


async def test_concurrent_reapers_and_schedulers_move_each_job_once(
    redis_url: str, namespace: str, clock: ManualClock, raw: aioredis.Redis
) -> None:
    backends = [bananas.plugins.connect(redis_url, namespace=namespace, clock=clock) for _ in range(4)]
    try:
        q = backends[0].queue
        await q.enqueue_many([mk(clock) for _ in range(60)])
        await q.claim(["default"], limit=30, lease=5)
        later = [mk(clock, scheduled_for=clock.now() + timedelta(seconds=3)) for _ in range(40)]
        await q.enqueue_many(later)
        clock.advance(6)
        reaped = await asyncio.gather(*(b.queue.reap_expired() for b in backends))
        moved = await asyncio.gather(*(b.queue.move_scheduled() for b in backends))
        assert sum(reaped) == 30 and sum(moved) == 40
        ready = await raw.lrange(f"{namespace}:queue:normal", 0, -1)
        assert len(ready) == len(set(ready)) == 100
    finally:
        for b in backends:
            await b.close()


async def test_release_makes_job_next_in_line(backend: Backend, clock: ManualClock) -> None:
    q = backend.queue
    a, b = mk(clock), mk(clock)
    await q.enqueue_many([a, b])
    [got] = await q.claim(["default"])
    await q.release(got)
    assert [j.id for j in await q.claim(["default"], limit=2)] == [a.id, b.id]
    assert (await q.get_job(a.id)).attempts == 0


async def test_job_name_filter_leaves_others_in_place(backend: Backend, clock: ManualClock) -> None:
    q = backend.queue
    jobs = [mk(clock, "a"), mk(clock, "b"), mk(clock, "a"), mk(clock, "c")]
    await q.enqueue_many(jobs)
    got = await q.claim(["default"], limit=5, job_names={"a", "c"})
    assert [j.id for j in got] == [jobs[0].id, jobs[2].id, jobs[3].id]
    assert [j.id for j in await q.claim(["default"], limit=5)] == [jobs[1].id]


async def test_dead_letter_admin(backend: Backend, clock: ManualClock) -> None:
    q = backend.queue
    jobs = [mk(clock, max_retries=1) for _ in range(3)]
    await q.enqueue_many(jobs)
    for job in await q.claim(["default"], limit=3):
        await q.fail(job, "bad")
    assert [j.id for j in await q.dead_letters()] == [j.id for j in reversed(jobs)]
    assert [j.id for j in await q.dead_letters(limit=1, offset=1)] == [jobs[1].id]
    assert await q.requeue_dead([jobs[0].id, "unknown"]) == 1
    again = await q.get_job(jobs[0].id)
    assert again.status is JobStatus.PENDING and again.attempts == 0 and again.error == ""
    assert await q.purge_dead() == 2
    with pytest.raises(JobNotFound):
        await q.get_job(jobs[1].id)
    assert (await q.depths()).dead == 0


async def test_depths(backend: Backend, clock: ManualClock) -> None:
    q = backend.queue
    await q.enqueue_many([mk(clock), mk(clock, routing_key="gpu", priority="high"), mk(clock, routing_key="gpu")])
    await q.enqueue(mk(clock, scheduled_for=clock.now() + timedelta(hours=1)))
    await q.claim(["gpu"], [JobPriority.HIGH])
    d = await q.depths()
    assert d.ready == {("default", JobPriority.NORMAL): 1, ("gpu", JobPriority.NORMAL): 1}
    assert (d.processing, d.scheduled, d.dead) == (1, 1, 0)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.sampled_from(["default", "gpu", "io"]), st.sampled_from(["high", "normal", "low"])),
        min_size=1, max_size=12,
    ),
    st.permutations(["default", "gpu", "io"]),
    st.integers(1, 5),
)  # fmt: skip
async def test_claim_order_matches_model(
    redis_url: str, jobs: list[tuple[str, str]], order: list[str], limit: int
) -> None:
    import uuid

    clock = ManualClock()
    async with bananas.plugins.connect(redis_url, namespace=f"h{uuid.uuid4().hex[:10]}", clock=clock) as b:
        made = [mk(clock, routing_key=r, priority=p) for r, p in jobs]
        await b.queue.enqueue_many(made)
        rank = {"high": 0, "normal": 1, "low": 2}
        expected = sorted(made, key=lambda j: (order.index(j.routing_key), rank[j.priority.value]))
        got: list[str] = []
        while batch := await b.queue.claim(order, limit=limit):
            assert len(batch) <= limit
            got += [j.id for j in batch]
        assert got == [j.id for j in expected]


async def test_wait_for_work_wakes_on_enqueue(backend: Backend, redis_url: str, namespace: str) -> None:
    q = backend.queue
    started = time.monotonic()
    await q.wait_for_work(["default"], 0.2)  # nothing: waits the timeout
    assert time.monotonic() - started >= 0.19
    async with bananas.plugins.connect(redis_url, namespace=namespace) as producer:

        async def later() -> None:
            await asyncio.sleep(0.2)
            await producer.queue.enqueue(Job.create("x", routing_key="gpu"))
            await producer.queue.enqueue(Job.create("x"))

        task = asyncio.create_task(later())
        started = time.monotonic()
        await q.wait_for_work(["default"], 10)
        assert time.monotonic() - started < 5
        await task


async def test_results_wait(backend: Backend) -> None:
    from bananas.errors import Timeout
    from bananas.job import JobResult

    with pytest.raises(Timeout):
        await backend.results.wait("j", 0.2)

    async def later() -> None:
        await asyncio.sleep(0.1)
        await backend.results.store(JobResult(job_id="j", status=JobStatus.COMPLETED, result=5))

    task = asyncio.create_task(later())
    got = await backend.results.wait("j", 5)
    assert got.result == 5
    await task
    await backend.results.delete("j")
    assert await backend.results.get("j") is None


async def test_unreachable_server_raises_backend_unavailable_with_redacted_url() -> None:
    from servers import free_port

    b = bananas.plugins.connect(f"redis://:secret@127.0.0.1:{free_port()}/0", retry_for=0.3)
    try:
        with pytest.raises(BackendUnavailable) as info:
            await b.queue.ping()
        assert "secret" not in str(info.value) and "***" in str(info.value)
    finally:
        await b.close()


async def test_late_completion_after_reap_is_not_run_again(backend: Backend, clock: ManualClock) -> None:
    q = backend.queue
    job = mk(clock)
    await q.enqueue(job)
    [slow] = await q.claim(["default"], lease=5)
    clock.advance(6)
    assert await q.reap_expired() == 1  # ready again, attempts 1
    with pytest.raises(LeaseLost):  # the slow worker finishes after all: too late, its report is refused
        await q.complete(slow)
    again = await q.get_job(job.id)
    assert (again.status, again.attempts, again.error) == (JobStatus.PENDING, 1, LEASE_EXPIRED_ERROR)
    [retry] = await q.claim(["default"])  # the job runs again, and its record stays consistent
    assert (await q.complete(retry)).status is JobStatus.COMPLETED
    d = await q.depths()
    assert (d.total_ready, d.processing) == (0, 0)


async def test_many_waiters_share_one_subscription(backend: Backend, raw: aioredis.Redis) -> None:
    from bananas.job import JobResult

    waits = [asyncio.create_task(backend.results.wait(f"j{i}", 10)) for i in range(200)]
    for _ in range(100):  # until every waiter has subscribed
        carriers = [int(c["sub"]) for c in await raw.client_list(_type="pubsub") if int(c["sub"]) > 0]
        if sum(carriers) >= 200:
            break
        await asyncio.sleep(0.05)
    assert carriers == [200]  # one connection holds every subscription
    started = time.monotonic()
    for i in range(200):
        await backend.results.store(JobResult(job_id=f"j{i}", status=JobStatus.COMPLETED, result=i))
    assert [r.result for r in await asyncio.gather(*waits)] == list(range(200))
    assert time.monotonic() - started < 5


async def test_waiter_survives_a_dropped_subscription(backend: Backend, raw: aioredis.Redis) -> None:
    from bananas.job import JobResult

    waiting = asyncio.create_task(backend.results.wait("k", 10))
    await asyncio.sleep(0.2)
    await raw.client_kill_filter(_type="pubsub", skipme=True)
    await asyncio.sleep(0.1)
    await backend.results.store(JobResult(job_id="k", status=JobStatus.FAILED, error="e"))
    assert (await waiting).error == "e"

"""Batched settles on Redis: settles of the same moment share one finish_many call, each
keeps its own outcome, and a success can complete the job and store its result at once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import bananas.plugins
import pytest
import redis.asyncio as aioredis
from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.errors import LeaseLost
from bananas.job import Job, JobResult, JobStatus
from bananas.protocols import LEASE_EXPIRED_ERROR
from bananas.worker import Registry
from bananas.worker.executor import Executor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.anyio


def mk(clock: ManualClock, n: int = 0) -> Job:
    return Job.create("t", {"n": n}, now=clock.now())


@pytest.fixture
def scripts(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the Lua scripts the backend's connection runs, in order."""
    conn: Any = backend.queue.conn  # type: ignore[attr-defined]
    names: list[str] = []
    real = conn.call

    async def call(name: str, *args: Any, **kwargs: Any) -> Any:
        names.append(name)
        return await real(name, *args, **kwargs)

    monkeypatch.setattr(conn, "call", call)
    return names


async def test_settles_of_the_same_moment_share_one_script_call(
    backend: Backend, clock: ManualClock, raw: aioredis.Redis, namespace: str, scripts: list[str]
) -> None:
    q = backend.queue
    jobs = [mk(clock, n) for n in range(6)]
    await q.enqueue_many(jobs)
    claimed = await q.claim(["default"], limit=6)
    scripts.clear()
    *done, _, retried = await asyncio.gather(
        *(q.complete(j) for j in claimed[:4]), q.release(claimed[4]), q.fail(claimed[5], "x")
    )
    assert scripts == ["finish_many"]
    assert [j.status if isinstance(j, Job) else None for j in done] == [JobStatus.COMPLETED] * 4
    assert isinstance(retried, Job) and retried.status is JobStatus.PENDING
    stored = [await q.get_job(j.id) for j in jobs]
    assert [j.status for j in stored] == [JobStatus.COMPLETED] * 4 + [JobStatus.PENDING] * 2
    assert (stored[5].attempts, stored[5].error) == (1, "x")
    assert await raw.llen(f"{namespace}:queue:processing") == 0
    assert await raw.zcard(f"{namespace}:queue:leases") == 0
    assert await raw.lrange(f"{namespace}:queue:normal", 0, -1) == [jobs[4].id]
    assert await raw.zrange(f"{namespace}:queue:scheduled", 0, -1) == [jobs[5].id]
    assert await raw.pttl(f"{namespace}:job:{jobs[0].id}") > 0  # completed jobs expire


async def test_a_lone_settle_is_sent_at_once_as_finish(
    backend: Backend, clock: ManualClock, scripts: list[str]
) -> None:
    q = backend.queue
    await q.enqueue(mk(clock))
    [job] = await q.claim(["default"])
    scripts.clear()
    await q.complete(job)
    assert scripts == ["finish"]
    assert (await q.get_job(job.id)).status is JobStatus.COMPLETED


async def test_a_job_taken_back_keeps_its_state_while_the_rest_of_its_batch_settles(
    backend: Backend, clock: ManualClock
) -> None:
    q = backend.queue
    short, long1, long2 = mk(clock, 1), mk(clock, 2), mk(clock, 3)
    await q.enqueue(short)
    [a] = await q.claim(["default"], lease=5)
    await q.enqueue_many([long1, long2])
    b, c = await q.claim(["default"], limit=2, lease=100)
    clock.advance(10)
    assert await q.reap_expired() == 1  # `a` is taken back: attempt 1, ready again
    outcomes = await asyncio.gather(q.fail(a, "late"), q.fail(b, "boom"), q.complete(c), return_exceptions=True)
    assert isinstance(outcomes[0], LeaseLost) and not any(isinstance(o, Exception) for o in outcomes[1:])
    late, failed, completed = [await q.get_job(j.id) for j in (a, b, c)]
    assert (late.status, late.attempts, late.error) == (JobStatus.PENDING, 1, LEASE_EXPIRED_ERROR)
    assert (failed.status, failed.attempts, failed.error) == (JobStatus.PENDING, 1, "boom")
    assert failed.scheduled_for is not None
    assert completed.status is JobStatus.COMPLETED
    assert [j.id for j in await q.claim(["default"], limit=5)] == [a.id]


async def test_complete_and_store_writes_the_same_hash_as_store(
    backend: Backend, clock: ManualClock, raw: aioredis.Redis, namespace: str, scripts: list[str]
) -> None:
    q: Any = backend.queue
    assert q.shares_store_with(backend.results)
    first, second = mk(clock, 1), mk(clock, 2)
    await q.enqueue_many([first, second])
    a, b = await q.claim(["default"], limit=2)
    when = clock.now()
    result_a = JobResult(job_id=a.id, status="completed", result={"ok": [1, 2.5]}, completed_at=when,
                         duration=timedelta(milliseconds=16217))  # fmt: skip
    result_b = JobResult(job_id=b.id, status="completed", result={"ok": [1, 2.5]}, completed_at=when,
                         duration=timedelta(milliseconds=16217))  # fmt: skip
    waiter = asyncio.create_task(backend.results.wait(a.id, 5))
    await asyncio.sleep(0.05)
    scripts.clear()
    stored = await q.complete_and_store(a, result_a)
    assert scripts == ["finish"]  # one call for job and result
    assert stored.status is JobStatus.COMPLETED
    assert await asyncio.wait_for(waiter, 5) == result_a
    await q.complete(b)
    await backend.results.store(result_b)
    hash_a = await raw.hgetall(f"{namespace}:result:{a.id}")
    hash_b = await raw.hgetall(f"{namespace}:result:{b.id}")
    assert hash_a == hash_b and hash_a["duration_ms"] == "16217"
    ttl = await raw.pttl(f"{namespace}:result:{a.id}")
    assert 0 < ttl <= backend.options.result_success_ttl * 1000
    assert (await q.get_job(a.id)).status is JobStatus.COMPLETED


async def test_the_executor_records_a_success_in_one_call_only_on_the_same_store(
    backend: Backend, clock: ManualClock, redis_url: str, namespace: str, scripts: list[str]
) -> None:
    registry = Registry()
    registry.register("t", lambda ctx, job: job.payload["n"] * 2)
    executor = Executor(registry, backend.queue, clock=backend.clock)
    executor.set_result_backend(backend.results)
    await backend.queue.enqueue(mk(clock, 21))
    [job] = await backend.queue.claim(["default"])
    scripts.clear()
    stored = await executor.execute_job(job)
    assert stored is not None and stored.status is JobStatus.COMPLETED
    assert scripts == ["finish"]
    result = await backend.results.get(job.id)
    assert result is not None and result.result == 42

    other = bananas.plugins.connect(redis_url, namespace=namespace, clock=clock)  # another connection
    try:
        executor.set_result_backend(other.results)
        await backend.queue.enqueue(mk(clock, 5))
        [job] = await backend.queue.claim(["default"])
        scripts.clear()
        await executor.execute_job(job)
        assert scripts == ["finish"]  # the result went through the other backend's own call
        result = await other.results.get(job.id)
        assert result is not None and result.result == 10
    finally:
        await other.close()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(outcomes=st.lists(st.sampled_from(["complete", "fail", "release"]), min_size=1, max_size=25))
async def test_a_batch_ends_as_the_same_settles_one_by_one(redis_url: str, outcomes: list[str]) -> None:
    clock = ManualClock()
    ends: list[list[tuple[JobStatus, int]]] = []
    for together in (True, False):
        backend = bananas.plugins.connect(redis_url, namespace=f"p{uuid.uuid4().hex[:12]}", clock=clock)
        try:
            q = backend.queue
            jobs = [mk(clock, n) for n in range(len(outcomes))]
            await q.enqueue_many(jobs)
            claimed = {j.id: j for j in await q.claim(["default"], limit=len(jobs))}
            calls = [
                q.complete(claimed[j.id]) if o == "complete" else
                q.fail(claimed[j.id], "e") if o == "fail" else q.release(claimed[j.id])
                for j, o in zip(jobs, outcomes, strict=True)
            ]  # fmt: skip
            if together:
                await asyncio.gather(*calls)
            else:
                for call in calls:
                    await call
            stored = [await q.get_job(j.id) for j in jobs]
            ends.append([(s.status, s.attempts) for s in stored])
            depths = await q.depths()
            assert depths.processing == 0
            assert depths.total_ready == outcomes.count("release")
            assert depths.scheduled == outcomes.count("fail")
        finally:
            await backend.close()
    assert ends[0] == ends[1]

"""Groups on Redis, checked with raw commands: where grouped jobs wait (never where an original
Go worker or scheduler pops), that plain jobs stay exactly as before, the limits hash, and the
wake-ups that keep an idle worker from sleeping through a freed slot or a grouped enqueue."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any

import bananas.plugins
import pytest
import redis
import redis.asyncio as aioredis
from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.groups import UNREADABLE_LIMIT, GroupLimit
from bananas.job import Job, JobStatus
from ha_servers import pause
from servers import RedisServer

pytestmark = pytest.mark.anyio


def _job(clock: ManualClock, group: str | None = None, **fields: Any) -> Job:
    return Job.create("task", {"n": 1}, now=clock.now(), group=group, **fields)


async def _keys(raw: aioredis.Redis, pattern: str) -> list[str]:
    return sorted([key async for key in raw.scan_iter(match=pattern, count=1000)])


async def test_grouped_jobs_wait_apart_from_what_go_workers_pop(
    backend: Backend, raw: aioredis.Redis, namespace: str, clock: ManualClock
) -> None:
    ns, queue = namespace, backend.queue
    now, later = _job(clock, "tenant-42"), _job(clock, "tenant-42", scheduled_for=clock.now() + timedelta(seconds=30))
    await queue.enqueue_many([now, later])
    assert json.loads(await raw.get(f"{ns}:job:{now.id}") or "{}")["group"] == "tenant-42"
    assert await raw.lrange(f"{ns}:groups:queue:default:normal:tenant-42", 0, -1) == [now.id]
    assert await raw.zrange(f"{ns}:groups:turns:default:normal", 0, -1) == ["", "tenant-42"]
    assert await raw.zrange(f"{ns}:groups:scheduled", 0, -1) == [later.id]
    # what an original Go worker pops and an original Go scheduler moves: nothing of them
    for key in (f"{ns}:queue:normal", f"{ns}:route:default:queue:normal"):
        assert await raw.rpoplpush(key, f"{ns}:queue:processing") is None
    assert await raw.zrangebyscore(f"{ns}:queue:scheduled", "-inf", "+inf") == []
    [claimed] = await queue.claim(["default"], lease=30)
    await queue.fail(claimed, "boom", retry_at=clock.now() + timedelta(seconds=5))  # a retry waits apart too
    assert await raw.zrange(f"{ns}:groups:scheduled", 0, -1) == [now.id, later.id]
    assert await raw.zcard(f"{ns}:queue:scheduled") == 0
    clock.advance(31)
    assert await queue.move_scheduled() == 2
    assert await raw.llen(f"{ns}:groups:queue:default:normal:tenant-42") == 2
    assert await raw.llen(f"{ns}:queue:normal") == 0
    assert (await queue.depths()).ready_for("default") == 2


async def test_plain_jobs_touch_no_group_key(
    backend: Backend, raw: aioredis.Redis, namespace: str, clock: ManualClock
) -> None:
    queue = backend.queue
    job = _job(clock)
    await queue.enqueue(job)
    assert "group" not in json.loads(await raw.get(f"{namespace}:job:{job.id}") or "{}")
    [claimed] = await queue.claim(["default"])
    await queue.complete(claimed)
    assert await _keys(raw, f"{namespace}:groups:*") == []


async def test_the_turns_end_when_only_jobs_without_a_group_are_left(
    backend: Backend, raw: aioredis.Redis, namespace: str, clock: ManualClock
) -> None:
    queue = backend.queue
    plain = [_job(clock) for _ in range(3)]
    grouped = _job(clock, "a")
    await queue.enqueue_many([*plain, grouped])
    order = [job.id for job in await queue.claim(["default"], limit=2)]
    assert order == [plain[0].id, grouped.id], "the jobs without a group take one turn, then the group"
    assert await raw.exists(f"{namespace}:groups:turns:default:normal") == 0, "no grouped work: the plain path again"
    assert [job.id for job in await queue.claim(["default"], limit=5)] == [p.id for p in plain[1:]]


async def test_limits_are_json_in_one_hash_and_an_unreadable_one_holds_its_group_back(
    backend: Backend, raw: aioredis.Redis, namespace: str, clock: ManualClock
) -> None:
    queue: Any = backend.queue
    await queue.set_group_limit("tenant-42", GroupLimit(max_running=2, rate="10/s"))
    assert await raw.hgetall(f"{namespace}:groups:limits") == {"tenant-42": '{"max_running":2,"rate":"10/s"}'}
    await raw.hset(f"{namespace}:groups:limits", "broken", "{not json")
    await queue.enqueue_many([_job(clock, "broken"), _job(clock, "tenant-42")])
    [taken] = await queue.claim(["default"], limit=5)
    assert taken.group == "tenant-42", "a group whose limit nobody can read must be held back"
    assert await queue.get_group_limit("broken") == UNREADABLE_LIMIT
    assert set(await queue.group_limits()) == {"tenant-42"}
    assert await queue.remove_group_limit("broken") is True
    assert [job.group for job in await queue.claim(["default"], limit=5)] == ["broken"]


async def test_a_crashed_workers_slot_is_not_counted_once_its_lease_ran_out(
    backend: Backend, raw: aioredis.Redis, namespace: str, clock: ManualClock
) -> None:
    queue: Any = backend.queue
    await queue.set_group_limit("a", GroupLimit(max_running=1))
    await queue.enqueue_many([_job(clock, "a"), _job(clock, "a")])
    [first] = await queue.claim(["default"], lease=10)
    assert await raw.zrange(f"{namespace}:groups:running:a", 0, -1) == [first.id]
    clock.advance(11)  # the worker died: no settle, no reaper yet
    [second] = await queue.claim(["default"], lease=10)
    assert await raw.zrange(f"{namespace}:groups:running:a", 0, -1) == [second.id], "the dead claim's slot stayed"


async def test_an_idle_worker_is_woken_by_a_grouped_enqueue_and_by_a_freed_slot(
    backend: Backend, clock: ManualClock
) -> None:
    queue: Any = backend.queue
    await queue.set_group_limit("a", GroupLimit(max_running=1))
    waiting = asyncio.ensure_future(queue.claim_or_wait(["default"], waiter="w1", timeout=4))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await queue.enqueue_many([_job(clock, "a"), _job(clock, "a")])
    assert await asyncio.wait_for(waiting, 3) == [], "woken, not handed a grouped job past its limit"
    assert time.monotonic() - started < 2
    [held] = await queue.claim_or_wait(["default"], waiter="w1", timeout=0.1)
    waiting = asyncio.ensure_future(queue.claim_or_wait(["default"], waiter="w1", timeout=4))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await queue.complete(held)
    assert await asyncio.wait_for(waiting, 3) == []
    assert time.monotonic() - started < 2, "a freed slot did not wake the idle worker"
    [nxt] = await queue.claim_or_wait(["default"], waiter="w1", timeout=0.1)
    assert nxt.status is JobStatus.PROCESSING and nxt.group == "a"
    assert await queue.stop_waiting("w1") == []


@pytest.mark.parametrize("limit", [GroupLimit(rate="1/s"), GroupLimit(max_running=1)])
async def test_a_held_back_worker_sleeps_until_the_group_may_start_one(
    backend: Backend, clock: ManualClock, limit: GroupLimit
) -> None:
    """Not the whole timeout, and not a spin: until the start leaves the window (1 s) or the
    lease runs out (1.5 s); the test's clock stands still, so the group stays held back."""
    queue: Any = backend.queue
    await queue.set_group_limit("a", limit)
    await queue.enqueue_many([_job(clock, "a"), _job(clock, "a")])
    await queue.claim(["default"], lease=1.5)
    for how in ("wait_for_work", "claim_or_wait"):
        assert await queue.claim(["default"]) == []
        started = time.monotonic()
        if how == "wait_for_work":
            await queue.wait_for_work(["default"], 10)
        else:
            assert await queue.claim_or_wait(["default"], waiter="w2", timeout=10) == []
        assert 0.7 < time.monotonic() - started < 4, "the wait did not end when the group could start one"
    assert await queue.stop_waiting("w2") == []


async def test_unique_and_blocking_submits_of_grouped_jobs_wait_apart_too(
    redis_url: str, raw: aioredis.Redis, namespace: str
) -> None:
    from bananas import AsyncClient, Client

    async with AsyncClient(redis_url, namespace=namespace) as client:
        first = await client.submit_job("t", group="a", unique_key="k")
        assert await client.submit_job("t", group="a", unique_key="k") == first
        later = await client.submit_job_scheduled("t", None, "normal", 60, group="a", unique_key="k2")
    with Client(redis_url, namespace=namespace) as sync:  # the blocking enqueue path
        from_thread = sync.submit_job("t", group="b")
    assert await raw.lrange(f"{namespace}:groups:queue:default:normal:a", 0, -1) == [first]
    assert await raw.lrange(f"{namespace}:groups:queue:default:normal:b", 0, -1) == [from_thread]
    assert await raw.zrange(f"{namespace}:groups:scheduled", 0, -1) == [later]
    assert await raw.llen(f"{namespace}:queue:normal") == 0 and await raw.zcard(f"{namespace}:queue:scheduled") == 0


async def test_limit_writes_return_once_the_replica_holds_them(replicated: tuple[RedisServer, RedisServer]) -> None:
    master, replica = replicated
    url = f"{master.url}?wait_replicas=1&wait_timeout=0.1&retry_for=60"
    async with bananas.plugins.connect(url, namespace="groups") as backend:
        queue: Any = backend.queue
        await queue.set_group_limit("warm-up", GroupLimit())
        pause(replica, True)
        done = asyncio.ensure_future(queue.set_group_limit("a", GroupLimit(max_running=1)))
        await asyncio.sleep(0.5)
        assert not done.done(), "a limit's write returned while the replica was paused"
        pause(replica, False)
        await done
        assert await queue.remove_group_limit("warm-up") is True
    with redis.Redis(port=replica.port, decode_responses=True) as r:
        assert r.hgetall("groups:groups:limits") == {"a": '{"max_running":1}'}

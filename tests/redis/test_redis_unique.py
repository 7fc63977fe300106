"""Unique keys on Redis, checked with raw commands: the keys it writes, jobs completed by other
implementations (any RFC 3339 time), plain job records, and the sweep of released keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
import redis.asyncio as aioredis
from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.job import Job
from bananas.protocols import UniqueEnqueue
from bananas.unique import UniqueKey
from hypothesis import given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.anyio


async def _submit(backend: Backend, job: Job, key: str, unique_for: float = 0.0) -> str:
    queue = backend.queue
    assert isinstance(queue, UniqueEnqueue)
    [answer] = await queue.enqueue_unique([(job, UniqueKey(key, unique_for))])
    return answer


def _job(clock: ManualClock) -> Job:
    return Job.create("charge", {"order": 7}, now=clock.now())


async def test_a_unique_job_is_a_plain_job_on_the_wire(
    backend: Backend, raw: aioredis.Redis, namespace: str, clock: ManualClock
) -> None:
    """Go workers sharing the Redis see an ordinary job in the ordinary list; the key lives apart."""
    job = _job(clock)
    await _submit(backend, job, "invoice:42", 60)
    assert await raw.get(f"{namespace}:job:{job.id}") == job.to_json()
    assert await raw.lrange(f"{namespace}:queue:normal", 0, -1) == [job.id]
    assert await raw.hgetall(f"{namespace}:unique:invoice:42") == {"job": job.id, "for": "60"}
    assert await raw.zrange(f"{namespace}:unique-keys", 0, -1) == ["invoice:42"]


def _rfc3339(at: datetime, offset_hours: int, digits: int) -> str:
    local = at.astimezone(timezone(timedelta(hours=offset_hours)))
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        nanos = f"{local.microsecond:06d}000"
        text += "." + nanos[:digits]
    return text + ("Z" if offset_hours == 0 else local.strftime("%z")[:3] + ":" + local.strftime("%z")[3:])


@settings(max_examples=30, deadline=None)
@given(
    offset=st.integers(min_value=-12, max_value=14),
    digits=st.sampled_from([0, 3, 6, 9]),
    day=st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9000, 12, 31)),
)
async def test_a_completion_written_elsewhere_holds_the_key_for_its_window(
    redis_url: str, offset: int, digits: int, day: datetime
) -> None:
    """A job completed by another implementation (any offset, up to nanoseconds) holds its key
    for ``unique_for`` seconds from its ``updated_at``, and not a second longer."""
    import uuid

    import bananas.plugins

    finished = day.replace(tzinfo=UTC, microsecond=0)
    clock = ManualClock(finished.timestamp())
    namespace = "t" + uuid.uuid4().hex[:12]
    backend = bananas.plugins.connect(redis_url, namespace=namespace, clock=clock)
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        holder = _job(clock)
        await _submit(backend, holder, "k", 100)
        record = json.loads(holder.to_json()) | {
            "status": "completed",
            "updated_at": _rfc3339(finished, offset, digits),
        }
        await raw.set(f"{namespace}:job:{holder.id}", json.dumps(record))
        await raw.lrem(f"{namespace}:queue:normal", 0, holder.id)
        clock.advance(99.5)
        assert await _submit(backend, _job(clock), "k", 100) == holder.id
        clock.advance(1)
        fresh = _job(clock)
        assert await _submit(backend, fresh, "k", 100) == fresh.id
    finally:
        await backend.close()
        await raw.aclose()


async def test_keys_no_job_holds_are_swept(
    backend: Backend, raw: aioredis.Redis, namespace: str, clock: ManualClock
) -> None:
    for key in ("a", "b"):
        await _submit(backend, _job(clock), key)
        [claimed] = await backend.queue.claim(["default"])
        await backend.queue.complete(claimed)
    clock.advance(1)
    await _submit(backend, _job(clock), "c")
    await _submit(backend, _job(clock), "c")
    assert await raw.exists(f"{namespace}:unique:a", f"{namespace}:unique:b") == 0
    assert await raw.zrange(f"{namespace}:unique-keys", 0, -1) == ["c"]
    assert await raw.exists(f"{namespace}:unique:c") == 1, "a held key was swept"


async def test_with_wait_replicas_an_unconfirmed_unique_submit_raises(redis_url: str, namespace: str) -> None:
    """On a lone master no replica confirms: the unique submit says so instead of returning."""
    import bananas.plugins
    from bananas.errors import BackendUnavailable

    clock = ManualClock()
    url = f"{redis_url}?wait_replicas=1&wait_timeout=0.05"
    async with bananas.plugins.connect(url, namespace=namespace, clock=clock) as backend:
        with pytest.raises(BackendUnavailable, match="0 of 1 replicas"):
            await _submit(backend, _job(clock), "k")
    async with bananas.plugins.connect(redis_url, namespace=namespace, clock=clock) as backend:
        [held] = await backend.queue.claim(["default"])  # it was written, only not confirmed
        assert await _submit(backend, _job(clock), "k") == held.id

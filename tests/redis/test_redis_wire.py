"""The wire format, checked with raw Redis commands on both sides of our backend."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta

import pytest
import redis.asyncio as aioredis
from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.job import Job, JobPriority, JobResult, JobStatus
from bananas.timefmt import format_time

pytestmark = pytest.mark.anyio

GO_TIME = "2025-11-10T09:15:02.123456789Z"


def go_job(job_id: str, *, routing_key: str | None = "default", **more: object) -> str:
    """A job JSON as the Go producers write it (field order, nanoseconds, compact)."""
    d: dict[str, object] = {
        "id": job_id, "name": "send_email", "description": "Welcome email",
        "payload": {"to": "user@example.com", "big": 12345678901234567890123, "f": 0.1},
        "status": "pending", "priority": "normal",
    }  # fmt: skip
    if routing_key is not None:
        d["routing_key"] = routing_key
    d.update({"created_at": GO_TIME, "updated_at": GO_TIME, "attempts": 0, "max_retries": 3})
    d.update(more)
    return json.dumps(d, separators=(",", ":"))


@pytest.mark.parametrize(
    ("routing_key", "ready_key"),
    [
        ("default", "{ns}:queue:normal"),
        (None, "{ns}:queue:normal"),  # a missing routing_key means default
        ("default", "{ns}:route:default:queue:normal"),  # older producers' default route
        ("gpu", "{ns}:route:gpu:queue:normal"),
    ],
)
async def test_foreign_job_is_claimed_completed_and_stored_as_documented(
    backend: Backend, raw: aioredis.Redis, namespace: str, clock: ManualClock, routing_key: str | None, ready_key: str
) -> None:
    ns = namespace
    job_id = "0b8e4c1e-6a4e-4f0f-9a53-0e4f3c2b1a10"
    original = go_job(job_id, routing_key=routing_key, trace_id="abc", x_custom={"n": 1})
    await raw.set(f"{ns}:job:{job_id}", original)
    await raw.lpush(ready_key.format(ns=ns), job_id)

    [job] = await backend.queue.claim([routing_key or "default"], limit=5)
    assert job.id == job_id and job.status is JobStatus.PROCESSING
    assert job.extra == {"trace_id": "abc", "x_custom": {"n": 1}}
    assert await raw.lrange(f"{ns}:queue:processing", 0, -1) == [job_id]
    assert await raw.llen(ready_key.format(ns=ns)) == 0
    claimed_text = await raw.get(f"{ns}:job:{job_id}")
    # one claim call marks it processing; every other byte is the producer's
    assert claimed_text == original.replace('"status":"pending"', '"status":"processing"').replace(
        f'"updated_at":"{GO_TIME}"', f'"updated_at":"{format_time(clock.now())}"'
    )
    stored = json.loads(claimed_text)
    assert stored["status"] == "processing"
    assert stored["created_at"] == GO_TIME  # other implementations' times are kept byte for byte
    assert stored["payload"]["big"] == 12345678901234567890123 and stored["payload"]["f"] == 0.1

    clock.advance(1.5)
    await backend.queue.complete(job)
    text = await raw.get(f"{ns}:job:{job_id}")
    after = json.loads(text)
    before = json.loads(original)
    assert list(after) == list(before)  # same fields, same order
    assert after["status"] == "completed"
    assert after["updated_at"] == format_time(clock.now())
    assert {k: v for k, v in after.items() if k not in ("status", "updated_at")} == {
        k: v for k, v in before.items() if k not in ("status", "updated_at")
    }
    assert '"big":12345678901234567890123' in text and '"f":0.1' in text
    assert 86400 - 5 <= await raw.ttl(f"{ns}:job:{job_id}") <= 86400
    assert await raw.llen(f"{ns}:queue:processing") == 0

    # the result: hash fields, TTL and the notification
    pubsub = raw.pubsub()
    await pubsub.subscribe(f"{ns}:result:notify:{job_id}")
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    done = clock.now()
    await backend.results.store(
        JobResult(job_id=job_id, status=JobStatus.COMPLETED, result={"sent": True}, completed_at=done,
                  duration=timedelta(milliseconds=1234.9))
    )  # fmt: skip
    assert await raw.hgetall(f"{ns}:result:{job_id}") == {
        "status": "completed", "completed_at": format_time(done), "duration_ms": "1234", "result": '{"sent":true}',
    }  # fmt: skip
    assert 3600 - 5 <= await raw.ttl(f"{ns}:result:{job_id}") <= 3600
    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert msg is not None and msg["data"] == "ready"
    await pubsub.aclose()


async def test_failed_result_hash_and_ttl(backend: Backend, raw: aioredis.Redis, namespace: str) -> None:
    await backend.results.store(JobResult(job_id="j1", status=JobStatus.FAILED, error="boom"))
    fields = await raw.hgetall(f"{namespace}:result:j1")
    assert set(fields) == {"status", "completed_at", "duration_ms", "error"}
    assert fields["status"] == "failed" and fields["error"] == "boom" and fields["duration_ms"] == "0"
    assert 86400 - 5 <= await raw.ttl(f"{namespace}:result:j1") <= 86400


async def test_result_written_by_foreign_producer_is_read(
    backend: Backend, raw: aioredis.Redis, namespace: str
) -> None:
    await raw.hset(
        f"{namespace}:result:j2",
        mapping={"status": "completed", "completed_at": "2025-11-10T09:15:02.5+01:00", "duration_ms": "7",
                 "result": "[1,2]"},
    )  # fmt: skip
    got = await backend.results.get("j2")
    assert got is not None and got.result == [1, 2] and got.duration == timedelta(milliseconds=7)
    assert format_time(got.completed_at) == "2025-11-10T08:15:02.5Z"


async def test_our_enqueue_looks_as_documented(
    backend: Backend, raw: aioredis.Redis, namespace: str, clock: ManualClock
) -> None:
    ns = namespace
    first = Job.create("a", {"n": 1}, now=clock.now())
    second = Job.create("b", [1, "x"], priority="high", routing_key="gpu", description="d", now=clock.now())
    third = Job.create("c", None, now=clock.now())
    later = Job.create("d", 1, scheduled_for=clock.now() + timedelta(seconds=30), now=clock.now())
    await backend.queue.enqueue(first)
    await backend.queue.enqueue_many([second, third, later])

    assert await raw.lrange(f"{ns}:queue:normal", 0, -1) == [third.id, first.id]  # LPUSH: FIFO from the right
    assert await raw.lrange(f"{ns}:route:gpu:queue:high", 0, -1) == [second.id]
    assert await raw.zrange(f"{ns}:queue:scheduled", 0, -1, withscores=True) == [(later.id, clock() + 30)]
    stored = json.loads(await raw.get(f"{ns}:job:{second.id}"))
    assert list(stored) == [
        "id", "name", "description", "payload", "status", "priority", "routing_key",
        "created_at", "updated_at", "attempts", "max_retries",
    ]  # fmt: skip
    assert stored["payload"] == [1, "x"] and stored["status"] == "pending" and stored["priority"] == "high"
    assert stored["created_at"] == format_time(clock.now()) and stored["created_at"].endswith("Z")
    sched = json.loads(await raw.get(f"{ns}:job:{later.id}"))
    assert sched["status"] == "scheduled" and sched["scheduled_for"] == format_time(clock.now() + timedelta(seconds=30))
    assert "description" not in sched and "error" not in sched
    assert await raw.ttl(f"{ns}:job:{first.id}") == -1


async def test_retry_then_dead_as_documented(
    backend: Backend, raw: aioredis.Redis, namespace: str, clock: ManualClock
) -> None:
    ns = namespace
    job = Job.create("flaky", {}, max_retries=2, now=clock.now())
    await backend.queue.enqueue(job)
    [claimed] = await backend.queue.claim(["default"])
    retried = await backend.queue.fail(claimed, "first")
    stored = json.loads(await raw.get(f"{ns}:job:{job.id}"))
    assert stored["status"] == "pending" and stored["attempts"] == 1 and stored["error"] == "first"
    assert stored["scheduled_for"] == format_time(clock.now() + timedelta(seconds=2))
    assert await raw.zscore(f"{ns}:queue:scheduled", job.id) == clock() + 2
    assert await raw.ttl(f"{ns}:job:{job.id}") == -1
    assert await raw.llen(f"{ns}:queue:processing") == 0
    assert retried.attempts == 1

    assert await backend.queue.move_scheduled() == 0  # not due yet
    clock.advance(2)
    assert await backend.queue.move_scheduled() == 1
    assert "scheduled_for" not in json.loads(await raw.get(f"{ns}:job:{job.id}"))
    [again] = await backend.queue.claim(["default"])
    dead = await backend.queue.fail(again, "second")
    stored = json.loads(await raw.get(f"{ns}:job:{job.id}"))
    assert stored["status"] == "failed" and stored["attempts"] == 2 and "scheduled_for" not in stored
    assert dead.status is JobStatus.FAILED
    assert await raw.lrange(f"{ns}:queue:dead", 0, -1) == [job.id]
    assert 7 * 86400 - 5 <= await raw.ttl(f"{ns}:job:{job.id}") <= 7 * 86400
    assert await raw.zcard(f"{ns}:queue:scheduled") == 0


async def test_foreign_scheduled_job_with_naive_time_is_moved(
    backend: Backend, raw: aioredis.Redis, namespace: str, clock: ManualClock
) -> None:
    ns = namespace
    text = go_job("s1", routing_key="gpu", status="scheduled", scheduled_for="2025-06-15T15:06:40", priority="low")
    await raw.set(f"{ns}:job:s1", text)
    await raw.zadd(f"{ns}:queue:scheduled", {"s1": int(clock()) - 1})
    assert await backend.queue.move_scheduled() == 1
    assert await raw.lrange(f"{ns}:route:gpu:queue:low", 0, -1) == ["s1"]
    stored = json.loads(await raw.get(f"{ns}:job:s1"))
    assert stored["status"] == "pending" and "scheduled_for" not in stored and stored["created_at"] == GO_TIME


async def test_missing_and_unreadable_jobs_go_to_dead_letters(
    backend: Backend, raw: aioredis.Redis, namespace: str
) -> None:
    ns = namespace
    await raw.lpush(f"{ns}:queue:high", "ghost")
    await raw.set(f"{ns}:job:junk", "{not json")
    await raw.lpush(f"{ns}:queue:high", "junk")
    await raw.set(f"{ns}:job:ok", go_job("ok"))
    await raw.lpush(f"{ns}:queue:normal", "ok")

    claimed = await backend.queue.claim(["default"], limit=3)
    assert [j.id for j in claimed] == ["ok"]  # the worker carries on with the good job
    assert sorted(await raw.lrange(f"{ns}:queue:dead", 0, -1)) == ["ghost", "junk"]
    assert await raw.lrange(f"{ns}:queue:processing", 0, -1) == ["ok"]
    assert await raw.zrange(f"{ns}:queue:leases", 0, -1) == ["ok"]
    assert await raw.get(f"{ns}:job:junk") == "{not json"  # evidence kept
    assert "missing" in await raw.hget(f"{ns}:dead:errors", "ghost")
    junk = await backend.results.get("junk")
    assert junk is not None and junk.status is JobStatus.FAILED and "unreadable" in junk.error
    letters = {j.id: j for j in await backend.queue.dead_letters()}
    assert set(letters) == {"ghost", "junk"} and "missing" in letters["ghost"].error


async def test_publish_wakeup_and_enqueue_in_one_call(backend: Backend, raw: aioredis.Redis, namespace: str) -> None:
    pubsub = raw.pubsub()
    await pubsub.subscribe(f"{namespace}:wakeup")
    await pubsub.get_message(timeout=1)
    await backend.queue.enqueue(Job.create("x", routing_key="gpu", priority=JobPriority.LOW))
    msg = await asyncio.wait_for(pubsub.get_message(ignore_subscribe_messages=True, timeout=2), 3)
    assert msg is not None and msg["data"] == "gpu"
    await pubsub.aclose()


async def test_foreign_fields_survive_retry_reap_and_requeue(
    backend: Backend, raw: aioredis.Redis, namespace: str, clock: ManualClock
) -> None:
    ns = namespace
    original = go_job("r1", trace_id="abc", max_retries=3)
    await raw.set(f"{ns}:job:r1", original)
    await raw.lpush(f"{ns}:queue:normal", "r1")
    q = backend.queue
    [job] = await q.claim(["default"], lease=5)
    await q.fail(job, "boom")  # retry: scheduled set
    clock.advance(2)
    assert await q.move_scheduled() == 1
    await q.claim(["default"], lease=5)
    clock.advance(6)
    assert await q.reap_expired() == 1  # second attempt lost its lease: ready again
    [job] = await q.claim(["default"], lease=5)
    await q.fail(job, "final")  # third attempt: dead
    assert await q.requeue_dead(["r1"]) == 1
    stored = json.loads(await raw.get(f"{ns}:job:r1"))
    before = json.loads(original)
    assert list(stored)[: len(before)] == list(before)  # producer's field order first
    assert stored["trace_id"] == "abc" and stored["created_at"] == GO_TIME
    assert stored["payload"] == before["payload"] and '"big":12345678901234567890123' in await raw.get(f"{ns}:job:r1")
    assert stored["status"] == "pending" and stored["attempts"] == 0 and "error" not in stored
    assert await raw.lrange(f"{ns}:queue:normal", 0, -1) == ["r1"]


GO_JOB_FIELDS: dict[str, type] = {
    "id": str, "name": str, "description": str, "payload": object, "status": str, "priority": str,
    "routing_key": str, "created_at": str, "updated_at": str, "scheduled_for": str, "attempts": int,
    "max_retries": int, "error": str,
}  # fmt: skip
"""The Go services' job struct: its JSON keys and the JSON type each must have."""


def go_reads(text: str) -> dict[str, object]:
    """What the Go services read from a job's JSON: ``encoding/json`` fills the struct's fields and
    ignores every key it has no field for; a known key of the wrong JSON type fails the decode."""
    data = json.loads(text)
    read: dict[str, object] = {}
    for key, kind in GO_JOB_FIELDS.items():
        if key in data:
            value = data[key]
            assert kind is object or (isinstance(value, kind) and not isinstance(value, bool)), (key, value)
            read[key] = value
    return read


async def test_a_traced_job_reads_as_the_go_services_read_it(
    backend: Backend, raw: aioredis.Redis, namespace: str, clock: ManualClock
) -> None:
    from bananas import AsyncClient, observe
    from bananas.tracing.spans import TracingObserver
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    observer = TracingObserver(provider)
    observe.add_observer(observer)
    try:
        async with AsyncClient(backend=backend) as client:
            job_id = await client.submit_job("send_email", {"to": "user@example.com"}, description="Welcome email")
    finally:
        observe.remove_observer(observer)
        provider.shutdown()
    text = await raw.get(f"{namespace}:job:{job_id}")
    stored = json.loads(text)
    assert set(stored) - set(GO_JOB_FIELDS) == {"trace_context"}  # the one new field, an object
    assert set(stored["trace_context"]) == {"traceparent"}  # tracestate only when there is one
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", stored["trace_context"]["traceparent"])
    without = {k: v for k, v in stored.items() if k != "trace_context"}
    assert go_reads(text) == go_reads(json.dumps(without)) == without  # a Go reader sees exactly the job it knew

    [claimed] = await backend.queue.claim(["default"])
    assert claimed.extra == {"trace_context": stored["trace_context"]}
    field = json.dumps({"trace_context": stored["trace_context"]}, separators=(",", ":"))[1:-1]
    assert field in await raw.get(f"{namespace}:job:{job_id}")  # the claim edits status and updated_at only
    await backend.queue.fail(claimed, "boom")  # a retry re-encodes the job: the field stays
    assert json.loads(await raw.get(f"{namespace}:job:{job_id}"))["trace_context"] == stored["trace_context"]


def test_a_job_without_trace_context_reads_as_before() -> None:
    from bananas.tracing.spans import extract
    from opentelemetry import trace

    job = Job.from_json(go_job("g1"))
    assert "trace_context" not in job.extra and job.name == "send_email"
    assert not trace.get_current_span(extract(job)).get_span_context().is_valid  # no parent: a new trace

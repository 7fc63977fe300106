"""The claim script marks a job ``processing`` by editing two values in place: every other
byte of the producer's JSON survives, whatever the payload holds and however it is formatted."""

from __future__ import annotations

import json
import uuid

import bananas.plugins
import pytest
import redis.asyncio as aioredis
from bananas.clock import ManualClock
from bananas.timefmt import format_time
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.anyio

TOKENS = ["a", '"', "\\", "{", "}", "[", "]", ":", ",", " ", "\n", "\u00e9", "\u2603", "status", '"status":"pending"']
tricky_text = st.lists(st.sampled_from(TOKENS), max_size=6).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=False, allow_infinity=False)
    | tricky_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky_text | st.just("status"), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
formats = st.sampled_from([{"separators": (",", ":")}, {"separators": (", ", ": ")}, {"indent": 2}])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=json_values, extra=st.dictionaries(st.sampled_from(["x_a", "trace", "meta"]), json_values), fmt=formats)
async def test_claim_keeps_every_other_byte(
    redis_url: str, payload: object, extra: dict[str, object], fmt: dict[str, object]
) -> None:
    ns = f"e{uuid.uuid4().hex[:10]}"
    clock = ManualClock()
    job_id = str(uuid.uuid4())
    doc = {"id": job_id, "name": "n", "payload": payload, **extra, "status": "pending", "priority": "normal",
           "created_at": "2025-11-10T09:15:02.123456789Z", "updated_at": "2025-11-10T09:15:02Z",
           "attempts": 0, "max_retries": 3}  # fmt: skip
    text = json.dumps(doc, ensure_ascii=False, **fmt)  # type: ignore[arg-type]
    expected = json.dumps(
        {**doc, "status": "processing", "updated_at": format_time(clock.now())},
        ensure_ascii=False,
        **fmt,  # type: ignore[arg-type]
    )
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await raw.set(f"{ns}:job:{job_id}", text)
        await raw.lpush(f"{ns}:queue:normal", job_id)
        async with bananas.plugins.connect(redis_url, namespace=ns, clock=clock) as b:
            [job] = await b.queue.claim(["default"])
        assert await raw.get(f"{ns}:job:{job_id}") == expected
        assert job.payload == json.loads(text)["payload"]
    finally:
        await raw.aclose()


async def test_json_without_top_level_status_is_edited_by_python(redis_url: str) -> None:
    ns = f"e{uuid.uuid4().hex[:10]}"
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    text = '{"id":"j","name":"n","payload":{"status":"pending"},"created_at":"2025-11-10T09:15:02Z"}'
    try:
        await raw.set(f"{ns}:job:j", text)
        await raw.lpush(f"{ns}:queue:normal", "j")
        async with bananas.plugins.connect(redis_url, namespace=ns, clock=ManualClock()) as b:
            [job] = await b.queue.claim(["default"])
            assert job.payload == {"status": "pending"}
        stored = json.loads(await raw.get(f"{ns}:job:j"))
        assert stored["status"] == "processing" and stored["payload"] == {"status": "pending"}
    finally:
        await raw.aclose()

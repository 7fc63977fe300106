"""What the client accepts, a worker can read back and run; no stored record can crash decoding.

One set of limits (bananas.job: nesting, numbers, times, field types) is enforced by every
submit and every decode. These tests submit through the real clients on memory://, write
raw records the way another producer could, and decode deep inside call stacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from bananas import AsyncClient, Client, InvalidJob, Job, JobDecodeError, JobResult, JobStatus, PayloadError
from bananas.backends._memory_store import store_for
from bananas.job import (
    MAX_DEPTH,
    MAX_INT,
    MAX_TIME,
    MIN_INT,
    MIN_TIME,
    backoff_seconds,
    dumps,
    loads,
)
from bananas.testing.strategies import json_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def nested(depth: int, leaf: Any = 1) -> Any:
    """``leaf`` inside ``depth`` levels of alternating lists and dicts."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def at_stack_depth(frames: int, fn: Callable[[], Any]) -> Any:
    """``fn()`` called ``frames`` Python frames deeper (a worker deep in its own call stack),
    leaving it at least 40 frames of its own."""
    return _deeper(min(frames, frames_left() - 40), fn)


def _deeper(frames: int, fn: Callable[[], Any]) -> Any:
    return fn() if frames <= 0 else _deeper(frames - 1, fn)


def frames_left() -> int:
    """How many frames the current stack may still grow by before a RecursionError."""
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back  # type: ignore[assignment]
    return sys.getrecursionlimit() - depth


def job_text(payload_text: str, **fields: str) -> str:
    """A wire-format job whose payload is ``payload_text`` verbatim (another producer's record)."""
    base = {
        "id": "j1",
        "name": "n",
        "status": "pending",
        "priority": "normal",
        "routing_key": "default",
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "attempts": "0",
        "max_retries": "3",
    }
    base.update(fields)
    members = ",".join(f'"{key}":{value if key in ("attempts", "max_retries") else json.dumps(value)}'
                       for key, value in base.items())  # fmt: skip
    return "{" + members + ',"payload":' + payload_text + "}"


@pytest.fixture
def url() -> str:
    return f"memory://limits-{uuid.uuid4().hex}"


@pytest.fixture
def client(url: str) -> Iterator[Client]:
    with Client(url) as c:
        yield c


def stored_ids(url: str) -> set[str]:
    store = store_for(url.removeprefix("memory://"))
    with store.lock:
        return set(store.jobs)


# -- nesting ---------------------------------------------------------------------------------


def test_the_deep_payload_of_the_review_is_refused_at_submit(client: Client, url: str) -> None:
    with pytest.raises(PayloadError, match=f"payload nests arrays and objects more than {MAX_DEPTH} levels deep"):
        client.submit_job("n", nested(985))
    assert stored_ids(url) == set()


def test_a_payload_at_the_limit_is_taken_and_read_back_one_level_more_is_not(client: Client) -> None:
    job_id = client.submit_job("n", nested(MAX_DEPTH))
    assert client.get_job(job_id).payload == nested(MAX_DEPTH)
    with pytest.raises(PayloadError, match=str(MAX_DEPTH)):
        client.submit_job("n", nested(MAX_DEPTH + 1))
    with pytest.raises(PayloadError, match=str(MAX_DEPTH)):
        Job.create("n", nested(MAX_DEPTH + 1))


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 985, 100_000])
def test_a_stored_record_nested_too_deep_is_a_decode_error_at_any_stack_depth(depth: int) -> None:
    text = job_text("[" * depth + "]" * depth)
    for frames in (0, 600, 900):
        with pytest.raises(JobDecodeError, match=f"more than {MAX_DEPTH} levels deep"):
            at_stack_depth(frames, lambda: Job.from_json(text))
        with pytest.raises(JobDecodeError):
            at_stack_depth(frames, lambda: Job.from_json(text.encode()))


def test_a_job_at_the_limit_decodes_and_encodes_deep_in_a_call_stack() -> None:
    job = Job.create("n", nested(MAX_DEPTH), now=NOW)
    text = job.to_json()
    for frames in (0, 500, frames_left() - 100, frames_left() - 40):
        assert at_stack_depth(frames, lambda: Job.from_json(text)) == job
        assert at_stack_depth(frames, lambda: Job.from_json(text.encode())) == job
        assert at_stack_depth(frames, job.to_json) == text
        assert at_stack_depth(frames, lambda: Job.create("n", nested(MAX_DEPTH), now=NOW).payload) == job.payload


def test_a_job_at_the_limit_decodes_inside_nested_asyncio_tasks_and_coroutines() -> None:
    text = Job.create("n", nested(MAX_DEPTH), now=NOW).to_json()

    async def awaited(n: int) -> Job:  # each level is a frame on the stack while it runs
        return Job.from_json(text) if n == 0 else await awaited(n - 1)

    async def tasks(n: int) -> Job:  # nested tasks, the innermost deep in coroutines
        if n == 0:
            return await awaited(frames_left() - 60)
        return await asyncio.create_task(tasks(n - 1))

    assert asyncio.run(tasks(20)).payload == nested(MAX_DEPTH)


def test_brackets_inside_strings_neither_count_nor_hide_nesting() -> None:
    deep_looking = {"text": "[{" * 500, "more": ["]]]", '\\"[[', '{"}'] * 40}
    job = Job.create("n", deep_looking, now=NOW)
    assert Job.from_json(job.to_json()).payload == deep_looking
    # strings that close and reopen real brackets cannot make a deep record look shallow
    disguised = '["]",' * 200 + "1" + ',"["]' * 200
    assert json.loads(disguised) is not None  # valid JSON, 200 levels deep
    with pytest.raises(JobDecodeError, match="levels deep"):
        Job.from_json(job_text(disguised))
    with pytest.raises(PayloadError, match="levels deep"):
        Job.create("n", json.loads(disguised))


# -- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1.5e+309", "123456789e305"])
def test_a_stored_number_json_cannot_write_back_is_a_decode_error(literal: str) -> None:
    with pytest.raises(JobDecodeError, match="unreadable"):
        Job.from_json(job_text(f'{{"x":[{literal}]}}'))
    with pytest.raises(JobDecodeError):
        loads(literal)
    with pytest.raises(JobDecodeError):
        JobResult.from_hash("j", {"status": "completed", "result": literal})


@pytest.mark.parametrize("literal", ["1" * 5000, "-" + "9" * 4301])
def test_a_stored_integer_python_cannot_read_is_a_decode_error(literal: str) -> None:
    with pytest.raises(JobDecodeError, match=r"integer|digits"):
        Job.from_json(job_text(literal))


@pytest.mark.parametrize("literal", [str(MAX_INT + 1), str(MIN_INT - 1), "9" * 30, "12345678901234567890123"])
def test_big_integers_other_producers_write_survive(literal: str) -> None:
    """Peers' payloads carry integers beyond 64 bits; they are read, re-encoded and run as written."""
    job = Job.from_json(job_text(literal))
    assert job.payload == int(literal)
    assert f"{literal}" in job.to_json()
    with pytest.raises(JobDecodeError):  # a count is still a 64-bit whole number
        Job.from_json(job_text("0", attempts=literal))


def test_numbers_at_the_limits_round_trip() -> None:
    payload = {
        "ints": [MAX_INT, MIN_INT, 10**18, MAX_INT + 1, -(10**40)],
        "floats": [1.7976931348623157e308, -5e-324, 1e-300, 1e300],
    }
    job = Job.create("n", payload, now=NOW)
    assert Job.from_json(job.to_json()).payload == payload
    assert loads("1e308") == 1e308 and loads("1e-400") == 0.0


@pytest.mark.parametrize(
    "payload",
    [float("nan"), [float("inf")], {"x": -float("inf")}, 10**5000, [-(10**4400)]],
    ids=["nan", "inf", "-inf", "5000 digits", "-4400 digits"],
)
def test_numbers_beyond_the_limits_are_refused_at_submit(client: Client, url: str, payload: Any) -> None:
    with pytest.raises(PayloadError, match=r"numbers must be finite|4300 digits"):
        client.submit_job("n", payload)
    assert stored_ids(url) == set()


def test_a_stored_job_with_an_overflowing_count_or_duration_is_a_decode_error() -> None:
    for fields in ({"attempts": "1e400"}, {"max_retries": "NaN"}, {"attempts": "-1"}, {"max_retries": "1e300"}):
        with pytest.raises(JobDecodeError, match="unreadable"):
            Job.from_json(job_text("null", **fields))
    for duration in ("inf", "nan", "1e400", "-5", "1e300"):
        with pytest.raises(JobDecodeError, match="duration_ms"):
            JobResult.from_hash("j", {"status": "completed", "duration_ms": duration})


# -- times -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "when",
    [
        datetime.max.replace(tzinfo=timezone(timedelta(hours=-1))),  # overflows on the way to UTC
        datetime.max.replace(tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, tzinfo=UTC),
        float("inf"),
        float("-inf"),
        float("nan"),
        1e12,
        -1e12,
        10**30,
        timedelta(days=10**8),
        timedelta.max,
    ],
)
def test_times_out_of_range_are_refused_at_submit(client: Client, url: str, when: Any) -> None:
    with pytest.raises(InvalidJob, match="scheduled_for") as info:
        client.submit_job_scheduled("n", None, "normal", when)
    assert "1970-01-01T00:00:00Z" in str(info.value) or "finite" in str(info.value)
    with pytest.raises(InvalidJob, match="scheduled_for"):
        client.submit_many([{"name": "ok"}, {"name": "n", "scheduled_for": when}])
    assert stored_ids(url) == set()


def test_the_ends_of_the_time_range_are_accepted(client: Client) -> None:
    late = client.get_job(client.submit_job_scheduled("n", None, "normal", MAX_TIME))
    assert (late.status, late.scheduled_for) == (JobStatus.SCHEDULED, MAX_TIME)
    early = client.get_job(client.submit_job_scheduled("n", None, "normal", MIN_TIME))
    assert (early.status, early.scheduled_for) == (JobStatus.PENDING, None)  # in the past: run now
    assert client.get_job(client.submit_job_scheduled("n", None, "normal", -60.0)).status is JobStatus.PENDING


@pytest.mark.parametrize(
    "scheduled_for",
    ["0001-01-01T00:00:00+01:00", "9999-06-01T00:00:00Z", "1900-01-01T00:00:00Z", "0000-01-01T00:00:00Z"],
)
def test_a_stored_time_out_of_range_is_a_decode_error(scheduled_for: str) -> None:
    with pytest.raises(JobDecodeError, match="unreadable"):
        Job.from_json(job_text("null", status="scheduled", scheduled_for=scheduled_for))


def test_backoff_stays_representable_for_any_allowed_retry_count(url: str) -> None:
    assert backoff_seconds(3) == 8.0
    assert backoff_seconds(100) == backoff_seconds(32) == 2.0**32

    async def run() -> Job:
        async with AsyncClient(url) as c:
            job = Job(name="n", max_retries=100, attempts=90, created_at=NOW, updated_at=NOW)
            await c.backend.queue.enqueue(job)
            (claimed,) = await c.backend.queue.claim(["default"])
            return await c.backend.queue.fail(claimed, "boom")

    retried = asyncio.run(run())
    assert retried.attempts == 91 and retried.scheduled_for is not None
    delay = retried.scheduled_for - retried.updated_at  # float timestamps: within a millisecond
    assert abs(delay - timedelta(seconds=2**32)) < timedelta(milliseconds=1)


# -- field types -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda c: c.submit_job("n", None, "normal", 123), "description must be a string, got int 123"),
        (lambda c: c.submit_job("n", None, "normal", b"x"), "description must be a string"),
        (lambda c: c.submit_job("line\nbreak"), "control character '\\\\n'"),
        (lambda c: c.submit_job("n", job_id="a\tb"), "job id"),
        (lambda c: c.submit_job(42), "job name must be a non-empty string"),
        (lambda c: c.submit_job("n", max_retries=True), "max_retries"),
        (lambda c: c.submit_many([{"name": "ok"}, {"name": "n", "description": 5}]), "job #1: description"),
    ],
)
def test_fields_of_the_wrong_type_are_refused_at_submit(
    client: Client, url: str, call: Callable[[Client], Any], fragment: str
) -> None:
    with pytest.raises(InvalidJob, match=fragment):
        call(client)
    assert stored_ids(url) == set()


@pytest.mark.parametrize(
    "fields",
    [{"description": "5"}, {"error": "[1]"}, {"name": '"a\\nb"'}, {"id": '"x\\u0000"'}, {"name": '""'}],
)
def test_a_stored_field_of_the_wrong_kind_is_a_decode_error(fields: dict[str, str]) -> None:
    data = json.loads(job_text("null"))
    data.update({key: json.loads(value) for key, value in fields.items()})
    with pytest.raises(JobDecodeError, match="unreadable"):
        Job.from_json(json.dumps(data))
    with pytest.raises(JobDecodeError, match="unreadable"):
        Job.from_dict(data)


# -- anything at all: only JobDecodeError ----------------------------------------------------

nasty_fragments = st.sampled_from(
    ["[", "]", "{", "}", '"', "\\", ",", ":", "NaN", "-Infinity", "1e999", "9" * 25, "0", "true", "null", '"a"', " "]
)
nasty_texts = st.one_of(
    st.lists(nasty_fragments, max_size=60).map("".join),
    st.integers(0, 3000).map(lambda n: "[" * n + "]" * n),
    st.builds(lambda n, leaf: "[" * n + leaf + "]" * n, st.integers(0, 200), nasty_fragments),
)


@given(nasty_texts, st.integers(0, 900))
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_decoding_anything_raises_only_job_decode_error(text: str, frames: int) -> None:
    for decode in (
        lambda: Job.from_json(text),
        lambda: Job.from_json(job_text(text)),
        lambda: loads(text),
        lambda: JobResult.from_hash("j", {"status": "completed", "result": text, "duration_ms": text}),
    ):
        with contextlib.suppress(JobDecodeError):
            at_stack_depth(frames, decode)


@given(st.dictionaries(st.sampled_from(["id", "name", "status", "attempts", "scheduled_for", "description"]),
                       st.one_of(json_values(), st.floats(), st.integers(), st.datetimes())))  # fmt: skip
def test_from_dict_of_anything_raises_only_job_decode_error(data: dict[str, Any]) -> None:
    with contextlib.suppress(JobDecodeError):
        Job.from_dict(data)


# -- the property: what submit takes survives the round trip, anywhere -----------------------


def deepen(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


payloads = st.builds(deepen, json_values(), st.integers(0, MAX_DEPTH - 12))


@given(payloads, st.integers(0, 900))
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
def test_whatever_create_accepts_survives_encode_decode_at_any_stack_depth(payload: Any, frames: int) -> None:
    try:
        job = Job.create("n", payload, now=NOW)
    except PayloadError:  # only for a payload beyond the limits
        with pytest.raises(PayloadError):
            dumps(payload, max_depth=MAX_DEPTH)
        return
    text = job.to_json()
    assert Job.from_json(text) == job
    assert at_stack_depth(frames, lambda: Job.from_json(text.encode())) == job
    assert at_stack_depth(frames, job.to_json) == text


@given(json_values(max_leaves=4), st.integers(MAX_DEPTH + 1, MAX_DEPTH + 200))
@settings(max_examples=30)
def test_anything_over_the_nesting_limit_is_refused_at_submit(leaf: Any, depth: int) -> None:
    with pytest.raises(PayloadError, match="levels deep"):
        Job.create("n", deepen(leaf, depth))
    with pytest.raises(JobDecodeError, match="levels deep"):
        Job.from_json(job_text(json.dumps(deepen(leaf, depth))))


@given(st.lists(payloads, min_size=1, max_size=5))
@settings(max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_what_the_client_accepts_a_reader_gets_back(payloads_: list[Any]) -> None:
    async def run() -> None:
        async with AsyncClient(f"memory://limits-{uuid.uuid4().hex}") as c:
            ids = await c.submit_many([{"name": "n", "payload": p} for p in payloads_])

            async def read(job_id: str, depth: int) -> Job:
                if depth:
                    return await asyncio.create_task(read(job_id, depth - 1))
                return await c.get_job(job_id)

            got = [await read(job_id, 50) for job_id in ids]
            assert [j.payload for j in got] == payloads_

    asyncio.run(run())

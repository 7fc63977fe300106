"""The job model and its wire encoding (docs/redis-wire-format.md, "The job JSON")."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta, timezone

import attrs
import pytest
from bananas import (
    InvalidJob,
    InvalidRoutingKey,
    Job,
    JobDecodeError,
    JobPriority,
    JobResult,
    JobStatus,
    PayloadError,
    validate_routing_key,
)
from bananas.job import MAX_INT, MIN_INT, backoff_seconds
from bananas.timefmt import format_time, parse_time
from hypothesis import given
from hypothesis import strategies as st

utf8 = st.characters(blacklist_categories=["Cs"])  # lone surrogates have no UTF-8 form
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=MIN_INT, max_value=MAX_INT)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(utf8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(utf8, max_size=8), children, max_size=4),
    max_leaves=12,
)
JOB_FIELDS = attrs.fields_dict(Job)
aware_times = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))
routing_keys = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
extra_fields = st.dictionaries(
    st.text(min_size=1, max_size=10).map(lambda k: f"x_{k}").filter(lambda k: k.isidentifier() and k not in JOB_FIELDS),
    json_values,
    max_size=3,
)

jobs = st.builds(
    Job,
    name=st.text(st.characters(blacklist_categories=["Cc", "Cs"]), min_size=1, max_size=40).filter(str.strip),
    payload=json_values,
    id=st.uuids().map(str),
    description=st.text(utf8, max_size=30),
    status=st.sampled_from(JobStatus),
    priority=st.sampled_from(JobPriority),
    routing_key=routing_keys,
    created_at=aware_times,
    updated_at=aware_times,
    scheduled_for=st.none() | aware_times,
    attempts=st.integers(0, 50),
    max_retries=st.integers(0, 100),
    error=st.text(utf8, max_size=30),
    extra=extra_fields,
)


@given(jobs)
def test_any_valid_job_survives_encode_decode(job: Job) -> None:
    assert Job.from_json(job.to_json()) == job
    assert Job.from_json(job.to_json().encode()) == job


@given(st.binary(max_size=200))
def test_decoding_arbitrary_bytes_raises_only_our_error(data: bytes) -> None:
    with contextlib.suppress(JobDecodeError):
        Job.from_json(data)


@given(st.dictionaries(st.sampled_from(["id", "name", "status", "priority", "created_at", "attempts"]), json_values))
def test_decoding_arbitrary_objects_raises_only_our_error(data: dict[str, object]) -> None:
    with contextlib.suppress(JobDecodeError):
        Job.from_json(json.dumps(data))


def test_go_producer_job_is_read_exactly() -> None:
    text = (
        '{"id":"0b8e4c1e-6a4e-4f0f-9a53-0e4f3c2b1a10","name":"send_email","description":"Welcome email",'
        '"payload":{"to":"user@example.com"},"status":"pending","priority":"normal","routing_key":"default",'
        '"created_at":"2025-11-10T09:15:02.123456789Z","updated_at":"2025-11-10T09:15:02.123456789Z",'
        '"scheduled_for":"2025-11-10T10:15:02Z","attempts":0,"max_retries":3,"error":"boom"}'
    )
    job = Job.from_json(text)
    assert job.id == "0b8e4c1e-6a4e-4f0f-9a53-0e4f3c2b1a10"
    assert job.payload == {"to": "user@example.com"}
    assert job.created_at == datetime(2025, 11, 10, 9, 15, 2, 123456, tzinfo=UTC)
    assert job.scheduled_for == datetime(2025, 11, 10, 10, 15, 2, tzinfo=UTC)
    assert job.priority is JobPriority.NORMAL and job.status is JobStatus.PENDING
    assert job.error == "boom"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-11-10T09:15:02Z", datetime(2025, 11, 10, 9, 15, 2, tzinfo=UTC)),
        ("2025-11-10T09:15:02.1Z", datetime(2025, 11, 10, 9, 15, 2, 100000, tzinfo=UTC)),
        ("2025-11-10T09:15:02.123456789Z", datetime(2025, 11, 10, 9, 15, 2, 123456, tzinfo=UTC)),
        ("2025-11-10T11:15:02+02:00", datetime(2025, 11, 10, 9, 15, 2, tzinfo=UTC)),
        ("2025-11-10T04:15:02.5-05:00", datetime(2025, 11, 10, 9, 15, 2, 500000, tzinfo=UTC)),
        ("2025-11-10T09:15:02.000001", datetime(2025, 11, 10, 9, 15, 2, 1, tzinfo=UTC)),  # naive: UTC
        ("2025-11-10T09:15:02", datetime(2025, 11, 10, 9, 15, 2, tzinfo=UTC)),
    ],
)
def test_times_are_read_in_every_form_producers_write(text: str, expected: datetime) -> None:
    job = Job.from_dict({"id": "a", "name": "n", "created_at": text, "updated_at": text})
    assert job.created_at == expected
    assert job.created_at.tzinfo is UTC


def test_times_are_written_as_utc_z_with_trailing_zeros_trimmed() -> None:
    created = datetime(2025, 11, 10, 10, 15, 2, 120000, tzinfo=timezone(timedelta(hours=1)))
    data = Job(name="n", created_at=created, updated_at=created.replace(microsecond=0)).to_dict()
    assert data["created_at"] == "2025-11-10T09:15:02.12Z"
    assert data["updated_at"] == "2025-11-10T09:15:02Z"


offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=offsets))
def test_any_aware_time_is_written_as_rfc3339_utc_and_read_back_exactly(value: datetime) -> None:
    text = format_time(value)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d*[1-9])?Z", text), text  # 4-digit year, no "...0Z"
    assert parse_time(text) == value


canonical_like = st.builds(
    lambda y, mo, d, h, mi, se, frac: f"{y}-{mo}-{d}T{h}:{mi}:{se}{frac}Z",
    st.text("0123456789", min_size=4, max_size=4),
    *([st.text("0123456789", min_size=2, max_size=2)] * 5),
    st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=10).map(lambda f: "." + f)),
)


@given(st.one_of(canonical_like, st.text(max_size=40)))
def test_the_fast_path_for_written_times_reads_exactly_like_the_general_parser(text: str) -> None:
    # parse_time hands the shape writers produce to datetime.fromisoformat; whatever the text
    # (leap seconds, year 0, day 31 of a short month, ten fractional digits), the answer or
    # the ValueError is the one of the general RFC 3339 parser.
    from bananas.timefmt import _parse_general

    try:
        expected: datetime | str = _parse_general(text)
    except ValueError:
        expected = "ValueError"
    try:
        got: datetime | str = parse_time(text)
    except ValueError:
        got = "ValueError"
    assert got == expected
    if isinstance(got, datetime):
        assert got.tzinfo is UTC


def test_formatting_a_naive_time_says_what_is_missing() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        format_time(datetime(2025, 1, 1))


def test_empty_optional_fields_are_left_out_and_order_matches_go() -> None:
    data = Job.create("n", {"k": 1}).to_dict()
    assert "description" not in data and "error" not in data and "scheduled_for" not in data
    assert list(data) == [
        "id", "name", "payload", "status", "priority", "routing_key",
        "created_at", "updated_at", "attempts", "max_retries",
    ]  # fmt: skip
    assert json.loads(Job.create("n", {"k": 1}).to_json())["payload"] == {"k": 1}  # embedded, not a string


def test_missing_routing_key_means_default_and_unknown_fields_survive() -> None:
    job = Job.from_dict({"id": "a", "name": "n", "trace_id": "abc", "meta": {"x": [1, 2]}})
    assert job.routing_key == "default"
    again = Job.from_json(job.evolve(status=JobStatus.COMPLETED).to_json())
    assert again.extra == {"trace_id": "abc", "meta": {"x": [1, 2]}}
    assert json.loads(again.to_json())["trace_id"] == "abc"


def test_create_defaults_match_the_original() -> None:
    job = Job.create("send_email", {"to": "x"})
    assert job.routing_key == "default"
    assert job.max_retries == 3
    assert job.status is JobStatus.PENDING
    assert job.attempts == 0
    assert job.created_at.tzinfo is UTC
    assert len(job.id) == 36


def test_create_with_future_time_is_scheduled_and_past_time_runs_now() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    later = Job.create("n", scheduled_for=now + timedelta(hours=1), now=now)
    assert later.status is JobStatus.SCHEDULED
    assert later.scheduled_for == now + timedelta(hours=1)
    earlier = Job.create("n", scheduled_for=now - timedelta(hours=1), now=now)
    assert earlier.status is JobStatus.PENDING
    assert earlier.scheduled_for is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "non-empty"),
        ({"name": "   "}, "non-empty"),
        ({"name": "x" * 300}, "at most 256"),
        ({"name": "n", "payload": {1, 2}}, "not JSON-serialisable"),
        ({"name": "n", "payload": float("nan")}, "numbers must be finite"),
        ({"name": "n", "priority": "urgent"}, "use one of high, normal, low"),
        ({"name": "n", "routing_key": "a b"}, "contains ' '"),
        ({"name": "n", "scheduled_for": datetime(2030, 1, 1)}, "no time zone"),
        ({"name": "n", "max_retries": -1}, "from 0 to 100"),
        ({"name": "n", "max_retries": 1000}, "from 0 to 100"),
    ],
)
def test_bad_input_gets_a_clear_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidJob, match=message):
        Job.create(**kwargs)  # type: ignore[arg-type]


def test_priorities_accept_enum_or_any_case_string() -> None:
    assert Job.create("n", priority="HIGH").priority is JobPriority.HIGH
    assert Job.create("n", priority=JobPriority.LOW).priority is JobPriority.LOW
    assert [p.rank for p in JobPriority] == [0, 1, 2]


@given(routing_keys)
def test_valid_routing_keys_pass(key: str) -> None:
    assert validate_routing_key(key) == key
    assert Job.create("n").set_routing_key(key).routing_key == key


@pytest.mark.parametrize(
    ("key", "message"),
    [("", "is empty"), ("a" * 65, "65 characters"), ("gpu!", "contains '!'"), ("é", "contains 'é'")],
)
def test_invalid_routing_keys_say_what_is_wrong(key: str, message: str) -> None:
    with pytest.raises(InvalidRoutingKey, match=message) as info:
        validate_routing_key(key)
    assert "1-64 characters" in str(info.value)


@given(st.text(max_size=70).filter(lambda k: not k.isascii() or not all(c.isalnum() or c in "_-" for c in k) or not k))
def test_routing_keys_outside_the_rules_are_rejected(key: str) -> None:
    with pytest.raises(InvalidRoutingKey):
        validate_routing_key(key)


@dataclasses.dataclass
class Email:
    to: str
    cc: list[str] = dataclasses.field(default_factory=list)


@attrs.define
class Resize:
    width: int
    height: int


def test_payload_structures_into_dataclasses_and_attrs_classes() -> None:
    assert Job.create("n", {"to": "a@b", "cc": ["c@d"]}).payload_as(Email) == Email("a@b", ["c@d"])
    assert Job.create("n", {"width": 3, "height": 4}).payload_as(Resize) == Resize(3, 4)


def test_payload_that_does_not_fit_names_the_class_and_the_problem() -> None:
    job = Job.create("resize", {"width": "wide"})
    with pytest.raises(PayloadError, match=r"does not fit Resize.*height") as info:
        job.payload_as(Resize)
    assert job.id in str(info.value)


def test_result_hash_matches_the_wire_format() -> None:
    done = datetime(2025, 11, 10, 9, 15, 2, 500000, tzinfo=UTC)
    ok = JobResult(job_id="j", status="completed", result={"n": 1}, completed_at=done, duration=timedelta(seconds=1.5))
    assert ok.to_hash() == {
        "status": "completed",
        "completed_at": "2025-11-10T09:15:02.5Z",
        "duration_ms": "1500",
        "result": '{"n":1}',
    }
    bad = JobResult(job_id="j", status=JobStatus.FAILED, error="boom", completed_at=done)
    assert bad.to_hash() == {
        "status": "failed",
        "completed_at": "2025-11-10T09:15:02.5Z",
        "duration_ms": "0",
        "error": "boom",
    }
    none = JobResult(job_id="j", status="completed", completed_at=done)
    assert "result" not in none.to_hash()


@given(json_values, st.integers(0, 10**7))
def test_results_round_trip_through_the_hash(value: object, millis: int) -> None:
    result = JobResult(
        job_id="j", status="completed", result=value, completed_at=datetime(2025, 1, 1, tzinfo=UTC),
        duration=timedelta(milliseconds=millis),
    )  # fmt: skip
    back = JobResult.from_hash("j", {k.encode(): v.encode() for k, v in result.to_hash().items()})
    assert back == result
    assert back.is_success() and not back.is_failed()


def test_result_must_be_final_and_decodes_into_classes() -> None:
    with pytest.raises(InvalidJob, match="completed, failed or cancelled"):
        JobResult(job_id="j", status="pending")
    assert JobResult(job_id="j", status="completed", result={"width": 1, "height": 2}).result_as(Resize) == Resize(1, 2)
    with pytest.raises(JobDecodeError):
        JobResult.from_hash("j", {"status": "completed", "result": "{not json"})


def test_backoff_doubles() -> None:
    assert [backoff_seconds(a) for a in range(1, 5)] == [2, 4, 8, 16]


@given(jobs)
def test_an_unchecked_copy_equals_the_checked_one(job: Job) -> None:
    from bananas.job import unchecked_copy

    at = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    changes = {"status": JobStatus.COMPLETED, "updated_at": at, "scheduled_for": None, "lease_token": "t"}
    copy = unchecked_copy(job, **changes)
    assert copy == job.evolve(**changes) and copy.lease_token == "t"
    assert Job.from_json(copy.to_json()) == copy  # what it reports is what a store reads back
    assert copy is not job
    with pytest.raises(TypeError, match="no field"):
        unchecked_copy(job, stauts=JobStatus.COMPLETED)

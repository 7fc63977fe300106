"""Groups with limits in the core: names, rates and limits checked once, the job field on the
wire, every client submit path, the limit methods, and a backend without the capability."""

from __future__ import annotations

import json
import string
import uuid

import pytest
from bananas import AsyncClient, Client, GroupLimit, InvalidGroup, InvalidJob, Job, Rate
from bananas.backend import BackendOptions
from bananas.backends.memory import CAPABILITIES, memory_backend, store_for
from bananas.capabilities import Capability
from bananas.errors import CapabilityNotSupported, JobDecodeError
from bananas.groups import (
    MAX_GROUP_LENGTH,
    NO_LIMIT,
    counted_starts,
    effective_limit,
    next_start_at,
    rate_admits,
    validate_group,
    validate_limit_target,
)
from hypothesis import given
from hypothesis import strategies as st

GROUP_CHARS = string.ascii_letters + string.digits + "_-.:@"


def _url() -> str:
    return "memory://groups-" + uuid.uuid4().hex


@given(st.text(GROUP_CHARS, min_size=1, max_size=MAX_GROUP_LENGTH))
def test_every_name_of_the_allowed_characters_is_a_group(name: str) -> None:
    assert validate_group(name) == name
    job = Job.create("t", group=name)
    assert Job.from_json(job.to_json()).group == name


@given(st.text(min_size=0, max_size=200).filter(lambda s: not (0 < len(s) <= 128 and set(s) <= set(GROUP_CHARS))))
def test_any_other_name_is_refused_saying_what_is_allowed(name: str) -> None:
    with pytest.raises(InvalidGroup, match="use 1-128 characters of ASCII letters, digits"):
        validate_group(name)


def test_star_names_the_default_not_a_group() -> None:
    with pytest.raises(InvalidGroup, match="default limit"):
        Job.create("t", group="*")
    assert validate_limit_target("*") == "*"


def test_a_plain_job_is_encoded_exactly_as_before() -> None:
    job = Job.create("t", {"a": 1}, job_id="j1")
    data = json.loads(job.to_json())
    assert "group" not in data
    assert list(data) == [
        "id", "name", "payload", "status", "priority", "routing_key", "created_at", "updated_at",
        "attempts", "max_retries",
    ]  # fmt: skip
    grouped = job.evolve(group="tenant-42")
    assert json.loads(grouped.to_json()) == {**data, "group": "tenant-42"}


@pytest.mark.parametrize("value", ['"*"', "42", '""', '"has space"'])
def test_a_stored_job_with_a_bad_group_is_unreadable_alone(value: str) -> None:
    text = '{"id": "j", "name": "t", "group": ' + value + "}"
    with pytest.raises(JobDecodeError, match="group"):
        Job.from_json(text)


@pytest.mark.parametrize(
    ("text", "rate"),
    [("10/s", Rate(10, 1.0)), ("100/m", Rate(100, 60.0)), (" 5 / h ", Rate(5, 3600.0)), ("100000/s", Rate(100000, 1))],
)
def test_rates_parse_and_print(text: str, rate: Rate) -> None:
    assert Rate.parse(text) == rate
    assert Rate.parse(str(rate)) == rate


@pytest.mark.parametrize("text", ["10", "0/s", "ten/s", "10/d", "-1/m", "100001/s", "1.5/s", "", "10/sec", 10])
def test_bad_rates_say_what_is_allowed(text: object) -> None:
    with pytest.raises(InvalidGroup, match=r"COUNT/UNIT"):
        Rate.parse(text)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-1, 1_000_001, 1.5, True, "2"])
def test_bad_max_running_is_refused(value: object) -> None:
    with pytest.raises(InvalidGroup, match="max_running"):
        GroupLimit(max_running=value)  # type: ignore[arg-type]


@given(
    st.builds(
        GroupLimit,
        max_running=st.none() | st.integers(0, 1_000_000),
        rate=st.none() | st.builds(Rate, st.integers(1, 100_000), st.sampled_from([1.0, 60.0, 3600.0])),
    )
)
def test_a_limit_survives_its_stored_form(limit: GroupLimit) -> None:
    assert GroupLimit.from_json(limit.to_json()) == limit


@pytest.mark.parametrize("text", ["nope", "[]", '{"max_running": -1}', '{"rate": 5}', '{"other": 1}'])
def test_an_unreadable_stored_limit_is_a_decode_error(text: str) -> None:
    with pytest.raises(JobDecodeError, match="group limit"):
        GroupLimit.from_json(text)


def test_the_default_applies_only_without_an_own_limit() -> None:
    default, own = GroupLimit(max_running=1), GroupLimit(rate="5/s")
    assert effective_limit(None, default) == default
    assert effective_limit(own, default) == own, "an own limit replaces the default entirely"
    assert effective_limit(GroupLimit(), default) == NO_LIMIT
    assert effective_limit(None, None) == NO_LIMIT


@given(st.lists(st.floats(0, 200, allow_nan=False), max_size=12), st.floats(0, 200, allow_nan=False))
def test_a_rate_spaces_starts_per_over_count_apart(starts: list[float], now: float) -> None:
    rate = Rate(3, 60.0)
    counted = counted_starts(starts, rate, now)
    assert counted == len([t for t in starts if t + 20 > now])
    assert rate_admits(starts, rate, now) == (counted == 0)
    at = next_start_at(starts, rate, now)
    assert at >= now
    assert rate_admits(starts, rate, at), "next_start_at named a time the rate does not admit"
    assert at == now or not rate_admits(starts, rate, now)


@pytest.mark.anyio
async def test_every_async_submit_path_takes_a_group() -> None:
    async with AsyncClient(_url()) as client:
        ids = [
            await client.submit_job("t", group="a"),
            await client.submit_job_with_route("t", None, "normal", "gpu", group="b"),
            await client.submit_job_scheduled("t", None, "normal", 30, group="c"),
            *await client.submit_many([{"name": "t", "group": "d"}, Job.create("t", group="e"), {"name": "t"}]),
            await client.submit_job("t", group="f", unique_key="k"),
        ]
        groups = [(await client.get_job(job_id)).group for job_id in ids]
        assert groups == ["a", "b", "c", "d", "e", None, "f"]


def test_the_sync_client_takes_groups_and_limits() -> None:
    with Client(_url()) as client:
        job_id = client.submit_job("t", group="a")
        many = client.submit_many([{"name": "t", "group": "b"}])
        assert client.get_job(job_id).group == "a" and client.get_job(many[0]).group == "b"
        assert client.set_group_limit("a", max_running=2, rate="10/s") == GroupLimit(max_running=2, rate="10/s")
        assert client.get_group_limit("a") == GroupLimit(max_running=2, rate=Rate(10, 1.0))
        assert client.group_limits() == {"a": GroupLimit(max_running=2, rate="10/s")}
        assert client.remove_group_limit("a") is True
        assert client.remove_group_limit("a") is False
        assert client.get_group_limit("a") is None


@pytest.mark.anyio
async def test_limits_through_the_async_client_and_bad_input_stores_nothing() -> None:
    async with AsyncClient(_url()) as client:
        await client.set_group_limit("*", max_running=3)
        await client.set_group_limit("tenant-42", rate=Rate(100, 60.0))
        assert await client.group_limits() == {"*": GroupLimit(max_running=3), "tenant-42": GroupLimit(rate="100/m")}
        for bad in ({"max_running": -1}, {"rate": "fast"}):
            with pytest.raises(InvalidGroup):
                await client.set_group_limit("x", **bad)
        with pytest.raises(InvalidGroup, match="invalid group"):
            await client.set_group_limit("no spaces", max_running=1)
        with pytest.raises(InvalidJob):
            await client.submit_job("t", group="no spaces")
        assert set(await client.group_limits()) == {"*", "tenant-42"}
        assert (await client.backend.queue.depths()).total_ready == 0


@pytest.mark.anyio
async def test_without_the_capability_a_grouped_submit_writes_nothing() -> None:
    store = store_for("groups-none-" + uuid.uuid4().hex)
    backend = memory_backend(store, BackendOptions(), capabilities=CAPABILITIES - {Capability.GROUPS})
    async with AsyncClient(backend=backend) as client:
        with pytest.raises(CapabilityNotSupported, match="groups"):
            await client.submit_job("t", group="a")
        with pytest.raises(CapabilityNotSupported, match="groups"):
            await client.submit_many([{"name": "t"}, {"name": "t", "group": "a"}])
        with pytest.raises(CapabilityNotSupported, match="groups"):
            await client.submit_many([Job.create("t", group="a")])
        with pytest.raises(CapabilityNotSupported, match="groups"):
            await client.submit_job("t", group="a", unique_key="k")
        with pytest.raises(CapabilityNotSupported, match="groups"):
            await client.set_group_limit("a", max_running=1)
        assert (await client.backend.queue.depths()).total_ready == 0
        await client.submit_job("t")  # plain jobs as ever


@given(st.integers(1, 50), st.sampled_from([1.0, 60.0, 3600.0]), st.integers(1, 200))
def test_starts_admitted_one_by_one_never_crowd_a_window(count: int, per: float, jobs: int) -> None:
    """Starting jobs as early as the rate admits: never more than ``count`` in any ``per``, and
    the pace is the rate's (``jobs`` starts span ``(jobs - 1) * per / count``)."""
    rate = Rate(count, per)
    starts: list[float] = []
    now = 0.0
    for _ in range(jobs):
        now = next_start_at(starts, rate, now)
        assert rate_admits(starts, rate, now)
        starts.append(now)
    assert all(later - first >= per - 1e-9 for first, later in zip(starts, starts[count:], strict=False))
    assert starts[-1] == pytest.approx((jobs - 1) * per / count)

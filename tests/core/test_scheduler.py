"""Cron schedules: validation, tick arithmetic across time zones and DST, and CronScheduler
firing each tick once on memory:// with a hand-moved clock (no sleeping for minutes)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from bananas import Backend, BackendUnavailable, Capability, ManualClock, ScheduleError, connect
from bananas.backend import BackendOptions
from bananas.protocols import Scheduler
from bananas.scheduler import CRON_FORMAT, CronScheduler, Schedule

NY = ZoneInfo("America/New_York")
PARIS = ZoneInfo("Europe/Paris")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def local(
    zone: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0, *, fold: int = 0
) -> datetime:
    """The UTC instant of a wall-clock time in ``zone`` (``fold=1``: the second of a repeated time)."""
    return datetime(year, month, day, hour, minute, tzinfo=zone, fold=fold).astimezone(UTC)


def walls(ticks: list[datetime], zone: ZoneInfo) -> list[str]:
    return [t.astimezone(zone).strftime("%m-%d %H:%M%z") for t in ticks]


# -- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "problem"),
    [
        ("* * * *", "it has 4 fields, not 5"),
        ("* * * * * *", "it has 6 fields, not 5"),
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("61 * * * *", "out of range"),
        ("* 24 * * *", "out of range"),
        ("* * 32 * *", "out of range"),
        ("* * * 13 *", "out of range"),
        ("* * * * 9", "out of range"),
        ("every minute please", "5"),
        ("R * * * *", "random fields"),
        ("*/0 * * * *", ""),
    ],
)
def test_invalid_cron_is_rejected_with_the_reason_and_the_format(cron: str, problem: str) -> None:
    with pytest.raises(ScheduleError) as err:
        Schedule(id="report", cron=cron, job="generate_report")
    message = str(err.value)
    assert "schedule 'report'" in message
    assert problem in message
    assert CRON_FORMAT in message


def test_a_cron_that_never_matches_is_rejected() -> None:
    with pytest.raises(ScheduleError, match="never matches"):
        Schedule(id="feb30", cron="0 0 30 2 *", job="j")


def test_a_non_string_cron_is_rejected() -> None:
    with pytest.raises(ScheduleError, match="must be a string, not int"):
        Schedule(id="s", cron=5, job="j")  # type: ignore[arg-type]


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "America/NewYork", "../etc/passwd", "UTC+99"])
def test_unknown_time_zone_is_rejected(zone: str) -> None:
    with pytest.raises(ScheduleError) as err:
        Schedule(id="s", cron="* * * * *", job="j", timezone=zone)
    assert f"unknown time zone {zone!r}" in str(err.value)
    assert "IANA" in str(err.value)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"id": ""}, "schedule id"),
        ({"id": " padded "}, "schedule id"),
        ({"job": ""}, "job must name a registered handler"),
        ({"priority": "urgent"}, "invalid priority 'urgent'"),
        ({"routing_key": "no spaces"}, "invalid routing key"),
        ({"payload": {1, 2}}, "not JSON-serialisable"),
        ({"max_retries": -1}, "max_retries"),
    ],
)
def test_other_bad_fields_are_rejected_at_creation(fields: dict[str, object], fragment: str) -> None:
    values: dict[str, object] = {"id": "s", "cron": "* * * * *", "job": "j", **fields}
    with pytest.raises(ScheduleError, match=fragment):
        Schedule(**values)  # type: ignore[arg-type]


def test_valid_schedule_keeps_its_fields_and_normalises() -> None:
    s = Schedule(
        id="daily-report",
        cron=" 0  9 * *   MON-FRI ",
        job="generate_report",
        payload={"type": "daily"},
        priority="HIGH",
        timezone="America/New_York",
        description="weekday report",
        routing_key="reports",
    )
    assert s.cron == "0 9 * * MON-FRI"
    assert s.priority.value == "high"
    assert s.zone() == NY
    assert Schedule(id="h", cron="@hourly", job="j").cron == "0 * * * *"
    assert Schedule(id="u", cron="* * * * *", job="j", timezone="").timezone is None


def test_make_job_carries_the_schedule_fields() -> None:
    s = Schedule(id="s", cron="* * * * *", job="ping", payload={"x": 1}, priority="low", routing_key="ops")
    now = utc(2026, 1, 1, 0, 0, 5)
    job = s.make_job(utc(2026, 1, 1), now)
    assert (job.name, job.payload, job.priority.value, job.routing_key) == ("ping", {"x": 1}, "low", "ops")
    assert job.status.value == "pending"
    assert job.created_at == now
    assert job.description == "cron s at 2026-01-01T00:00:00Z"


# -- tick arithmetic --------------------------------------------------------------------------


def test_every_minute_ticks() -> None:
    s = Schedule(id="s", cron="* * * * *", job="j")
    now = utc(2026, 5, 4, 10, 7, 42)
    assert s.latest_tick(now) == utc(2026, 5, 4, 10, 7)
    assert s.next_tick(now) == utc(2026, 5, 4, 10, 8)
    assert s.latest_tick(utc(2026, 5, 4, 10, 7)) == utc(2026, 5, 4, 10, 7)  # a tick is due at its own instant
    assert s.next_tick(utc(2026, 5, 4, 10, 7)) == utc(2026, 5, 4, 10, 8)
    assert len(list(s.ticks(utc(2026, 5, 4, 10), utc(2026, 5, 4, 11)))) == 60


def test_hourly_ticks() -> None:
    s = Schedule(id="s", cron="0 * * * *", job="j")
    ticks = list(s.ticks(utc(2026, 5, 4, 10, 30), utc(2026, 5, 4, 14, 0)))
    assert ticks == [utc(2026, 5, 4, h) for h in (11, 12, 13, 14)]


def test_weekday_ticks() -> None:
    s = Schedule(id="s", cron="0 9 * * 1-5", job="j")
    # 2026-05-04 is a Monday
    ticks = list(s.ticks(utc(2026, 5, 3), utc(2026, 5, 10, 23)))
    assert ticks == [utc(2026, 5, d, 9) for d in (4, 5, 6, 7, 8)]
    assert s.latest_tick(utc(2026, 5, 10, 12)) == utc(2026, 5, 8, 9)  # Sunday: last run was Friday


def test_per_schedule_time_zones_and_the_scheduler_default() -> None:
    paris = Schedule(id="p", cron="0 9 * * *", job="j", timezone="Europe/Paris")
    york = Schedule(id="n", cron="0 9 * * *", job="j", timezone="America/New_York")
    floating = Schedule(id="f", cron="0 9 * * *", job="j")
    after = utc(2026, 7, 1)
    assert paris.next_tick(after) == local(PARIS, 2026, 7, 1, 9) == utc(2026, 7, 1, 7)
    assert york.next_tick(after) == utc(2026, 7, 1, 13)
    assert floating.next_tick(after) == utc(2026, 7, 1, 9)
    assert floating.next_tick(after, ZoneInfo("Asia/Tokyo")) == utc(2026, 7, 2, 0)
    assert paris.next_tick(after, ZoneInfo("Asia/Tokyo")) == utc(2026, 7, 1, 7)  # its own zone wins


def test_spring_forward_skips_the_missing_hour() -> None:
    daily = Schedule(id="d", cron="30 2 * * *", job="j", timezone="America/New_York")
    ticks = list(daily.ticks(utc(2026, 3, 7), utc(2026, 3, 10)))
    assert walls(ticks, NY) == ["03-07 02:30-0500", "03-09 02:30-0400"]  # 2026-03-08 02:30 does not exist
    half_hourly = Schedule(id="h", cron="*/30 * * * *", job="j", timezone="America/New_York")
    ticks = list(half_hourly.ticks(local(NY, 2026, 3, 8, 0, 45), local(NY, 2026, 3, 8, 4, 0)))
    assert walls(ticks, NY) == [
        "03-08 01:00-0500",
        "03-08 01:30-0500",
        "03-08 03:00-0400",
        "03-08 03:30-0400",
        "03-08 04:00-0400",
    ]
    assert [b - a for a, b in itertools.pairwise(ticks)] == [timedelta(minutes=30)] * 4


def test_fall_back_fires_a_repeated_time_once() -> None:
    daily = Schedule(id="d", cron="30 1 * * *", job="j", timezone="America/New_York")
    ticks = list(daily.ticks(utc(2026, 10, 31), utc(2026, 11, 3)))
    assert walls(ticks, NY) == ["10-31 01:30-0400", "11-01 01:30-0400", "11-02 01:30-0500"]
    hourly = Schedule(id="h", cron="0 * * * *", job="j", timezone="America/New_York")
    ticks = list(hourly.ticks(local(NY, 2026, 11, 1, 0, 30), local(NY, 2026, 11, 1, 3, 30)))
    assert walls(ticks, NY) == ["11-01 01:00-0400", "11-01 02:00-0500", "11-01 03:00-0500"]


def test_latest_tick_during_the_repeated_hour_is_the_last_first_occurrence() -> None:
    s = Schedule(id="s", cron="*/15 * * * *", job="j", timezone="America/New_York")
    second_pass = local(NY, 2026, 11, 1, 1, 10, fold=1)  # 01:10 EST, after 01:59 EDT already happened
    assert walls([s.latest_tick(second_pass)], NY) == ["11-01 01:45-0400"]  # type: ignore[list-item]
    assert walls([s.next_tick(second_pass)], NY) == ["11-01 02:00-0500"]  # type: ignore[list-item]


# -- CronScheduler on memory:// -----------------------------------------------------------------


START = utc(2026, 5, 4, 9, 0)  # a Monday


@pytest.fixture
def clock() -> ManualClock:
    """Starts at New Year 2026; tests move it forward (it never goes back)."""
    return ManualClock(utc(2026, 1, 1))


@pytest.fixture
def namespace() -> str:
    return f"cron-{uuid.uuid4().hex}"


@pytest.fixture
async def backend(clock: ManualClock, namespace: str) -> AsyncIterator[Backend]:
    async with connect("memory://", clock=clock, namespace=namespace) as b:
        yield b


async def fired_ticks(backend: Backend, routing_key: str = "default") -> list[str]:
    """The ticks of every job the schedulers submitted (from the descriptions), in claim order."""
    jobs = await backend.queue.claim([routing_key], limit=100_000)
    return [job.description.rsplit(" at ", 1)[1] for job in jobs]


async def run_minutes(cron: CronScheduler, clock: ManualClock, minutes: int, *, per_minute: int = 2) -> int:
    fired = 0
    for _ in range(minutes):
        for _ in range(per_minute):
            fired += await cron.tick()
            clock.advance(60 / per_minute)
    return fired


@pytest.mark.anyio
async def test_every_minute_fires_once_per_minute(backend: Backend, clock: ManualClock) -> None:
    clock.set(START)
    cron = CronScheduler(backend, [Schedule(id="m", cron="* * * * *", job="ping")])
    assert await run_minutes(cron, clock, 10, per_minute=4) == 10
    ticks = await fired_ticks(backend)
    assert ticks == [f"2026-05-04T09:{m:02d}:00Z" for m in range(10)]
    state = await backend.scheduler.state("m")
    assert state is not None
    assert (state.run_count, state.last_run, state.next_run) == (10, utc(2026, 5, 4, 9, 9), utc(2026, 5, 4, 9, 10))


@pytest.mark.anyio
async def test_hourly_and_weekday_schedules(backend: Backend, clock: ManualClock) -> None:
    clock.set(utc(2026, 5, 1, 0, 0))  # a Friday
    cron = CronScheduler(
        backend,
        [
            Schedule(id="hourly", cron="0 * * * *", job="h", routing_key="hourly"),
            Schedule(id="weekday", cron="0 9 * * 1-5", job="w", routing_key="weekday"),
        ],
    )
    for _ in range(8 * 24 * 6):  # eight days in steps of ten minutes
        await cron.tick()
        clock.advance(600)
    assert len(await fired_ticks(backend, "hourly")) == 8 * 24
    assert await fired_ticks(backend, "weekday") == [f"2026-05-{d:02d}T09:00:00Z" for d in (1, 4, 5, 6, 7, 8)]


@pytest.mark.anyio
async def test_per_schedule_zones_fire_at_their_local_time(backend: Backend, clock: ManualClock) -> None:
    clock.set(utc(2026, 7, 1, 0, 30))
    cron = CronScheduler(
        backend,
        [
            Schedule(id="paris", cron="0 9 * * *", job="j", timezone="Europe/Paris", routing_key="paris"),
            Schedule(id="tokyo", cron="0 9 * * *", job="j", routing_key="tokyo"),  # the scheduler's location
        ],
        location="Asia/Tokyo",
    )
    for _ in range(24 * 4 + 1):
        await cron.tick()
        clock.advance(900)
    assert await fired_ticks(backend, "paris") == ["2026-07-01T07:00:00Z"]
    assert await fired_ticks(backend, "tokyo") == ["2026-07-02T00:00:00Z"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("start", "hours", "cron_expr", "expected"),
    [
        # spring forward: 02:00-02:59 does not exist on 2026-03-08
        (
            (2026, 3, 8, 0, 0),
            3,
            "*/30 * * * *",
            ["00:00-0500", "00:30-0500", "01:00-0500", "01:30-0500", "03:00-0400", "03:30-0400", "04:00-0400"],
        ),
        ((2026, 3, 8, 0, 0), 3, "30 2 * * *", []),
        # fall back: 01:00-01:59 happens twice on 2026-11-01, and fires once
        (
            (2026, 11, 1, 0, 0),
            4,
            "*/30 * * * *",
            ["00:00-0400", "00:30-0400", "01:00-0400", "01:30-0400", "02:00-0500", "02:30-0500", "03:00-0500"],
        ),
        ((2026, 11, 1, 0, 0), 4, "30 1 * * *", ["01:30-0400"]),
    ],
)
async def test_dst_changes_in_new_york(
    backend: Backend, clock: ManualClock, start: tuple[int, ...], hours: int, cron_expr: str, expected: list[str]
) -> None:
    clock.set(local(NY, *start))
    cron = CronScheduler(backend, [Schedule(id="dst", cron=cron_expr, job="j")], location="America/New_York")
    for _ in range(hours * 60 * 2 + 1):  # twice a minute, real (not wall-clock) hours
        await cron.tick()
        clock.advance(30)
    ticks = [datetime.fromisoformat(t) for t in await fired_ticks(backend)]
    assert [t.astimezone(NY).strftime("%H:%M%z") for t in ticks] == expected


@pytest.mark.anyio
async def test_disabled_schedules_are_skipped(backend: Backend, clock: ManualClock) -> None:
    clock.set(START)
    cron = CronScheduler(
        backend,
        [
            Schedule(id="off", cron="* * * * *", job="j", enabled=False),
            Schedule(id="on", cron="* * * * *", job="j", routing_key="on"),
        ],
    )
    await run_minutes(cron, clock, 5)
    assert await fired_ticks(backend) == []
    assert len(await fired_ticks(backend, "on")) == 5
    assert await backend.scheduler.state("off") is None
    states = {s.schedule_id: s for s in await cron.states()}
    assert states["off"].next_run is None and states["off"].run_count == 0
    assert states["on"].run_count == 5


@pytest.mark.anyio
async def test_two_schedulers_racing_submit_each_tick_once(clock: ManualClock, namespace: str) -> None:
    schedules = [
        Schedule(id="a", cron="* * * * *", job="j"),
        Schedule(id="b", cron="*/2 * * * *", job="j", routing_key="b"),
    ]
    async with (
        connect("memory://", clock=clock, namespace=namespace) as one,
        connect("memory://", clock=clock, namespace=namespace) as two,
    ):
        first, second = CronScheduler(one, schedules), CronScheduler(two, schedules)
        fired = 0
        for _ in range(120):
            counts = await asyncio.gather(first.tick(), second.tick(), first.tick(), second.tick())
            fired += sum(counts)
            clock.advance(30)
        a_ticks, b_ticks = await fired_ticks(one), await fired_ticks(one, "b")
    assert len(a_ticks) == len(set(a_ticks)) == 60
    assert len(b_ticks) == len(set(b_ticks)) == 30
    assert fired == 90


@pytest.mark.anyio
async def test_downtime_fires_one_catch_up_not_a_burst(backend: Backend, clock: ManualClock) -> None:
    clock.set(START)
    schedules = [Schedule(id="hourly", cron="0 * * * *", job="j")]
    cron = CronScheduler(backend, schedules)
    assert await cron.tick() == 1  # 09:00
    clock.advance(5 * 3600 + 1200)  # down until 14:20: 10:00 ... 14:00 were missed
    restarted = CronScheduler(backend, schedules)
    assert await restarted.tick() == 1
    assert await restarted.tick() == 0
    assert await fired_ticks(backend) == ["2026-05-04T09:00:00Z", "2026-05-04T14:00:00Z"]
    state = await backend.scheduler.state("hourly")
    assert state is not None and state.run_count == 2
    assert state.next_run == utc(2026, 5, 4, 15)


@pytest.mark.anyio
async def test_first_sight_fires_only_a_tick_that_is_due_now(backend: Backend, clock: ManualClock) -> None:
    clock.set(utc(2026, 5, 4, 9, 30))
    cron = CronScheduler(
        backend,
        [
            Schedule(id="hourly", cron="0 * * * *", job="j"),
            Schedule(id="now", cron="30 9 * * *", job="j", routing_key="now"),
        ],
    )
    assert await cron.tick() == 1  # "now" is due this very second; "hourly" last ticked 30 minutes ago
    state = await backend.scheduler.state("hourly")
    assert state is not None and state.last_run is None and state.next_run == utc(2026, 5, 4, 10)
    # another scheduler that has never seen it must not fire the 09:00 tick either
    assert await CronScheduler(backend, cron.schedules).tick() == 0
    clock.set(utc(2026, 5, 4, 10, 0, 5))
    assert await cron.tick() == 1
    assert await fired_ticks(backend) == ["2026-05-04T10:00:00Z"]
    assert await fired_ticks(backend, "now") == ["2026-05-04T09:30:00Z"]


class _FlakyScheduler:
    """Cron storage that refuses to fire while ``down`` (a stand-in for an unreachable store)."""

    def __init__(self, inner: Scheduler) -> None:
        self.inner = inner
        self.down = True

    async def fire(self, schedule_id: str, tick: datetime, job: object, next_run: datetime) -> bool:
        if self.down and schedule_id == "fragile":
            raise BackendUnavailable("connection refused")
        return await self.inner.fire(schedule_id, tick, job, next_run)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Callable[..., object]:
        return getattr(self.inner, name)  # type: ignore[no-any-return]


@pytest.mark.anyio
async def test_errors_are_recorded_and_do_not_stop_other_schedules(backend: Backend, clock: ManualClock) -> None:
    clock.set(START)
    flaky = _FlakyScheduler(backend.scheduler)
    wrapped = Backend(
        name="memory",
        url="memory://",
        queue=backend.queue,
        results=backend.results,
        workers=backend.workers,
        scheduler=flaky,  # type: ignore[arg-type]
        capabilities=backend.capabilities,
        options=BackendOptions(clock=clock),
    )
    cron = CronScheduler(
        wrapped,
        [Schedule(id="fragile", cron="* * * * *", job="j"), Schedule(id="sturdy", cron="* * * * *", job="j")],
    )
    assert await cron.tick() == 1
    state = await backend.scheduler.state("fragile")
    assert state is not None and state.last_error == "BackendUnavailable: connection refused"
    flaky.down = False
    assert await cron.tick() == 1  # the same tick is tried again once the store answers
    state = await backend.scheduler.state("fragile")
    assert state is not None and state.last_error == "" and state.run_count == 1
    assert state.last_success == utc(2026, 5, 4, 9, 0)


@pytest.mark.anyio
async def test_states_report_last_run_next_run_and_count(backend: Backend, clock: ManualClock) -> None:
    clock.set(START)
    cron = CronScheduler(
        backend,
        [Schedule(id="m", cron="*/5 * * * *", job="j"), Schedule(id="never", cron="0 0 1 1 *", job="j")],
    )
    await run_minutes(cron, clock, 11)
    states = await cron.states()
    assert [s.schedule_id for s in states] == ["m", "never"]
    m, never = states
    assert (m.run_count, m.last_run, m.next_run) == (3, utc(2026, 5, 4, 9, 10), utc(2026, 5, 4, 9, 15))
    assert (never.run_count, never.last_run, never.next_run) == (0, None, utc(2027, 1, 1))


@pytest.mark.anyio
async def test_run_start_and_stop(backend: Backend, clock: ManualClock) -> None:
    clock.set(START)
    cron = CronScheduler(backend, [Schedule(id="m", cron="* * * * *", job="j")])
    task = cron.start(interval=0.01)
    assert cron.start() is task  # already running
    for _ in range(200):
        if await backend.scheduler.state("m") is not None:
            break
        await asyncio.sleep(0.01)
    await cron.stop()
    await cron.stop()  # idempotent
    assert task.done()
    assert await fired_ticks(backend) == ["2026-05-04T09:00:00Z"]
    with pytest.raises(ScheduleError, match="interval"):
        await cron.run(asyncio.Event(), interval=0)


@pytest.mark.anyio
async def test_scheduler_rejects_duplicates_naive_now_and_a_backend_without_cron(backend: Backend) -> None:
    with pytest.raises(ScheduleError, match="repeated: 'x'"):
        CronScheduler(backend, [Schedule(id="x", cron="* * * * *", job="j")] * 2)
    with pytest.raises(ScheduleError, match="unknown scheduler location"):
        CronScheduler(backend, [], location="Nowhere/City")
    cron = CronScheduler(backend, [Schedule(id="x", cron="* * * * *", job="j")])
    with pytest.raises(ScheduleError, match="naive"):
        await cron.tick(datetime(2026, 1, 1))
    no_cron = Backend(
        name="memory",
        url="memory://",
        queue=backend.queue,
        results=backend.results,
        workers=backend.workers,
        capabilities=backend.capabilities - {Capability.CRON},
    )
    with pytest.raises(Exception, match="does not support cron schedules"):
        CronScheduler(no_cron, [Schedule(id="x", cron="* * * * *", job="j")])
    CronScheduler(no_cron, [Schedule(id="x", cron="* * * * *", job="j", enabled=False)])  # nothing to fire: fine

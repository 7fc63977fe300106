"""Property tests of cron ticks: random expressions, zones (DST ones included) and times."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bananas import ManualClock, ScheduleError, connect
from bananas.scheduler import CronScheduler, Schedule
from croniter import croniter
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

ZONES = ["UTC", "America/New_York", "Europe/Paris", "Australia/Lord_Howe", "Asia/Kathmandu", "America/Santiago"]


@st.composite
def cron_field(draw: st.DrawFn, low: int, high: int) -> str:
    kind = draw(st.sampled_from(["*", "step", "value", "range", "list", "range_step"]))
    value = st.integers(low, high)
    if kind == "*":
        return "*"
    if kind == "step":
        return f"*/{draw(st.integers(1, high - low + 1))}"
    if kind == "value":
        return str(draw(value))
    if kind == "list":
        return ",".join(str(v) for v in sorted(draw(st.sets(value, min_size=1, max_size=4))))
    a, b = sorted((draw(value), draw(value)))
    if kind == "range":
        return f"{a}-{b}"
    return f"{a}-{b}/{draw(st.integers(1, max(b - a, 1)))}"


@st.composite
def cron_expressions(draw: st.DrawFn) -> str:
    fields = [
        draw(cron_field(0, 59)),
        draw(cron_field(0, 23)),
        draw(st.just("*") | cron_field(1, 28)),
        draw(st.just("*") | cron_field(1, 12)),
        draw(st.just("*") | cron_field(0, 6)),
    ]
    return " ".join(fields)


def schedule_or_skip(expr: str, zone: str) -> Schedule:
    try:
        return Schedule(id="p", cron=expr, job="j", timezone=zone)
    except ScheduleError:  # e.g. a combination croniter cannot find within its range
        assume(False)
        raise


instants = st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2035, 12, 31), timezones=st.just(UTC))


@settings(max_examples=300, deadline=None)
@given(expr=cron_expressions(), zone=st.sampled_from(ZONES), now=instants)
# a day-of-month step across a short month: croniter before 6.1 skipped March 1 going forward
@example(expr="* 1 */5 * *", zone="UTC", now=datetime(2001, 3, 1, tzinfo=UTC))
def test_latest_and_next_tick_bracket_now_and_match_the_expression(expr: str, zone: str, now: datetime) -> None:
    schedule = schedule_or_skip(expr, zone)
    tz = ZoneInfo(zone)
    latest, upcoming = schedule.latest_tick(now), schedule.next_tick(now)
    assume(latest is not None and upcoming is not None)
    assert latest is not None and upcoming is not None
    assert latest <= now < upcoming
    for tick in (latest, upcoming):
        wall = tick.astimezone(tz)
        assert wall.second == 0 and wall.microsecond == 0
        assert croniter.match(expr, wall.replace(tzinfo=None))
        assert wall.fold == 0  # a repeated wall-clock time fires at its first occurrence only
    # nothing fires strictly between them
    assert schedule.next_tick(latest) == upcoming
    assert schedule.latest_tick(upcoming) == upcoming
    assert schedule.latest_tick(upcoming - timedelta(microseconds=1)) == latest


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    expr=cron_expressions(),
    zone=st.sampled_from(ZONES),
    start=instants,
    steps=st.lists(st.tuples(st.integers(0, 3), st.floats(0, 7200)), min_size=1, max_size=30),
)
def test_racing_schedulers_fire_each_tick_at_most_once(
    expr: str, zone: str, start: datetime, steps: list[tuple[int, float]]
) -> None:
    schedule = schedule_or_skip(expr, zone)
    asyncio.run(_race(schedule, start, steps))


async def _race(schedule: Schedule, start: datetime, steps: list[tuple[int, float]]) -> None:
    clock = ManualClock(start)
    namespace = f"props-{uuid.uuid4().hex}"
    async with (
        connect("memory://", clock=clock, namespace=namespace) as one,
        connect("memory://", clock=clock, namespace=namespace) as two,
    ):
        schedulers = [CronScheduler(one, [schedule]), CronScheduler(two, [schedule])]
        fired = 0
        for who, seconds in steps:
            if who == 3:
                counts = list(await asyncio.gather(schedulers[0].tick(), schedulers[1].tick()))
            else:
                counts = [await schedulers[who % 2].tick()]
            assert all(c <= 1 for c in counts)  # never a burst, whatever was missed
            fired += sum(counts)
            clock.advance(seconds)
        jobs = await one.queue.claim(["default"], limit=10_000)
        ticks = [datetime.fromisoformat(job.description.rsplit(" at ", 1)[1]) for job in jobs]
        state = await one.scheduler.state("p")
    assert len(ticks) == fired == len(set(ticks))
    assert ticks == sorted(ticks)
    for tick in ticks:
        assert schedule.latest_tick(tick) == tick  # a real tick of the expression
        assert tick <= clock.now()
    assert (state.run_count if state else 0) == fired

"""Cron schedules: :class:`Schedule` (what to submit, and when) and :class:`CronScheduler`
(fires each due tick through the backend's cron storage, once across every scheduler).

Time zones: a schedule's cron fields match *local wall-clock time* in its zone (an IANA
name such as ``"America/New_York"``). On a daylight-saving change a wall-clock time that
does not exist (spring forward) is skipped, and one that happens twice (fall back) fires
once, at its first occurrence.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from croniter import croniter

from bananas import observe
from bananas.backend import Backend
from bananas.capabilities import Capability
from bananas.errors import InvalidJob, ScheduleError
from bananas.job import DEFAULT_ROUTING_KEY, JSON, Job, JobPriority, dumps, validate_routing_key
from bananas.protocols import ScheduleState
from bananas.timefmt import format_time, from_timestamp

__all__ = ["CRON_FORMAT", "CronScheduler", "Schedule", "resolve_zone"]

log = logging.getLogger("bananas.scheduler")

CRON_FORMAT = (
    "five fields 'MINUTE HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK' "
    "(minute 0-59, hour 0-23, day 1-31, month 1-12 or JAN-DEC, day of week 0-6 or SUN-SAT, Sunday = 0), "
    "for example '*/15 * * * *' (every 15 minutes) or '0 9 * * 1-5' (weekdays at 09:00); "
    "or one of @hourly, @daily, @weekly, @monthly, @yearly"
)

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_RANDOM_FIELD = re.compile(r"R(\(|$)", re.IGNORECASE)
_MINUTE = timedelta(minutes=1)
_MAX_STEPS = 10_000  # cron matches examined per search; reached only by pathological expressions


def resolve_zone(zone: str | tzinfo | None, *, what: str = "time zone") -> tzinfo:
    """A :class:`tzinfo` for an IANA name (or a tzinfo, returned as is); ``None`` means UTC.

    Raises :class:`ScheduleError` for an unknown or malformed name.
    """
    if zone is None:
        return UTC
    if isinstance(zone, tzinfo):
        return zone
    if not isinstance(zone, str) or not zone.strip():
        raise ScheduleError(f"{what} must be an IANA time zone name such as 'UTC' or 'Europe/Paris', got {zone!r}")
    try:
        return ZoneInfo(zone.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"unknown {what} {zone!r}: use an IANA time zone name such as 'UTC', 'America/New_York' or 'Europe/Paris'"
        ) from None


def _normalise_cron(expr: str) -> str:
    if not isinstance(expr, str):
        return expr  # rejected with the schedule's id in Schedule.__attrs_post_init__
    text = " ".join(expr.split())
    return _MACROS.get(text.lower(), text)


def _cron_problem(expr: str) -> str | None:
    """Why ``expr`` (already normalised) is not an acceptable cron expression, or None."""
    if not isinstance(expr, str):
        return f"it must be a string, not {type(expr).__name__}"
    if not expr:
        return "it is empty"
    fields = expr.split(" ")
    if len(fields) != 5:
        return f"it has {len(fields)} field{'s' if len(fields) != 1 else ''}, not 5"
    if any(_RANDOM_FIELD.match(f) for f in fields):
        return "random fields (R) would fire at different times on different schedulers"
    try:
        croniter(expr, datetime(2000, 1, 1), hash_id="probe")
    except (ValueError, KeyError, TypeError) as exc:
        return str(exc) or type(exc).__name__
    return None


def _check_id(_inst: object, _attr: object, value: str) -> None:
    if not isinstance(value, str) or not value.strip() or value != value.strip() or len(value) > 200:
        raise ScheduleError(f"schedule id must be a non-empty string of at most 200 characters, got {value!r}")


def _check_job(inst: Schedule, _attr: object, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ScheduleError(f"schedule {inst.id!r}: job must name a registered handler, got {value!r}")


def _parse_priority(value: JobPriority | str) -> JobPriority:
    try:
        return JobPriority.parse(value)
    except InvalidJob:
        return value  # type: ignore[return-value]  # rejected, with the id, in __attrs_post_init__


def _optional_zone_name(value: str | None) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value.strip() if isinstance(value, str) else value


@attrs.frozen(kw_only=True)
class Schedule:
    """A cron schedule: submit job ``job`` with ``payload`` at every tick of ``cron``.

    Validated on creation (raises :class:`ScheduleError` saying what is wrong): ``cron`` is
    a five-field expression (see :data:`CRON_FORMAT`), ``timezone`` an IANA name (``None``:
    the scheduler's ``location``, UTC by default), ``payload`` JSON, ``priority`` one of
    high/normal/low and ``routing_key`` a valid routing key.
    """

    id: str = attrs.field(validator=_check_id)
    cron: str = attrs.field(converter=_normalise_cron)
    job: str = attrs.field(validator=_check_job)
    payload: JSON = None
    priority: JobPriority = attrs.field(default=JobPriority.NORMAL, converter=_parse_priority)
    timezone: str | None = attrs.field(default=None, converter=_optional_zone_name)
    enabled: bool = True
    description: str = ""
    routing_key: str = DEFAULT_ROUTING_KEY
    max_retries: int = 3

    def __attrs_post_init__(self) -> None:
        problem = _cron_problem(self.cron)
        if problem is not None:
            raise ScheduleError(
                f"schedule {self.id!r}: invalid cron expression {self.cron!r}: {problem}; use {CRON_FORMAT}"
            )
        try:
            if self.timezone is not None:
                resolve_zone(self.timezone)
            JobPriority.parse(self.priority)
            dumps(self.payload)
            validate_routing_key(self.routing_key)
            Job.create(self.job, self.payload, max_retries=self.max_retries)
        except (InvalidJob, ScheduleError) as exc:
            raise ScheduleError(f"schedule {self.id!r}: {exc}") from None
        if self.next_tick(datetime(2000, 1, 1, tzinfo=UTC)) is None:
            raise ScheduleError(f"schedule {self.id!r}: cron expression {self.cron!r} never matches a real date")

    def zone(self, default: tzinfo | None = None) -> tzinfo:
        """The zone the cron fields are read in: ``timezone``, else ``default``, else UTC."""
        if self.timezone is not None:
            return resolve_zone(self.timezone)
        return default or UTC

    # -- tick arithmetic (all results are aware UTC datetimes) -------------------------

    def latest_tick(self, now: datetime, default_zone: tzinfo | None = None) -> datetime | None:
        """The most recent tick at or before ``now`` (``None`` if none within croniter's range)."""
        zone = self.zone(default_zone)
        local = now.astimezone(zone)
        start = local.replace(tzinfo=None, fold=0)
        if local.fold:  # the repeated hour of a fall-back: ticks up to its end already happened
            start += _offset(start, zone, 0) - _offset(start, zone, 1)
        start = start.replace(second=0, microsecond=0) + _MINUTE
        for wall in self._walk(start, backwards=True):
            instant = _instant(wall, zone)
            if instant is not None and instant <= now:
                return instant
        return None

    def next_tick(self, after: datetime, default_zone: tzinfo | None = None) -> datetime | None:
        """The first tick strictly after ``after`` (``None`` if none within croniter's range)."""
        zone = self.zone(default_zone)
        latest = self.latest_tick(after, zone)
        start = latest.astimezone(zone).replace(tzinfo=None) if latest is not None else None
        if start is None:
            local = after.astimezone(zone)
            start = local.replace(tzinfo=None, fold=0, second=0, microsecond=0) - _MINUTE
        for wall in self._walk(start, backwards=False):
            instant = _instant(wall, zone)
            if instant is not None and instant > after:
                return instant
        return None

    def ticks(self, start: datetime, end: datetime, default_zone: tzinfo | None = None) -> Iterator[datetime]:
        """Every tick ``t`` with ``start < t <= end``, in order."""
        tick = self.next_tick(start, default_zone)
        while tick is not None and tick <= end:
            yield tick
            tick = self.next_tick(tick, default_zone)

    def make_job(self, tick: datetime, now: datetime) -> Job:
        """The job this schedule submits for ``tick``."""
        description = self.description or f"cron {self.id} at {format_time(tick)}"
        return Job.create(
            self.job,
            self.payload,
            priority=self.priority,
            routing_key=self.routing_key,
            description=description,
            max_retries=self.max_retries,
            now=now,
        )

    def _walk(self, start: datetime, *, backwards: bool) -> Iterator[datetime]:
        """Matching naive wall-clock times strictly before/after ``start`` (naive, minute-aligned)."""
        it = croniter(self.cron, start, hash_id=self.id)
        step: Callable[[type[datetime]], Any] = it.get_prev if backwards else it.get_next
        for _ in range(_MAX_STEPS):
            try:
                value = step(datetime)
            except (ValueError, KeyError):  # CroniterBadDateError: no match within its range
                return
            yield value


def _offset(wall: datetime, zone: tzinfo, fold: int) -> timedelta:
    return wall.replace(tzinfo=zone, fold=fold).utcoffset() or timedelta(0)


def _instant(wall: datetime, zone: tzinfo) -> datetime | None:
    """The UTC instant of a naive wall-clock time in ``zone``: ``None`` if it does not exist
    (a spring-forward gap), its first occurrence if it happens twice (a fall-back)."""
    aware = wall.replace(tzinfo=zone, fold=0)
    instant = aware.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) != wall:
        return None
    return instant


class CronScheduler:
    """Fires due cron ticks through ``backend.scheduler`` (the backend's cron storage).

    Any number of schedulers may run against one backend: the storage fires each tick of a
    schedule once. Each :meth:`tick` fires, per enabled schedule, only the most recent tick
    at or before now, so ticks missed while nothing ran are not replayed in a burst: at most
    one catch-up. A schedule the storage has never seen fires a past tick only if it is at
    most ``first_run_grace`` seconds old (it is due now, not missed); otherwise its first
    run is its next tick. ``location`` is the zone of schedules that set no ``timezone``.
    """

    def __init__(
        self,
        backend: Backend,
        schedules: Sequence[Schedule],
        location: str | tzinfo | None = None,
        *,
        first_run_grace: float = 60.0,
    ) -> None:
        ids = [s.id for s in schedules]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ScheduleError(f"schedule ids must be unique; repeated: {', '.join(map(repr, duplicates))}")
        if any(s.enabled for s in schedules):
            backend.require(Capability.CRON, "cron schedules")
        self.backend = backend
        self.schedules: tuple[Schedule, ...] = tuple(schedules)
        self.location = resolve_zone(location, what="scheduler location")
        self.first_run_grace = first_run_grace
        self._seen: dict[str, datetime] = {}  # per schedule: the latest tick known to be fired or passed over
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def now(self) -> datetime:
        """The backend clock's time as an aware UTC datetime."""
        return from_timestamp(self.backend.clock())

    async def tick(self, now: datetime | None = None) -> int:
        """Fire every enabled schedule's due tick not yet fired; return how many this call fired.

        A failure of one schedule is logged and recorded as its ``last_error``; the others
        still fire. ``now`` defaults to the backend's clock.
        """
        when = self.now() if now is None else _aware(now)
        fired = 0
        for schedule in self.schedules:
            if not schedule.enabled:
                continue
            try:
                fired += await self._fire_due(schedule, when)
            except Exception as exc:  # one broken schedule or a storage hiccup must not stop the others
                await self._record_error(schedule, exc)
        return fired

    async def _fire_due(self, schedule: Schedule, now: datetime) -> bool:
        tick = schedule.latest_tick(now, self.location)
        seen = self._seen.get(schedule.id)
        if tick is None or (seen is not None and tick <= seen):
            return False
        storage = self.backend.scheduler
        next_run = schedule.next_tick(now, self.location) or tick
        state = await storage.state(schedule.id)
        if state is None or (state.last_run is None and state.next_run is None):
            if (now - tick).total_seconds() > self.first_run_grace:  # first sight: no catch-up
                await storage.record(schedule.id, next_run=next_run)
                self._seen[schedule.id] = tick
                return False
        elif state.last_run is None and state.next_run is not None and tick < state.next_run:
            self._seen[schedule.id] = tick
            return False
        elif state.last_run is not None and state.last_run >= tick:
            self._seen[schedule.id] = state.last_run
            return False
        job = schedule.make_job(tick, now)
        if observe.OBSERVERS:
            with observe.firing(schedule.id, tick, (job,)) as jobs:
                job = jobs[0]
                fired = await storage.fire(schedule.id, tick, job, next_run)
        else:
            fired = await storage.fire(schedule.id, tick, job, next_run)
        self._seen[schedule.id] = tick
        if fired:
            log.info("cron %s fired its %s tick", schedule.id, format_time(tick))
            if observe.OBSERVERS:
                observe.cron_fired(schedule.id, job)
            await storage.record(
                schedule.id, last_success=now, last_error="" if state is not None and state.last_error else None
            )
        return fired

    async def _record_error(self, schedule: Schedule, exc: Exception) -> None:
        message = f"{type(exc).__name__}: {exc}"
        log.warning("cron %s could not fire: %s", schedule.id, message)
        try:
            await self.backend.scheduler.record(schedule.id, last_error=message)
        except Exception as again:
            log.warning("cron %s: could not record the error either: %s", schedule.id, again)

    async def states(self) -> list[ScheduleState]:
        """The state of every schedule, in the order given: what the storage remembers, with
        ``next_run`` computed from the cron expression when the storage has none (disabled
        schedules have no ``next_run``)."""
        stored: dict[str, ScheduleState] = {}
        if self.backend.supports(Capability.CRON):
            stored = {s.schedule_id: s for s in await self.backend.scheduler.states()}
        now = self.now()
        result = []
        for schedule in self.schedules:
            state = stored.get(schedule.id) or ScheduleState(schedule_id=schedule.id)
            if schedule.enabled and (state.next_run is None or state.next_run <= now):
                state = attrs.evolve(state, next_run=schedule.next_tick(now, self.location))
            elif not schedule.enabled:
                state = attrs.evolve(state, next_run=None)
            result.append(state)
        return result

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Call :meth:`tick` every ``interval`` seconds until ``stop`` is set."""
        if interval <= 0:
            raise ScheduleError(f"scheduler interval must be > 0 seconds, got {interval!r}")
        while not stop.is_set():
            try:
                await self.tick()
            except Exception:  # tick records per-schedule errors; this is a last resort
                log.exception("cron tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    def start(self, interval: float = 1.0) -> asyncio.Task[None]:
        """Run :meth:`run` as a task of the running event loop (stop it with :meth:`stop`)."""
        if self._task is not None and not self._task.done():
            return self._task
        self._stop = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self.run(self._stop, interval), name="bananas-cron")
        return self._task

    async def stop(self) -> None:
        """Stop the task :meth:`start` made and wait for it. Idempotent."""
        if self._stop is not None:
            self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ScheduleError(f"naive datetime {value.isoformat()} has no time zone; pass an aware datetime")
    return value.astimezone(UTC)

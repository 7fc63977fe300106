"""CronScheduler on the real backends (SQLite file, Redis, PostgreSQL): racing schedulers on
separate connections fire each tick once, across a DST change, with one catch-up after downtime."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from bananas import Backend, ManualClock, connect
from bananas.backend import BackendOptions
from bananas.plugins import backend_specs, resolve
from bananas.scheduler import CronScheduler, Schedule

NY = ZoneInfo("America/New_York")
INSTALLED = {scheme for spec in backend_specs() for scheme in spec.schemes}

Opener = Callable[[], Backend]


def _param(scheme: str) -> object:
    return pytest.param(
        scheme, marks=pytest.mark.skipif(scheme not in INSTALLED, reason=f"no plugin serves {scheme}://")
    )


@pytest.fixture(params=[_param("sqlite"), _param("redis"), _param("postgresql")])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cron.db'}"
    return str(request.getfixturevalue("redis_url" if request.param == "redis" else "postgres_url"))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2026, 11, 1, 4, 0, tzinfo=UTC))  # 00:00 in New York, the night clocks fall back


@pytest.fixture
async def opener(backend_url: str, clock: ManualClock) -> AsyncIterator[Opener]:
    """Opens connections to one fresh namespace of the backend (schema created when it has one)."""
    namespace = "cron" + uuid.uuid4().hex[:12]
    migrate = resolve(backend_url).migrate
    if migrate is not None:
        await migrate(backend_url, BackendOptions(extra={"namespace": namespace}))
    opened: list[Backend] = []

    def open_one() -> Backend:
        backend = connect(backend_url, clock=clock, namespace=namespace)
        opened.append(backend)
        return backend

    yield open_one
    for backend in opened:
        await backend.close()


async def _fired(backend: Backend) -> list[datetime]:
    jobs = await backend.queue.claim(["default"], limit=1000)
    return sorted(datetime.fromisoformat(job.description.rsplit(" at ", 1)[1]) for job in jobs)


@pytest.mark.anyio
async def test_racing_schedulers_across_fall_back(opener: Opener, clock: ManualClock) -> None:
    schedules = [Schedule(id="half-hourly", cron="*/30 * * * *", job="j", timezone="America/New_York")]
    schedulers = [CronScheduler(opener(), schedules) for _ in range(4)]
    fired = 0
    for _ in range(4 * 60 + 1):  # four real hours, minute by minute
        fired += sum(await asyncio.gather(*(s.tick() for s in schedulers)))
        clock.advance(60)
    backend = opener()
    ticks = await _fired(backend)
    assert [t.astimezone(NY).strftime("%H:%M%z") for t in ticks] == [
        "00:00-0400", "00:30-0400", "01:00-0400", "01:30-0400", "02:00-0500", "02:30-0500", "03:00-0500",
    ]  # fmt: skip
    assert fired == len(ticks)
    state = await backend.scheduler.state("half-hourly")
    assert state is not None and state.run_count == len(ticks) and state.last_run == ticks[-1]


@pytest.mark.anyio
async def test_downtime_catches_up_once(opener: Opener, clock: ManualClock) -> None:
    schedules = [Schedule(id="ten", cron="*/10 * * * *", job="j")]
    assert await CronScheduler(opener(), schedules).tick() == 1  # 04:00 UTC
    clock.advance(3 * 3600 + 300)  # nobody ran from 04:00 to 07:05
    assert await CronScheduler(opener(), schedules).tick() == 1
    assert await CronScheduler(opener(), schedules).tick() == 0
    ticks = await _fired(opener())
    assert ticks == [datetime(2026, 11, 1, 4, 0, tzinfo=UTC), datetime(2026, 11, 1, 7, 0, tzinfo=UTC)]

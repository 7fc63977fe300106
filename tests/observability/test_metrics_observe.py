"""The observation seam (bananas.observe) on ``memory://``: every submit path is wrapped and may
replace the jobs written; every attempt is wrapped before its handler starts (a context variable
set there reaches async and thread handlers); the worker's events arrive with the right values."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import attrs
import pytest
from bananas import AsyncClient, Backend, Client, Job, JobContext, Registry, connect, observe
from bananas.config import WorkerConfig
from bananas.worker import Executor, Pool
from waiting import eventually

pytestmark = pytest.mark.anyio

MARK: contextvars.ContextVar[str] = contextvars.ContextVar("mark", default="")


class Recorder(observe.Observer):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.attempts: list[observe.Attempt] = []
        self.seen_in_handler: list[str] = []

    @contextlib.contextmanager
    def _submit(self, jobs: Sequence[Job]) -> Iterator[Sequence[Job]]:
        self.events.append(("submit-enter", [j.id for j in jobs]))
        try:
            yield [attrs.evolve(j, extra={**j.extra, "traced": "yes"}) for j in jobs]
        except BaseException as exc:
            self.events.append(("submit-error", type(exc).__name__))
            raise
        self.events.append(("submit-exit", len(jobs)))

    def submitting(self, jobs: Sequence[Job]) -> contextlib.AbstractContextManager[Sequence[Job] | None]:
        return self._submit(jobs)

    @contextlib.contextmanager
    def _attempt(self, attempt: observe.Attempt) -> Iterator[None]:
        token = MARK.set(f"span-{attempt.job.id}")
        try:
            yield
        finally:
            MARK.reset(token)
            self.attempts.append(attempt)

    def attempt(self, attempt: observe.Attempt) -> contextlib.AbstractContextManager[None]:
        return self._attempt(attempt)

    def job_claimed(self, job: Job, worker_id: str, wait: float) -> None:
        self.events.append(("claimed", job.id, worker_id, wait))

    def attempt_finished(self, settled: observe.Settled) -> None:
        self.events.append(("settled", settled.job.id, settled.disposition, settled.attempt, settled.worker_id))

    def leases_reaped(self, count: int) -> None:
        self.events.append(("reaped", count))

    def worker_started(self, worker_id: str, concurrency: int) -> None:
        self.events.append(("started", worker_id, concurrency))


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder()
    observe.add_observer(rec)
    try:
        yield rec
    finally:
        observe.remove_observer(rec)
    assert rec not in observe.observers()


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = connect(f"memory://observe-{uuid.uuid4().hex}")
    yield b
    await b.close()


async def test_every_async_submit_path_writes_the_observers_replacements(backend: Backend, recorder: Recorder) -> None:
    async with AsyncClient(backend=backend) as client:
        ids = [
            await client.submit_job("a"),
            await client.submit_job_with_route("a", None, "high", "emails"),
            await client.submit_job_scheduled("a", None, "low", 60.0),
            *await client.submit_many([{"name": "b"}, {"name": "c"}], batch_size=1),
        ]
        for job_id in ids:
            assert (await client.get_job(job_id)).extra.get("traced") == "yes"
    enters = [e for e in recorder.events if e[0] == "submit-enter"]
    assert [e[1] for e in enters] == [[ids[0]], [ids[1]], [ids[2]], [ids[3]], [ids[4]]]
    assert [e for e in recorder.events if e[0] == "submit-exit"] == [("submit-exit", 1)] * 5


def test_every_sync_submit_path_writes_the_observers_replacements(recorder: Recorder) -> None:
    url = f"memory://observe-sync-{uuid.uuid4().hex}"
    with Client(url) as client:
        ids = [
            client.submit_job("a"),
            client.submit_job_with_route("a", None, "high", "emails"),
            client.submit_job_scheduled("a", None, "low", 60.0),
            *client.submit_many([{"name": "b"}, {"name": "c"}]),
        ]
        assert all(client.get_job(job_id).extra.get("traced") == "yes" for job_id in ids)
    assert [e[1] for e in recorder.events if e[0] == "submit-enter"] == [[i] for i in ids[:3]] + [ids[3:]]


async def test_a_failed_write_exits_the_observer_with_the_error(backend: Backend, recorder: Recorder) -> None:
    async with AsyncClient(backend=backend) as client:
        await client.submit_job("a", job_id="same")
        with pytest.raises(Exception) as raised:
            await client.submit_job("a", job_id="same")
    assert recorder.events[-1] == ("submit-error", type(raised.value).__name__)


async def test_attempts_are_wrapped_and_the_context_reaches_handlers(backend: Backend, recorder: Recorder) -> None:
    registry = Registry()

    @registry.handler("async_ok")
    async def async_ok(ctx: JobContext, job: Job) -> str:
        recorder.seen_in_handler.append(MARK.get())
        return "ok"

    @registry.handler("thread_fails")
    def thread_fails(ctx: JobContext, job: Job) -> None:
        recorder.seen_in_handler.append(MARK.get())
        raise ValueError("broken")

    config = WorkerConfig(concurrency=2, scheduler_interval=0.1)
    executor = Executor(registry, backend.queue, 2, clock=backend.clock)
    pool = Pool(executor, backend, config, poll_interval=0.05, worker_id="w-test")
    async with AsyncClient(backend=backend) as client:
        ok = await client.submit_job("async_ok")
        bad = await client.submit_job("thread_fails", max_retries=2)
        await pool.start()
        try:
            await eventually(lambda: len([e for e in recorder.events if e[0] == "settled"]) == 3, what="3 settles")
        finally:
            await pool.stop()
    assert sorted(recorder.seen_in_handler) == sorted([f"span-{ok}", f"span-{bad}", f"span-{bad}"])
    settles = [e for e in recorder.events if e[0] == "settled"]
    assert sorted(settles, key=str) == sorted(
        [
            ("settled", ok, observe.Disposition.COMPLETED, 1, "w-test"),
            ("settled", bad, observe.Disposition.RETRY, 1, "w-test"),
            ("settled", bad, observe.Disposition.DEAD, 2, "w-test"),
        ],
        key=str,
    )
    by_job = {(a.job.id, a.job.attempts): a for a in recorder.attempts}
    assert by_job[(ok, 0)].ok and by_job[(ok, 0)].finished
    failed = by_job[(bad, 0)]
    assert not failed.ok and failed.error == "ValueError: broken" and isinstance(failed.exception, ValueError)
    claims = [e for e in recorder.events if e[0] == "claimed"]
    assert {e[1] for e in claims} == {ok, bad} and all(e[2] == "w-test" and e[3] >= 0 for e in claims)
    assert ("started", "w-test", 2) in recorder.events


async def test_a_running_job_cancelled_is_reported_cancelled_and_counted(backend: Backend, recorder: Recorder) -> None:
    """A claimed job stopped by ``client.cancel`` settles as CANCELLED, and the metrics count it."""
    from bananas.metrics import JobMetrics

    registry = Registry()
    started = asyncio.Event()

    @registry.handler("long")
    async def long(ctx: JobContext, job: Job) -> None:
        started.set()
        await asyncio.sleep(30)

    lease = 0.6  # renewed, and cancel requests read, every 0.2 s
    metrics = JobMetrics()
    observe.add_observer(metrics)
    config = WorkerConfig(concurrency=1, scheduler_interval=0.1, lease=lease)
    executor = Executor(registry, backend.queue, 1, clock=backend.clock, lease=lease)
    pool = Pool(executor, backend, config, poll_interval=0.05, worker_id="w-test")
    try:
        async with AsyncClient(backend=backend) as client:
            job_id = await client.submit_job("long", priority="high")
            await pool.start()
            try:
                await asyncio.wait_for(started.wait(), 10)
                await client.cancel(job_id)
                await eventually(lambda: any(e[0] == "settled" for e in recorder.events), what="the settle")
            finally:
                await pool.stop()
    finally:
        observe.remove_observer(metrics)
    assert [e for e in recorder.events if e[0] == "settled"] == [
        ("settled", job_id, observe.Disposition.CANCELLED, 1, "w-test")
    ]
    assert metrics.cancelled_by == {("long", "default", "high"): 1}
    assert metrics.completed_by == metrics.failed_by == metrics.dead_by == {}


async def test_timeouts_are_reported_to_the_attempt(backend: Backend, recorder: Recorder) -> None:
    registry = Registry()

    @registry.handler("slow")
    async def slow(ctx: JobContext, job: Job) -> None:
        await ctx.wait_cancelled()

    executor = Executor(registry, backend.queue, 1, clock=backend.clock)
    async with AsyncClient(backend=backend) as client:
        await client.submit_job("slow")
    (job,) = await backend.queue.claim(["default"], limit=1)
    await executor.execute_job(job, timeout=0.05)
    (attempt,) = recorder.attempts
    assert attempt.timed_out and attempt.finished and attempt.error.startswith("Timeout")


class Broken(observe.Observer):
    def submitting(self, jobs: Sequence[Job]) -> contextlib.AbstractContextManager[Sequence[Job] | None]:
        raise RuntimeError("observer bug")

    def job_claimed(self, job: Job, worker_id: str, wait: float) -> None:
        raise RuntimeError("observer bug")


async def test_a_broken_observer_never_fails_a_submit(backend: Backend, recorder: Recorder) -> None:
    broken = Broken()
    observe.add_observer(broken)
    try:
        async with AsyncClient(backend=backend) as client:
            job_id = await client.submit_job("a")
            assert (await client.get_job(job_id)).extra["traced"] == "yes"
        observe.claimed([Job(name="a")], "w", 0.0)
    finally:
        observe.remove_observer(broken)


def test_only_observers_can_be_added() -> None:
    with pytest.raises(TypeError, match=r"must be a bananas\.observe\.Observer"):
        observe.add_observer(object())  # type: ignore[arg-type]


class CronRecorder(observe.Observer):
    def __init__(self) -> None:
        self.fired: list[tuple[str, str, str]] = []

    @contextlib.contextmanager
    def _firing(self, jobs: Sequence[Job]) -> Iterator[Sequence[Job]]:
        yield [attrs.evolve(j, extra={**j.extra, "traced": "cron"}) for j in jobs]

    def firing(self, schedule_id: str, tick: Any, jobs: Sequence[Job]) -> contextlib.AbstractContextManager[Any]:
        return self._firing(jobs)

    def cron_fired(self, schedule_id: str, job: Job) -> None:
        self.fired.append((schedule_id, job.name, str(job.extra.get("traced"))))


async def test_cron_fires_are_wrapped_and_announced() -> None:
    from datetime import UTC, datetime

    from bananas import ManualClock
    from bananas.scheduler import CronScheduler, Schedule

    clock = ManualClock(datetime(2026, 5, 4, 9, 0, 30, tzinfo=UTC).timestamp())
    backend = connect(f"memory://observe-cron-{uuid.uuid4().hex}", clock=clock)
    rec = CronRecorder()
    observe.add_observer(rec)
    try:
        cron = CronScheduler(backend, [Schedule(id="every-minute", cron="* * * * *", job="ping")])
        assert await cron.tick() == 1
        (job,) = await backend.queue.claim(["default"], limit=5)
    finally:
        observe.remove_observer(rec)
        await backend.close()
    assert rec.fired == [("every-minute", "ping", "cron")]
    assert job.extra["traced"] == "cron"

"""Counting what workers and clients do, in memory, with no optional dependency.

:class:`Collector` is the original's metrics collector: jobs processed, completed and failed,
average duration, utilisation, error rate and uptime, as a :class:`Snapshot`.
:class:`JobMetrics` adds what Prometheus exposes: labelled counters, the duration and wait
histograms. Both are :class:`~bananas.observe.Observer` s: register one with
:func:`bananas.observe.add_observer` and it counts from then on. :func:`sample_store`
reads the store-wide numbers (depths, dead letters, live workers) through the protocols.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

import attrs

from bananas.job import Job
from bananas.observe import Disposition, Observer, Settled
from bananas.protocols import QueueDepths

__all__ = [
    "DURATION_BUCKETS",
    "WAIT_BUCKETS",
    "Collector",
    "Histogram",
    "JobMetrics",
    "Snapshot",
    "StoreSample",
    "sample_store",
    "snapshot_of",
]

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""Upper bounds (seconds) of the ``bananas_job_duration_seconds`` buckets."""
WAIT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
"""Upper bounds (seconds) of the ``bananas_job_wait_seconds`` buckets."""

JobLabels = tuple[str, str, str]
"""``(job name, routing key, priority)``: the labels of the per-job counters."""


@attrs.frozen
class Snapshot:
    """The original's metrics at one moment.

    ``processed`` attempts finished (``completed`` + ``failed``); ``average_duration`` in
    seconds over those attempts; ``utilisation`` is ``in_flight / concurrency`` (0 to 1);
    ``error_rate`` is ``failed / processed`` (0 to 1; 0 before the first attempt);
    ``uptime`` in seconds.
    """

    processed: int
    completed: int
    failed: int
    average_duration: float
    utilisation: float
    error_rate: float
    uptime: float
    in_flight: int = 0
    concurrency: int = 0

    def as_dict(self) -> dict[str, float | int]:
        """A JSON-ready mapping."""
        return attrs.asdict(self)

    def describe(self) -> str:
        """One line for a log: ``processed=10 completed=9 failed=1 ...``."""
        return (
            f"processed={self.processed} completed={self.completed} failed={self.failed} "
            f"avg_duration={self.average_duration:.3f}s utilisation={self.utilisation * 100:.1f}% "
            f"error_rate={self.error_rate * 100:.1f}% in_flight={self.in_flight}/{self.concurrency} "
            f"uptime={self.uptime:.0f}s"
        )


def snapshot_of(
    completed: int, failed: int, total_duration: float, in_flight: int, concurrency: int, uptime: float
) -> Snapshot:
    """The :class:`Snapshot` of these counts (the one place its arithmetic lives)."""
    processed = completed + failed
    return Snapshot(
        processed=processed,
        completed=completed,
        failed=failed,
        average_duration=total_duration / processed if processed else 0.0,
        utilisation=min(in_flight / concurrency, 1.0) if concurrency > 0 else 0.0,
        error_rate=failed / processed if processed else 0.0,
        uptime=max(uptime, 0.0),
        in_flight=in_flight,
        concurrency=concurrency,
    )


class Collector(Observer):
    """Counts settled attempts of the workers of this process (see :class:`Snapshot`).

    Registered as an observer, it counts the attempts it is told about; given ``counts``
    (a callable returning ``(completed, failed, total seconds)``, e.g. an executor's own
    counters), it reads those instead and needs no registration, so it costs the worker
    nothing per job. ``running`` is called for the number of handlers running now (the
    worker sets it); concurrency is ``concurrency`` if given, else that of the workers that
    start while the collector is registered.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        counts: Callable[[], tuple[int, int, float]] | None = None,
        concurrency: int | None = None,
    ) -> None:
        self.clock = clock
        self.started = clock()
        self.completed = 0
        self.failed = 0
        self.total_duration = 0.0
        self.running: Callable[[], int] = lambda: 0
        self._counts = counts
        self._fixed_concurrency = concurrency
        self._concurrency: dict[str, int] = {}

    def attempt_finished(self, settled: Settled) -> None:
        """Count one attempt that completed or failed (one cancelled, discarded or not recorded counts for nothing)."""
        disposition = settled.disposition
        if disposition is Disposition.COMPLETED:
            self.completed += 1
        elif disposition is Disposition.RETRY or disposition is Disposition.DEAD:
            self.failed += 1
        else:
            return
        self.total_duration += settled.duration

    def worker_started(self, worker_id: str, concurrency: int) -> None:
        """Note the worker's concurrency (for utilisation)."""
        self._concurrency[worker_id] = concurrency

    def worker_stopped(self, worker_id: str) -> None:
        """Forget the worker's concurrency."""
        self._concurrency.pop(worker_id, None)

    @property
    def concurrency(self) -> int:
        """Handler slots of the running workers of this process."""
        if self._fixed_concurrency is not None:
            return self._fixed_concurrency
        return sum(self._concurrency.values())

    def snapshot(self) -> Snapshot:
        """The metrics as of now."""
        completed, failed, total = (
            (self.completed, self.failed, self.total_duration) if self._counts is None else self._counts()
        )
        return snapshot_of(completed, failed, total, self.running(), self.concurrency, self.clock() - self.started)


@attrs.define
class Histogram:
    """Counts of observations per bucket (``counts[i]``: values <= ``bounds[i]``, not cumulative;
    the last count is for values above every bound), their sum and number."""

    bounds: tuple[float, ...]
    counts: list[int] = attrs.field()
    total: float = 0.0
    count: int = 0

    @counts.default
    def _zeros(self) -> list[int]:
        return [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        """Add one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, observations <= bound)`` pairs, ending with ``(inf, count)``."""
        out: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


class _CountSubmit(AbstractContextManager[None]):
    __slots__ = ("_jobs", "_metrics")

    def __init__(self, metrics: JobMetrics, jobs: Sequence[Job]) -> None:
        self._metrics = metrics
        self._jobs = jobs

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self._metrics._count_submitted(self._jobs)


def _labels(job: Job) -> JobLabels:
    return (job.name, job.routing_key, job.priority.value)


class JobMetrics(Collector):
    """A :class:`Collector` that also keeps what Prometheus exposes: per-job counters labelled
    with the job name, routing key and priority, attempt durations per job name, waits per
    routing key and priority, reaped leases and cron fires (never a job id in a label)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock=clock)
        self._lock = threading.Lock()  # submits may come from any thread
        self.submitted: dict[JobLabels, int] = {}
        self.completed_by: dict[JobLabels, int] = {}
        self.failed_by: dict[JobLabels, int] = {}
        self.retried_by: dict[JobLabels, int] = {}
        self.dead_by: dict[JobLabels, int] = {}
        self.cancelled_by: dict[JobLabels, int] = {}
        self.reaped = 0
        self.cron_fired_by: dict[tuple[str, str], int] = {}
        """Fires by ``(schedule id, job name)``."""
        self.durations: dict[str, Histogram] = {}
        """Attempt durations by job name."""
        self.waits: dict[tuple[str, str], Histogram] = {}
        """Waits from ready to claimed by ``(routing key, priority)``."""

    def submitting(self, jobs: Sequence[Job]) -> AbstractContextManager[Sequence[Job] | None]:
        """Count ``jobs`` once they are written."""
        return _CountSubmit(self, jobs)

    def _count_submitted(self, jobs: Sequence[Job]) -> None:
        with self._lock:
            for job in jobs:
                key = _labels(job)
                self.submitted[key] = self.submitted.get(key, 0) + 1

    def job_claimed(self, job: Job, worker_id: str, wait: float) -> None:
        """Observe the job's wait."""
        key = (job.routing_key, job.priority.value)
        histogram = self.waits.get(key)
        if histogram is None:
            histogram = self.waits[key] = Histogram(WAIT_BUCKETS)
        histogram.observe(wait)

    def attempt_finished(self, settled: Settled) -> None:
        """Count the attempt by its disposition, and its duration."""
        super().attempt_finished(settled)
        disposition = settled.disposition
        job = settled.job
        key = _labels(job)
        if disposition is Disposition.COMPLETED:
            counters: tuple[dict[JobLabels, int], ...] = (self.completed_by,)
        elif disposition is Disposition.RETRY:
            counters = (self.failed_by, self.retried_by)
        elif disposition is Disposition.DEAD:
            counters = (self.failed_by, self.dead_by)
        elif disposition is Disposition.CANCELLED:
            counters = (self.cancelled_by,)
        else:
            return
        for counter in counters:
            counter[key] = counter.get(key, 0) + 1
        histogram = self.durations.get(job.name)
        if histogram is None:
            histogram = self.durations[job.name] = Histogram(DURATION_BUCKETS)
        histogram.observe(settled.duration)

    def leases_reaped(self, count: int) -> None:
        """Count jobs taken back from crashed workers."""
        self.reaped += count

    def cron_fired(self, schedule_id: str, job: Job) -> None:
        """Count one fire of ``schedule_id``."""
        key = (schedule_id, job.name)
        self.cron_fired_by[key] = self.cron_fired_by.get(key, 0) + 1

    def submitted_counts(self) -> dict[JobLabels, int]:
        """A copy of the submit counters (safe while other threads submit)."""
        with self._lock:
            return dict(self.submitted)


@attrs.frozen
class StoreSample:
    """Store-wide numbers at one moment: ready jobs by ``(routing key, priority)``, scheduled
    (including retries waiting), processing (claimed), dead, and live workers."""

    ready: dict[tuple[str, str], int]
    scheduled: int
    processing: int
    dead: int
    workers_alive: int


async def sample_store(backend: Any) -> StoreSample:
    """Read a :class:`StoreSample` from ``backend`` (its queue's depths and its worker registry)."""
    depths: QueueDepths = await backend.queue.depths()
    workers = await backend.workers.workers()
    return StoreSample(
        ready={(key, priority.value): n for (key, priority), n in depths.ready.items()},
        scheduled=depths.scheduled,
        processing=depths.processing,
        dead=depths.dead,
        workers_alive=len(workers),
    )

"""The metrics in the Prometheus text format, through ``prometheus_client`` (the ``prometheus`` extra).

Importing this module imports ``prometheus_client``; nothing else in the core does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector as _PromCollector

from bananas.metrics.collector import Histogram, JobLabels, JobMetrics, StoreSample

__all__ = ["CONTENT_TYPE", "BananasMetrics", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_JOB_LABELS = ["job", "routing_key", "priority"]


def _counter(name: str, doc: str, values: dict[JobLabels, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=_JOB_LABELS)
    for labels, value in sorted(values.items()):
        family.add_metric(list(labels), value)
    return family


def _histogram(name: str, doc: str, label_names: list[str], values: dict[tuple[str, ...], Histogram]) -> Metric:
    family = HistogramMetricFamily(name, doc, labels=label_names)
    for labels, histogram in sorted(values.items()):
        buckets = [(_bound(bound), count) for bound, count in histogram.cumulative()]
        family.add_metric(list(labels), buckets, histogram.total)
    return family


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class BananasMetrics(_PromCollector):
    """A ``prometheus_client`` collector of Bananas' metrics.

    ``jobs``: the process's :class:`JobMetrics` (``None`` in the standalone exporter);
    ``store``: called at each scrape for the store-wide numbers (``None`` when the store
    could not be read: the store gauges are then left out and ``bananas_store_up`` is 0).
    """

    def __init__(self, jobs: JobMetrics | None = None, store: Callable[[], StoreSample | None] | None = None) -> None:
        self.jobs = jobs
        self.store = store

    def collect(self) -> Iterator[Metric]:
        """The metric families as of now."""
        jobs = self.jobs
        if jobs is not None:
            yield from self._jobs(jobs)
        if self.store is not None:
            yield from self._store(self.store())

    def _jobs(self, jobs: JobMetrics) -> Iterator[Metric]:
        yield _counter("bananas_jobs_submitted", "Jobs submitted by this process.", jobs.submitted_counts())
        yield _counter("bananas_jobs_completed", "Attempts that succeeded.", dict(jobs.completed_by))
        yield _counter("bananas_jobs_failed", "Attempts that failed (retried or dead).", dict(jobs.failed_by))
        yield _counter("bananas_jobs_retried", "Failed attempts after which the job runs again.", dict(jobs.retried_by))
        yield _counter("bananas_jobs_dead", "Jobs moved to the dead letter queue.", dict(jobs.dead_by))
        yield _counter("bananas_jobs_cancelled", "Claimed jobs stopped by client.cancel.", dict(jobs.cancelled_by))
        reaped = CounterMetricFamily("bananas_leases_reaped", "Jobs taken back from workers whose lease ran out.")
        reaped.add_metric([], jobs.reaped)
        yield reaped
        cron = CounterMetricFamily("bananas_cron_fired", "Cron schedule fires.", labels=["schedule", "job"])
        for labels, value in sorted(jobs.cron_fired_by.items()):
            cron.add_metric(list(labels), value)
        yield cron
        yield _histogram(
            "bananas_job_duration_seconds",
            "Run time of one attempt.",
            ["job"],
            {(name,): h for name, h in list(jobs.durations.items())},
        )
        yield _histogram(
            "bananas_job_wait_seconds",
            "Time from ready to claimed.",
            ["routing_key", "priority"],
            dict(list(jobs.waits.items())),
        )
        snapshot = jobs.snapshot()
        yield GaugeMetricFamily("bananas_jobs_in_flight", "Handlers running now.", value=snapshot.in_flight)
        yield GaugeMetricFamily(
            "bananas_worker_concurrency", "Handler slots of the workers of this process.", value=snapshot.concurrency
        )
        yield GaugeMetricFamily(
            "bananas_worker_utilisation", "Busy share of the handler slots (0 to 1).", value=snapshot.utilisation
        )
        yield GaugeMetricFamily("bananas_worker_uptime_seconds", "Seconds since metrics began.", value=snapshot.uptime)

    def _store(self, sample: StoreSample | None) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "bananas_store_up", "1 if the store answered the last sample, else 0.", value=0 if sample is None else 1
        )
        if sample is None:
            return
        depth = GaugeMetricFamily(
            "bananas_queue_depth", "Ready jobs by routing key and priority.", labels=["routing_key", "priority"]
        )
        for (key, priority), n in sorted(sample.ready.items()):
            depth.add_metric([key, priority], n)
        yield depth
        yield GaugeMetricFamily(
            "bananas_scheduled_jobs", "Jobs waiting for their time (scheduled or retrying).", value=sample.scheduled
        )
        yield GaugeMetricFamily("bananas_processing_jobs", "Jobs claimed by workers now.", value=sample.processing)
        yield GaugeMetricFamily("bananas_dead_jobs", "Jobs in the dead letter queue.", value=sample.dead)
        yield GaugeMetricFamily("bananas_workers_alive", "Workers with a live heartbeat.", value=sample.workers_alive)


def render(metrics: BananasMetrics, *, process: bool = True) -> bytes:
    """The Prometheus text exposition of ``metrics``, after ``prometheus_client``'s default
    registry when ``process`` (the process and Python metrics, and any metric the application
    registered there itself)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    ours = generate_latest(registry)
    return generate_latest(REGISTRY) + ours if process else ours

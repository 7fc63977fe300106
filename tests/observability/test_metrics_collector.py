"""The in-memory collector: the snapshot's arithmetic, the labelled counters and histograms, and
their Prometheus text (parsed back with prometheus_client's own parser)."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from bananas import Job, observe
from bananas.metrics import Collector, JobMetrics, snapshot_of
from bananas.metrics.collector import DURATION_BUCKETS, Histogram, StoreSample
from hypothesis import given, settings
from hypothesis import strategies as st

DISPOSITIONS = st.sampled_from(list(observe.Disposition))
NAMES = st.sampled_from(["send", "resize", "bill"])
KEYS = st.sampled_from(["default", "emails"])
PRIORITIES = st.sampled_from(["high", "normal", "low"])
DURATIONS = st.floats(min_value=0, max_value=1000, allow_nan=False)
SETTLES = st.lists(st.tuples(DISPOSITIONS, NAMES, KEYS, PRIORITIES, DURATIONS), max_size=60)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settle(disposition: observe.Disposition, name: str, key: str, priority: str, duration: float) -> observe.Settled:
    job = Job(name=name, routing_key=key, priority=priority)
    return observe.Settled(job, disposition, attempt=1, duration=duration)


@settings(max_examples=200, deadline=None)
@given(SETTLES, st.integers(0, 50), st.integers(0, 50), st.floats(0, 1e6, allow_nan=False))
def test_the_snapshot_matches_a_recount(
    settles: list[tuple[observe.Disposition, str, str, str, float]], running: int, concurrency: int, elapsed: float
) -> None:
    clock = Clock()
    collector = Collector(clock=clock)
    collector.running = lambda: running
    collector.worker_started("w", concurrency)
    for values in settles:
        collector.attempt_finished(settle(*values))
    clock.now += elapsed
    # The Go snapshot counts attempts that completed or failed; a cancelled one is neither.
    uncounted = (observe.Disposition.LOST, observe.Disposition.UNRECORDED, observe.Disposition.CANCELLED)
    counted = [v for v in settles if v[0] not in uncounted]
    completed = sum(1 for v in counted if v[0] is observe.Disposition.COMPLETED)
    failed = len(counted) - completed
    snap = collector.snapshot()
    assert (snap.processed, snap.completed, snap.failed) == (len(counted), completed, failed)
    assert snap.error_rate == (failed / len(counted) if counted else 0.0)
    assert 0.0 <= snap.error_rate <= 1.0 and 0.0 <= snap.utilisation <= 1.0
    expected_avg = math.fsum(v[4] for v in counted) / len(counted) if counted else 0.0
    assert snap.average_duration == pytest.approx(expected_avg, rel=1e-9, abs=1e-9)
    assert snap.utilisation == (min(running / concurrency, 1.0) if concurrency else 0.0)
    assert snap.uptime == pytest.approx(elapsed)
    assert (snap.in_flight, snap.concurrency) == (running, concurrency)


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.floats(0, 1e9, allow_nan=False))
def test_snapshot_of_never_divides_by_zero_and_rates_stay_in_range(completed: int, failed: int, total: float) -> None:
    snap = snapshot_of(completed, failed, total, in_flight=3, concurrency=0, uptime=-5)
    assert snap.processed == completed + failed
    assert snap.utilisation == 0.0 and snap.uptime == 0.0
    assert 0.0 <= snap.error_rate <= 1.0
    if snap.processed == 0:
        assert (snap.average_duration, snap.error_rate) == (0.0, 0.0)


def test_the_snapshot_reads_as_one_log_line() -> None:
    line = snapshot_of(9, 1, 5.0, 2, 4, 61).describe()
    assert line == (
        "processed=10 completed=9 failed=1 avg_duration=0.500s utilisation=50.0% error_rate=10.0% "
        "in_flight=2/4 uptime=61s"
    )


@given(st.lists(st.floats(0, 1000, allow_nan=False), max_size=50))
def test_histogram_buckets_count_the_values_at_or_below_each_bound(values: list[float]) -> None:
    histogram = Histogram(DURATION_BUCKETS)
    for value in values:
        histogram.observe(value)
    for bound, count in histogram.cumulative():
        assert count == sum(1 for v in values if v <= bound)
    assert histogram.count == len(values) and histogram.total == pytest.approx(math.fsum(values))


@settings(max_examples=50, deadline=None)
@given(SETTLES)
def test_prometheus_text_has_the_exact_counts(settles: list[tuple[observe.Disposition, str, str, str, float]]) -> None:
    from bananas.metrics.prometheus import BananasMetrics, render
    from prometheus_client.parser import text_string_to_metric_families

    metrics = JobMetrics()
    for values in settles:
        metrics.attempt_finished(settle(*values))
    metrics.leases_reaped(2)
    metrics.cron_fired("nightly", Job(name="bill"))
    sample = StoreSample(ready={("emails", "high"): 4}, scheduled=1, processing=2, dead=3, workers_alive=5)
    text = render(BananasMetrics(metrics, lambda: sample), process=False).decode()
    got: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            got[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def expected(kind: str, dispositions: set[observe.Disposition]) -> Counter[tuple[str, str, str]]:
        return Counter((n, k, p) for d, n, k, p, _ in settles if d in dispositions)

    D = observe.Disposition
    for kind, wanted in (
        ("completed", {D.COMPLETED}),
        ("failed", {D.RETRY, D.DEAD}),
        ("retried", {D.RETRY}),
        ("dead", {D.DEAD}),
        ("cancelled", {D.CANCELLED}),
    ):
        counts = {labels: value for (name, labels), value in got.items() if name == f"bananas_jobs_{kind}_total"}
        recount = expected(kind, wanted)
        assert counts == {(("job", n), ("priority", p), ("routing_key", k)): c for (n, k, p), c in recount.items()}
    durations = Counter(n for d, n, *_ in settles if d in {D.COMPLETED, D.RETRY, D.DEAD, D.CANCELLED})
    for name, count in durations.items():
        assert got[("bananas_job_duration_seconds_count", (("job", name),))] == count
    assert got[("bananas_leases_reaped_total", ())] == 2
    assert got[("bananas_cron_fired_total", (("job", "bill"), ("schedule", "nightly")))] == 1
    assert got[("bananas_queue_depth", (("priority", "high"), ("routing_key", "emails")))] == 4
    assert [got[(f"bananas_{n}", ())] for n in ("scheduled_jobs", "processing_jobs", "dead_jobs", "workers_alive")] == [
        1,
        2,
        3,
        5,
    ]
    assert got[("bananas_store_up", ())] == 1


def test_an_unreadable_store_leaves_the_store_gauges_out() -> None:
    from bananas.metrics.prometheus import BananasMetrics, render

    text = render(BananasMetrics(None, lambda: None), process=False).decode()
    assert "bananas_store_up 0.0" in text
    assert "bananas_dead_jobs" not in text and "bananas_jobs_completed_total" not in text


def test_submits_are_counted_once_written_and_not_when_the_write_fails() -> None:
    metrics = JobMetrics()
    jobs = [Job(name="send", routing_key="emails", priority="high"), Job(name="send", routing_key="emails")]
    with metrics.submitting(jobs):
        pass
    with pytest.raises(RuntimeError), metrics.submitting(jobs[:1]):
        raise RuntimeError("the store refused")
    assert metrics.submitted_counts() == {("send", "emails", "high"): 1, ("send", "emails", "normal"): 1}


@pytest.mark.anyio
async def test_a_client_process_counts_what_it_submits() -> None:
    """In a web application: register JobMetrics, and every submit path is counted once written."""
    import uuid

    from bananas import AsyncClient
    from bananas.metrics.prometheus import BananasMetrics, render
    from prometheus_client.parser import text_string_to_metric_families

    metrics = JobMetrics()
    observe.add_observer(metrics)
    try:
        async with AsyncClient(f"memory://submits-{uuid.uuid4().hex}") as client:
            await client.submit_job("send", routing_key="emails", priority="high")
            await client.submit_many([{"name": "send", "routing_key": "emails"}, {"name": "bill"}])
    finally:
        observe.remove_observer(metrics)
    text = render(BananasMetrics(metrics), process=False).decode()
    counted = {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "bananas_jobs_submitted_total"
    }
    assert counted == {
        (("job", "send"), ("priority", "high"), ("routing_key", "emails")): 1.0,
        (("job", "send"), ("priority", "normal"), ("routing_key", "emails")): 1.0,
        (("job", "bill"), ("priority", "normal"), ("routing_key", "default")): 1.0,
    }


def test_a_collector_can_read_counts_it_does_not_keep() -> None:
    clock = Clock()
    counts = [3, 1, 2.0]
    collector = Collector(clock=clock, counts=lambda: (int(counts[0]), int(counts[1]), counts[2]), concurrency=8)
    collector.running = lambda: 2
    clock.now += 10
    assert collector.snapshot() == snapshot_of(3, 1, 2.0, 2, 8, 10.0)
    counts[0] = 7
    assert collector.snapshot().completed == 7


@pytest.mark.anyio
async def test_the_default_system_metrics_line_registers_no_observer(caplog: pytest.LogCaptureFixture) -> None:
    """Without a metrics port the worker's line reads the executor's counters: nothing is
    registered, so a job costs no observer call."""
    import logging
    import uuid

    from bananas import AsyncClient, JobContext, Registry, connect
    from bananas.config import WorkerConfig
    from bananas.metrics.worker import MetricsOptions, worker_metrics
    from bananas.worker import Executor, Pool
    from waiting import eventually

    registry = Registry()

    @registry.handler("ok")
    async def ok(ctx: JobContext, job: Job) -> None:
        return None

    @registry.handler("bad")
    async def bad(ctx: JobContext, job: Job) -> None:
        raise RuntimeError("no")

    backend = connect(f"memory://line-{uuid.uuid4().hex}")
    executor = Executor(registry, backend.queue, 3, clock=backend.clock)
    pool = Pool(executor, backend, WorkerConfig(concurrency=3, scheduler_interval=0.1), poll_interval=0.05)
    before = observe.observers()
    caplog.set_level(logging.INFO, logger="bananas.worker")
    try:
        async with worker_metrics(MetricsOptions(interval=0.05), backend, executor, lambda: pool.running) as got:
            assert got is not None and observe.observers() == before
            await pool.start()
            async with AsyncClient(backend=backend) as client:
                for _ in range(4):
                    await client.submit_job("ok")
                await client.submit_job("bad", max_retries=1)
            await eventually(lambda: "processed=5 completed=4 failed=1" in caplog.text, what="a line counting 5")
            await pool.stop()
    finally:
        await backend.close()
    line = next(r for r in caplog.records if "processed=5 " in r.getMessage())
    assert line.metrics["error_rate"] == pytest.approx(0.2) and line.metrics["concurrency"] == 3  # type: ignore[attr-defined]

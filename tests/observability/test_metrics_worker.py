"""A real worker process with ``--metrics-port`` on Redis, PostgreSQL and SQLite: after jobs that
succeed, retry and die, one scrape of /metrics has the exact counts, and the probes answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from bananas import Client, JobStatus
from observability.metrics_support import MetricsWorker, job_counts, store_url, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(params=("redis", "postgresql", "sqlite"))
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(request.param, request, tmp_path)


@pytest.fixture
def worker(url: str, tmp_path: Path) -> Iterator[MetricsWorker]:
    started = MetricsWorker(url, tmp_path, "--metrics-interval", "0")
    try:
        started.wait_until_serving()
        yield started
    finally:
        started.stop()


EXPECTED = {
    "bananas_jobs_completed_total": {"ok": 3.0, "flaky": 1.0},
    "bananas_jobs_failed_total": {"flaky": 1.0, "doomed": 2.0},
    "bananas_jobs_retried_total": {"flaky": 1.0, "doomed": 1.0},
    "bananas_jobs_dead_total": {"doomed": 1.0},
}


def test_a_scrape_has_the_exact_counts(url: str, worker: MetricsWorker) -> None:
    with Client(url) as client:
        ids = [client.submit_job("ok", n) for n in range(3)]
        ids.append(client.submit_job("flaky", max_retries=3))
        doomed = client.submit_job("doomed", max_retries=2)
        final = {JobStatus.COMPLETED, JobStatus.FAILED}
        wait_for(lambda: all(client.get_job(i).status in final for i in [*ids, doomed]), 60, "every job to end", worker)
        assert client.get_job(doomed).status is JobStatus.FAILED

    def counted() -> bool:
        samples = worker.scrape()
        return all(job_counts(samples, name) == want for name, want in EXPECTED.items())

    wait_for(counted, 10, "the counters to reach the expected counts", worker)
    samples = worker.scrape()
    assert {name: job_counts(samples, name) for name in EXPECTED} == EXPECTED
    durations = {
        dict(labels)["job"]: v for (n, labels), v in samples.items() if n == "bananas_job_duration_seconds_count"
    }
    assert durations == {"ok": 3.0, "flaky": 2.0, "doomed": 2.0}
    waits = sum(v for (n, _), v in samples.items() if n == "bananas_job_wait_seconds_count")
    assert waits == 7.0  # every claim: 3 + 2 + 2 attempts
    assert samples[("bananas_leases_reaped_total", ())] == 0.0
    assert samples[("bananas_worker_concurrency", ())] == 10.0
    assert samples[("bananas_jobs_in_flight", ())] == 0.0
    assert samples[("bananas_store_up", ())] == 1.0
    assert samples[("bananas_dead_jobs", ())] == 1.0
    assert samples[("bananas_workers_alive", ())] == 1.0
    assert samples[("bananas_processing_jobs", ())] == 0.0
    assert worker.get("/healthz") == (200, "alive\n")
    assert worker.get("/readyz") == (200, "ready\n")
    assert worker.get("/nope")[0] == 404


def test_queue_depth_counts_waiting_jobs_by_routing_key_and_priority(url: str, worker: MetricsWorker) -> None:
    with Client(url) as client:  # routing keys this worker does not serve: the jobs wait
        for _ in range(2):
            client.submit_job_with_route("ok", None, "high", "elsewhere")
        client.submit_job_with_route("ok", None, "low", "elsewhere")
    samples = worker.scrape()
    depth = {labels: v for (n, labels), v in samples.items() if n == "bananas_queue_depth" and v}
    assert depth == {
        (("priority", "high"), ("routing_key", "elsewhere")): 2.0,
        (("priority", "low"), ("routing_key", "elsewhere")): 1.0,
    }

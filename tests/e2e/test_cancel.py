"""Cancellation with real worker processes on every installed server backend: a running async
handler is cancelled and a sync one returns within a few lease renewals, neither is retried,
and a scheduled job cancelled before its time never runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from bananas import Client, JobStatus
from bananas.cancel import CancelOutcome
from e2e_helpers import read_log, wait_for

pytestmark = pytest.mark.slow

LEASE = "1.5"
"""A short lease: workers renew, and learn of cancellations, every 0.5 s."""

WITHIN = 5.0
"""Seconds from the cancel to the cancelled result: a few renewal intervals."""


@pytest.mark.parametrize("handler", ["wait_forever", "poll_cancelled"])
def test_a_running_handler_is_stopped_within_a_few_renewals(
    backend_url: str, workers: Any, tmp_path: Path, handler: str
) -> None:
    log = tmp_path / "cancel.log"
    workers(backend_url, "--lease", LEASE)
    with Client(backend_url) as client:
        job_id = client.submit_job(handler, {"log": str(log)}, max_retries=3)
        wait_for(lambda: any(e["event"] == "start" for e in read_log(log)), 30, "the handler to start")
        assert client.cancel(job_id) is CancelOutcome.REQUESTED
        asked = time.monotonic()
        result = client.wait_for_result(job_id, timeout=30)
        took = time.monotonic() - asked
        job = client.get_job(job_id)
        assert result.is_cancelled(), result
        assert took < WITHIN, f"the cancelled job took {took:.1f}s to end"
        assert job.status is JobStatus.CANCELLED and job.attempts == 0
        assert client.cancel(job_id) is CancelOutcome.ALREADY_FINISHED
        after = client.submit_and_wait("echo", 1, timeout=30)  # the worker carries on
    assert after.is_success()
    events = [e["event"] for e in read_log(log)]
    assert events == ["start", "cancelled" if handler == "wait_forever" else "stopped"], events


def test_a_scheduled_job_cancelled_before_its_time_never_runs(backend_url: str, workers: Any, tmp_path: Path) -> None:
    log = tmp_path / "scheduled.log"
    workers(backend_url, "--lease", LEASE)
    with Client(backend_url) as client:
        job_id = client.submit_job_scheduled("record", {"log": str(log)}, "normal", 1.0)
        assert client.cancel(job_id) is CancelOutcome.CANCELLED
        later = client.submit_job_scheduled("record", {"log": str(log)}, "normal", 1.5)
        assert client.wait_for_result(later, timeout=30).is_success()  # past the cancelled one's time
        assert client.get_job(job_id).status is JobStatus.CANCELLED
        assert client.wait_for_result(job_id, timeout=1).is_cancelled()
    assert {e["id"] for e in read_log(log)} == {later}, "the cancelled job ran"

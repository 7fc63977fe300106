"""Cancellation with real worker processes on every installed server backend: a running async
handler is cancelled and a sync one returns within a few lease renewals, neither is retried,
a scheduled job cancelled before its time never runs, and a cancelled workflow stops its
running step and never starts the rest."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from bananas import Client, JobStatus, chain, group, task
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


def test_cancel_workflow_stops_the_running_step_and_starts_nothing_after_it(
    backend_url: str, workers: Any, tmp_path: Path
) -> None:
    log = tmp_path / "workflow.log"
    workers(backend_url, "--lease", LEASE)
    record = task("record", {"log": str(log)})
    with Client(backend_url) as client:
        wid = client.submit(chain(task("wait_forever", {"log": str(log)}), group(record, record), record))
        wait_for(lambda: any(e["event"] == "start" for e in read_log(log)), 30, "the first step to start")
        first, *rest = [s.job_id for s in client.get_workflow(wid).step_list()]
        answer = client.cancel_workflow(wid)
        assert answer == {first: CancelOutcome.REQUESTED, **dict.fromkeys(rest, CancelOutcome.CANCELLED)}
        asked = time.monotonic()
        info = client.wait_for_workflow(wid, timeout=30)
        took = time.monotonic() - asked
        assert info.state == "cancelled" and took < WITHIN, (info.state, took)
        assert [s.state for s in info.step_list()] == ["cancelled"] * 4
        assert client.wait_for_result(first, timeout=1).is_cancelled()
        assert client.cancel_workflow(wid) == {}
        assert client.submit_and_wait("echo", 1, timeout=30).is_success()  # the workers carry on
    assert [(e["event"], e["id"]) for e in read_log(log)] == [("start", first), ("cancelled", first)]

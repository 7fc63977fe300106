"""End to end, with real processes, on every installed server backend (Redis, PostgreSQL,
SQLite): jobs submitted through ``Client`` run in worker processes started as users start
them, and no job is lost when a worker is stopped or killed."""

from __future__ import annotations

import shutil
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from bananas import Client, JobStatus
from bananas.timefmt import to_timestamp
from e2e_helpers import read_log, wait_for

pytestmark = pytest.mark.slow


def _bananas_command() -> list[str] | None:
    script = Path(sys.executable).with_name("bananas")
    found = str(script) if script.exists() else shutil.which("bananas")
    return [found, "worker"] if found else None


@pytest.mark.parametrize("launcher", ["bananas worker", "python -m bananas.worker"])
def test_submit_run_and_read_back(backend_url: str, workers: Any, launcher: str) -> None:
    command = _bananas_command() if launcher == "bananas worker" else None
    if launcher == "bananas worker" and command is None:
        pytest.skip("the bananas console script is not installed")
    worker = workers(backend_url, "--concurrency", "4", command=command)
    with Client(backend_url) as client:
        result = client.submit_and_wait("echo", {"hello": ["world", 1]}, "high", timeout=30)
        assert result.is_success(), result.error
        assert result.result == {"hello": ["world", 1]}
        sync = client.submit_and_wait("echo_sync", 42, timeout=30)
        assert sync.result == {"sync": 42}
        routed = client.submit_job_with_route("echo", "gpu job", "normal", "gpu")
        time.sleep(0.5)
        assert client.get_job(routed).status is JobStatus.PENDING  # nobody serves "gpu"
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_retries_reach_the_dead_letter_queue(backend_url: str, workers: Any) -> None:
    workers(backend_url)
    with Client(backend_url) as client:
        job_id = client.submit_job("fail", max_retries=2)  # one retry after a 2 s backoff
        result = client.wait_for_result(job_id, timeout=30)
        job = client.get_job(job_id)
    assert result.is_failed()
    assert result.error == "RuntimeError: failing on purpose (attempt 2)"
    assert job.status is JobStatus.FAILED
    assert job.attempts == job.max_retries == 2


def test_a_scheduled_job_does_not_run_early(backend_url: str, workers: Any, tmp_path: Path) -> None:
    log = tmp_path / "scheduled.log"
    workers(backend_url)
    with Client(backend_url) as client:
        job_id = client.submit_job_scheduled("record", {"log": str(log)}, "normal", 2.0)
        due = client.get_job(job_id).scheduled_for
        assert due is not None
        result = client.wait_for_result(job_id, timeout=30)
    assert result.is_success()
    [start] = [e for e in read_log(log) if e["event"] == "start"]
    assert start["at"] >= to_timestamp(due)


def test_sigterm_during_a_burst_loses_no_job(backend_url: str, workers: Any, tmp_path: Path) -> None:
    log = tmp_path / "burst.log"
    first = workers(backend_url, "--concurrency", "4", "--grace-period", "0.3")
    with Client(backend_url) as client:
        ids = client.submit_many([{"name": "record", "payload": {"log": str(log), "sleep": 0.2}} for _ in range(40)])
        wait_for(lambda: sum(e["event"] == "done" for e in read_log(log)) >= 8, 30, "the first jobs to finish")
        first.signal(signal.SIGTERM)
        assert first.wait() == 0
        assert "handed" in first.output() or "stopped" in first.output()
        workers(backend_url, "--concurrency", "8")
        results = [client.wait_for_result(i, timeout=60) for i in ids]
        jobs = [client.get_job(i) for i in ids]
    assert all(r.is_success() for r in results)
    assert {j.status for j in jobs} == {JobStatus.COMPLETED}
    done = Counter(e["id"] for e in read_log(log) if e["event"] == "done")
    assert set(done) == set(ids)
    assert max(j.attempts for j in jobs) == 0  # stopping gracefully costs no attempt


def test_kill_9_mid_job_loses_no_job(backend_url: str, workers: Any, tmp_path: Path) -> None:
    log = tmp_path / "killed.log"
    victim = workers(backend_url, "--lease", "2")
    with Client(backend_url) as client:
        job_id = client.submit_job("record", {"log": str(log), "hang_first": True})
        wait_for(lambda: bool(read_log(log)), 30, "the job to start")
        victim.signal(signal.SIGKILL)
        victim.wait()
        workers(backend_url, "--lease", "2")  # reaps the expired lease, then runs the job again
        result = client.wait_for_result(job_id, timeout=30)
        job = client.get_job(job_id)
    assert result.is_success()
    starts = [e for e in read_log(log) if e["event"] == "start"]
    assert [s["id"] for s in starts] == [job_id, job_id]
    assert starts[0]["pid"] == victim.proc.pid
    assert starts[1]["pid"] == result.result["pid"] != victim.proc.pid
    assert job.status is JobStatus.COMPLETED
    assert job.attempts == 1  # the lost attempt counts


def test_a_second_sigterm_stops_at_once_and_hands_the_job_back(backend_url: str, workers: Any, tmp_path: Path) -> None:
    log = tmp_path / "second-signal.log"
    worker = workers(backend_url, "--grace-period", "600")
    with Client(backend_url) as client:
        job_id = client.submit_job("record", {"log": str(log), "hang_first": True})
        wait_for(lambda: bool(read_log(log)), 30, "the job to start")
        worker.signal(signal.SIGTERM)
        time.sleep(0.3)
        assert worker.proc.poll() is None  # the first signal waits for the running job
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0
        handed_back = client.get_job(job_id)
        assert (handed_back.status, handed_back.attempts) == (JobStatus.PENDING, 0)
        workers(backend_url)
        result = client.wait_for_result(job_id, timeout=30)
    assert result.is_success()

"""``LOG_FORMAT=json``: every line a real worker prints is one JSON object, and every job outcome
has a line (at INFO or above) carrying the job's fields; the "System metrics" line carries the
snapshot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bananas import Client, JobStatus
from observability.metrics_support import MetricsWorker, store_url, wait_for

pytestmark = pytest.mark.slow

JOB_FIELDS = {"job_id", "job_name", "attempt", "routing_key", "priority", "worker_id"}


def test_every_line_is_json_and_job_lines_carry_the_job(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = store_url("sqlite", request, tmp_path)
    worker = MetricsWorker(url, tmp_path, "--metrics-interval", "500ms", env={"LOG_FORMAT": "json"})
    try:
        worker.wait_until_serving()
        with Client(url) as client:
            ok = client.submit_job_with_route("ok", 1, "high", "default")
            flaky = client.submit_job("flaky", max_retries=3)
            doomed = client.submit_job("doomed", max_retries=2)
            final = {JobStatus.COMPLETED, JobStatus.FAILED}
            ids = (ok, flaky, doomed)
            wait_for(lambda: all(client.get_job(i).status in final for i in ids), 60, "every job to end", worker)
        wait_for(lambda: "processed=5 " in worker.output(), 10, "a System metrics line counting all 5 attempts", worker)
        assert worker.terminate() == 0
    finally:
        worker.stop()
    lines = [line for line in worker.output().splitlines() if line.strip()]
    records: list[dict[str, Any]] = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)

    job_lines = [r for r in records if "job_id" in r]
    assert all(set(r) >= JOB_FIELDS for r in job_lines), job_lines
    worker_ids = {r["worker_id"] for r in job_lines}
    assert len(worker_ids) == 1 and worker_ids != {""}

    def outcome(job_id: str) -> list[tuple[str, int, str]]:
        return [(r["level"], r["attempt"], r["message"]) for r in job_lines if r["job_id"] == job_id]

    (ok_line,) = outcome(ok)
    assert ok_line[:2] == ("INFO", 1) and " (ok) succeeded in " in ok_line[2]
    assert [r["priority"] for r in job_lines if r["job_id"] == ok] == ["high"]
    assert [(level, n) for level, n, _ in outcome(flaky)] == [("WARNING", 1), ("INFO", 2)]
    assert "will retry" in outcome(flaky)[0][2] and "succeeded" in outcome(flaky)[1][2]
    assert [(level, n) for level, n, _ in outcome(doomed)] == [("WARNING", 1), ("WARNING", 2)]
    assert "will retry" in outcome(doomed)[0][2] and "dead" in outcome(doomed)[1][2]
    assert {r["job_name"] for r in job_lines} == {"ok", "flaky", "doomed"}

    snapshots = [r["metrics"] for r in records if r["message"].startswith("System metrics: ")]
    assert snapshots, "no System metrics line"
    last = snapshots[-1]
    assert (last["processed"], last["completed"], last["failed"]) == (5, 2, 3)
    assert last["error_rate"] == pytest.approx(3 / 5)
    assert last["concurrency"] == 10 and last["uptime"] > 0

"""Groups with limits with two real worker processes on every server backend: a group with
``max_running=1`` never runs two jobs at once (also when the worker running one is killed -9:
its slot frees when the lease runs out, not before, and is not leaked), a ``5/s`` rate spaces
20 starts over at least ~3.8 s and never lets six into one second, and a small group is served
while a big one drains.

Handlers keep when they started and ended in their results (in the store); the checks are made
on those."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from bananas import Client
from bananas.capabilities import Capability
from bananas.job import JobPriority
from bananas.plugins import connect, resolve
from e2e_helpers import ROOT, wait_for

pytestmark = pytest.mark.slow

APP = "tests.e2e.groups_app:registry"


class GroupWorker:
    """A worker process for :data:`APP` (its output kept for failure reports)."""

    def __init__(self, url: str, log_dir: Path, *args: str) -> None:
        self.log = log_dir / f"worker-{uuid.uuid4().hex[:6]}.log"
        argv = [sys.executable, "-m", "bananas.worker", APP, "--url", url, "--scheduler-interval", "100ms", *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("BANANAS_URL", None)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def group_url(backend_url: str) -> str:
    """``backend_url``, skipped (saying so) where the backend does not declare groups."""
    spec = resolve(backend_url)
    if Capability.GROUPS not in spec.capabilities:
        pytest.skip(f"the {spec.name} backend does not declare the groups capability")
    return backend_url


@pytest.fixture
def start_workers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """``start_workers(url, n, *options)`` starts ``n`` workers; all are killed afterwards, and
    their output printed if the test failed."""
    started: list[GroupWorker] = []
    failed_before = request.session.testsfailed

    def start(url: str, n: int, *args: str) -> list[GroupWorker]:
        new = [GroupWorker(url, tmp_path, *args) for _ in range(n)]
        started.extend(new)
        return new

    yield start
    for worker in started:
        worker.kill()
    if request.session.testsfailed > failed_before:  # the call's report is logged before teardown
        for worker in started:
            print(f"--- worker {worker.proc.pid} (exit {worker.proc.returncode}) ---\n{worker.log.read_text()}")


def spans(client: Client, job_ids: Sequence[str], timeout: float = 30.0) -> list[dict[str, Any]]:
    """The results of ``span`` jobs (start, end, pid), in start order, once all succeeded."""
    results = [client.wait_for_result(job_id, timeout=timeout) for job_id in job_ids]
    assert all(r.is_success() for r in results), [r for r in results if not r.is_success()]
    return sorted((r.result for r in results), key=lambda s: s["start"])


def assert_one_at_a_time(runs: list[dict[str, Any]]) -> None:
    for before, after in itertools.pairwise(runs):
        assert after["start"] >= before["end"], f"two jobs of the group ran at once: {before} and {after}"


WORKER_OPTIONS = ("--concurrency", "4", "--prefetch", "0")
"""Free slots, no prefetch: a job starts as soon as it is claimed, so start times are claim times."""


def test_max_running_1_never_runs_two_at_once(group_url: str, start_workers: Any) -> None:
    start_workers(group_url, 2, *WORKER_OPTIONS)
    with Client(group_url) as client:
        client.set_group_limit("solo", max_running=1)
        ids = [client.submit_job("span", {"sleep": 0.2}, group="solo") for _ in range(8)]
        free = [client.submit_job("span", {"sleep": 0.2}) for _ in range(4)]  # no group: not held back
        runs = spans(client, ids)
        others = spans(client, free)
    assert_one_at_a_time(runs)
    assert runs[-1]["start"] - runs[0]["start"] >= 7 * 0.2
    assert any(o["end"] > r["start"] and o["start"] < r["end"] for o in others for r in runs), (
        "jobs without a group waited for the group's"
    )


def test_a_killed_workers_slot_frees_when_its_lease_runs_out(
    group_url: str, start_workers: Any, tmp_path: Path
) -> None:
    lease = 2.0
    log = tmp_path / "starts.log"
    workers = start_workers(group_url, 2, *WORKER_OPTIONS, "--lease", str(lease))
    with Client(group_url) as client:
        client.set_group_limit("solo", max_running=1)
        ids = [client.submit_job("span", {"sleep": 1.0, "log": str(log)}, group="solo") for _ in range(3)]

        def started() -> list[dict[str, Any]]:
            return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

        wait_for(lambda: bool(started()), 30, "the first job to start")
        first = started()[0]
        [victim] = [w for w in workers if w.proc.pid == first["pid"]]
        victim.kill()  # mid-job: its claim holds the group's only slot until the lease runs out
        runs = spans(client, ids, timeout=60)
        retried = client.get_job(first["id"])
    assert_one_at_a_time(runs)
    later = [s["at"] for s in started()[1:]]
    assert later, "no job of the group started after the kill: the slot leaked"
    # The killed claim's lease ran from (just before) its start for `lease` seconds.
    assert min(later) >= first["at"] + lease - 0.1, (
        f"a job started {min(later) - first['at']:.2f}s after the killed one, before its lease ran out"
    )
    assert retried.attempts == 1, "the killed job was not run again once its lease ran out"


def test_rate_5_per_second_lets_no_6_starts_into_one_second(group_url: str, start_workers: Any) -> None:
    start_workers(group_url, 2, *WORKER_OPTIONS)
    with Client(group_url) as client:
        client.set_group_limit("paced", rate="5/s")
        # Warm both workers up: a fresh process's first jobs start tens of ms after their claim.
        spans(client, [client.submit_job("span", {}) for _ in range(8)])
        ids = [client.submit_job("span", {}, group="paced") for _ in range(20)]
        starts = [run["start"] for run in spans(client, ids)]
    # The starts are spaced, one every 0.2 s: 20 of them span 3.8 s.
    assert starts[-1] - starts[0] >= 3.8 - 0.1, f"20 starts at 5/s took only {starts[-1] - starts[0]:.2f}s"
    crowded = [(a, b) for a, b in zip(starts, starts[5:], strict=False) if b - a < 1.0 - 0.05]
    assert not crowded, f"6 starts within one second (claim-to-start slack 50 ms): {crowded} in {starts}"


def test_a_small_group_is_served_while_a_big_one_drains(group_url: str, start_workers: Any) -> None:
    big = 10_000
    with Client(group_url) as client:
        client.submit_many([{"name": "tick", "group": "big"} for _ in range(big)], batch_size=1000)
        small = client.submit_many([{"name": "span", "payload": {}, "group": "small"} for _ in range(10)])
        start_workers(group_url, 2, "--concurrency", "10")
        for job_id in small:
            assert client.wait_for_result(job_id, timeout=60).is_success()
    waiting = asyncio.run(_ready(group_url))
    assert waiting >= big // 2, f"only {waiting} of the big group's {big} jobs were left when the small group finished"


async def _ready(url: str) -> int:
    backend = connect(url)
    try:
        depths = await backend.queue.depths()
    finally:
        await backend.close()
    return depths.ready.get(("default", JobPriority.NORMAL), 0)


def test_workers_are_idle_not_busy_while_a_group_is_held_back(group_url: str, start_workers: Any) -> None:
    """A paused group's jobs stay queued: no attempt, no error, and the workers do not spin."""
    [worker] = start_workers(group_url, 1, *WORKER_OPTIONS)
    with Client(group_url) as client:
        client.set_group_limit("paused", max_running=0)
        held = client.submit_job("span", {}, group="paused")
        assert client.submit_and_wait("span", {}, timeout=30).is_success()  # the worker is up and claiming
        cpu_before = _cpu_seconds(worker.proc.pid)
        time.sleep(2.0)
        cpu = _cpu_seconds(worker.proc.pid) - cpu_before
        job = client.get_job(held)
    assert job.status.value == "pending" and job.attempts == 0 and not job.error, job
    assert cpu < 0.5, f"the worker used {cpu:.2f}s of CPU in 2s with only held-back work: a busy loop"


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

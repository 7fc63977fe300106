"""``bananas exporter``: a real exporter process serves the store-wide gauges of Redis, PostgreSQL
and SQLite with the exact numbers, answers its probes, and refuses a port in use in one line."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bananas import Client, connect
from observability.metrics_support import ROOT, Samples, http_get, store_url
from servers import free_port

pytestmark = pytest.mark.slow

BANANAS = [sys.executable, "-c", "import sys; from bananas.cli import main; sys.exit(main())"]


@pytest.fixture(params=("redis", "postgresql", "sqlite"))
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_url(request.param, request, tmp_path)


class Exporter:
    def __init__(self, url: str, *args: str) -> None:
        self.port = free_port()
        argv = [*BANANAS, "exporter", "--url", url, "--port", str(self.port), *args]
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def get(self, path: str) -> tuple[int, str]:
        return http_get(self.port, path)

    def wait_until_serving(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.get("/healthz")[0] != 200:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the exporter did not start: {self.proc.communicate(timeout=5)}")
            time.sleep(0.05)

    def scrape(self) -> Samples:
        from prometheus_client.parser import text_string_to_metric_families

        status, text = self.get("/metrics")
        assert status == 200, text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def exporter(url: str) -> Iterator[Exporter]:
    started = Exporter(url)
    try:
        started.wait_until_serving()
        yield started
    finally:
        started.stop()


async def kill_one(url: str, routing_key: str) -> None:
    """Claim one job of ``routing_key`` and fail it for good: a dead letter."""
    backend = connect(url)
    try:
        (job,) = await backend.queue.claim([routing_key], limit=1)
        await backend.queue.fail(job, "gave up", retry_at=None)
    finally:
        await backend.close()


def test_the_gauges_are_the_stores_numbers(url: str, exporter: Exporter) -> None:
    with Client(url) as client:
        for _ in range(3):
            client.submit_job_with_route("a", None, "high", "emails")
        client.submit_job_with_route("a", None, "low", "emails")
        client.submit_job_with_route("b", None, "normal", "reports")
        client.submit_job_scheduled("c", None, "normal", 3600)
        client.submit_job_with_route("d", None, "normal", "doomed")
    asyncio.run(kill_one(url, "doomed"))
    samples = exporter.scrape()
    depth = {labels: v for (name, labels), v in samples.items() if name == "bananas_queue_depth" and v}
    assert depth == {
        (("priority", "high"), ("routing_key", "emails")): 3.0,
        (("priority", "low"), ("routing_key", "emails")): 1.0,
        (("priority", "normal"), ("routing_key", "reports")): 1.0,
    }
    wanted = {"scheduled_jobs": 1.0, "processing_jobs": 0.0, "dead_jobs": 1.0, "workers_alive": 0.0, "store_up": 1.0}
    assert {name: samples[(f"bananas_{name}", ())] for name in wanted} == wanted
    assert not [name for name, _ in samples if name.startswith("bananas_jobs_")]  # no worker counters here
    assert exporter.get("/readyz") == (200, "ready\n")
    exporter.proc.send_signal(signal.SIGTERM)
    assert exporter.proc.wait(30) == 0


def test_a_port_in_use_is_one_line_and_exit_code_2(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = store_url("sqlite", request, tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [*BANANAS, "exporter", "--url", url, "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if k != "BANANAS_URL"},
        )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"bananas: cannot serve metrics on 127.0.0.1:{port}: "), lines

"""Helpers of the metrics tests: a worker process of ``metrics_app`` with a metrics port, scrapes
parsed with prometheus_client's parser, and the URL of an isolated store per backend."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import isolated_store
from servers import free_port

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.observability.metrics_app:registry"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def store_url(scheme: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An isolated store on ``scheme`` (a fresh namespace or file), its schema created."""
    return isolated_store(scheme, request, tmp_path, "obs")


def http_get(port: int, path: str) -> tuple[int, str]:
    """``(status, body)`` of ``GET http://127.0.0.1:port/path`` (status 0 if nothing answers)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


class MetricsWorker:
    """``python -m bananas.worker metrics_app`` with ``--metrics-port`` (output kept in a file)."""

    def __init__(self, url: str, log_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.log = log_dir / f"worker-{uuid.uuid4().hex[:6]}.log"
        argv = [sys.executable, "-m", "bananas.worker", APP, "--url", url, "--scheduler-interval", "100ms"]
        argv += ["--metrics-port", str(self.port), *args]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env.pop("BANANAS_URL", None)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=full_env)

    def get(self, path: str) -> tuple[int, str]:
        """``(status, body)`` of ``GET path`` (status 0 if nothing answers)."""
        return http_get(self.port, path)

    def scrape(self) -> Samples:
        """The samples of ``/metrics`` by ``(name, sorted labels)``."""
        from prometheus_client.parser import text_string_to_metric_families

        status, text = self.get("/metrics")
        assert status == 200, (status, text, self.output())
        samples: Samples = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return samples

    def wait_until_serving(self, timeout: float = 30.0) -> None:
        wait_for(lambda: self.get("/healthz")[0] == 200, timeout, "the metrics port to answer", self)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def wait_for(check: Callable[[], Any], timeout: float, what: str, worker: MetricsWorker | None = None) -> None:
    """Poll ``check()`` until true; fail naming ``what`` (and showing the worker's output) after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if worker is not None and worker.proc.poll() is not None:
            raise AssertionError(f"the worker exited ({worker.proc.returncode}) before {what}:\n{worker.output()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{worker.output() if worker else ''}")
        time.sleep(0.05)


def job_counts(samples: Samples, name: str) -> dict[str, float]:
    """``{job name: value}`` of the per-job counter ``name`` (all on routing key default, priority normal)."""
    out: dict[str, float] = {}
    for (sample, labels), value in samples.items():
        if sample == name:
            fields = dict(labels)
            assert (fields["routing_key"], fields["priority"]) == ("default", "normal"), labels
            out[fields["job"]] = value
    return out

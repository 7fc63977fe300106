"""Helpers of the end-to-end tests: which backends are installed, worker processes, logs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bananas.errors import UnknownBackendScheme
from bananas.plugins import connect, resolve

ROOT = Path(__file__).resolve().parents[2]


def installed(scheme: str) -> bool:
    """True if a plugin serving ``scheme://`` is installed."""
    try:
        resolve(f"{scheme}://x")
    except UnknownBackendScheme:
        return False
    return True


def isolated_store(scheme: str, request: Any, tmp_path: Path, prefix: str = "t") -> str:
    """The URL of an isolated store on ``scheme``: a fresh namespace on the test's Redis or
    PostgreSQL server (fixtures ``redis_url`` / ``postgres_url``), or a fresh SQLite file;
    its schema created. Skips, with the reason, when no installed plugin serves ``scheme``."""
    import pytest

    if not installed(scheme):
        pytest.skip(f"no installed plugin serves {scheme}:// yet")
    if scheme == "sqlite":
        url = f"sqlite:///{tmp_path / f'{prefix}.db'}"
    else:
        base = request.getfixturevalue("redis_url" if scheme == "redis" else "postgres_url")
        url = f"{base}{'&' if '?' in base else '?'}namespace={prefix}{uuid.uuid4().hex[:10]}"
    migrate(url)
    return url


def migrate(url: str) -> None:
    spec = resolve(url)
    if spec.migrate is None:
        return
    backend = connect(url)
    try:
        asyncio.run(spec.migrate(url, backend.options))
    finally:
        asyncio.run(backend.close())


class Worker:
    """A worker process for ``tests.e2e.app:registry`` (stderr kept for failure reports)."""

    def __init__(self, url: str, log_dir: Path, *args: str, command: list[str] | None = None) -> None:
        self.log = log_dir / f"worker-{uuid.uuid4().hex[:6]}.log"
        base = command or [sys.executable, "-m", "bananas.worker"]
        argv = [*base, "tests.e2e.app:registry", "--url", url, "--scheduler-interval", "100ms", *args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("BANANAS_URL", None)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 30.0) -> int:
        """The exit code; fails with the worker's last output lines if it runs ``timeout`` s longer."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            tail = "\n".join(self.output().splitlines()[-40:])
            raise AssertionError(f"the worker did not exit within {timeout}s; its last output:\n{tail}") from None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGKILL)
            self.proc.wait(10)


def read_log(path: Path) -> list[dict[str, Any]]:
    """The lines the ``record`` handler wrote."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for(check: Any, timeout: float, what: str) -> None:
    """Poll ``check()`` until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)

"""A real worker process never prints a Redis password given as ``?password=`` or ``:pw@``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import RedisServer, free_port

BANANAS = Path(sys.executable).with_name("bananas")
SECRET = "Zq9sEcReT42"

pytestmark = pytest.mark.slow


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "redactapp.py").write_text("from bananas.worker import Registry\n\nregistry = Registry()\n")
    return tmp_path


@pytest.fixture
def protected_redis() -> Iterator[RedisServer]:
    """A throwaway redis-server that demands SECRET."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    server = RedisServer(extra=["--requirepass", SECRET]).start()
    try:
        yield server
    finally:
        server.stop()


def _env(app: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BANANAS_URL", "BANANAS_DEBUG")}
    env["PYTHONPATH"] = str(app)
    return env


def test_start_line_of_a_worker_hides_the_query_password(app: Path, protected_redis: RedisServer) -> None:
    url = f"redis://127.0.0.1:{protected_redis.port}/0?password={SECRET}&namespace=redact-{os.getpid()}"
    worker = subprocess.Popen(
        [str(BANANAS), "worker", "redactapp:registry", "--url", url, "--concurrency", "1"],
        cwd=app, env=_env(app), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert worker.stderr is not None
        deadline = time.monotonic() + 30
        seen = []
        while time.monotonic() < deadline:
            line = worker.stderr.readline()
            if not line:
                break
            seen.append(line)
            if "serving" in line:
                break
        assert any("serving" in line for line in seen), "".join(seen)  # so the password was accepted
    finally:
        worker.terminate()
        out, err = worker.communicate(timeout=30)
    output = "".join(seen) + out + err
    assert SECRET not in output, output
    assert f"redis://127.0.0.1:{protected_redis.port}/0?password=***&namespace=redact-" in output, output


@pytest.mark.parametrize(
    "template",
    [
        "redis://127.0.0.1:{port}/0?password={secret}&retry_for=0.5",
        "redis://:{secret}@127.0.0.1:{port}/0?retry_for=0.5",
        "redis+sentinel://:{secret}@127.0.0.1:{port},127.0.0.1:{port}/mymaster/0?retry_for=0.5&sentinel_password=x",
    ],
)
def test_unreachable_error_of_a_worker_hides_the_password(app: Path, template: str) -> None:
    url = template.format(port=free_port(), secret=SECRET)
    done = subprocess.run(
        [str(BANANAS), "worker", "redactapp:registry", "--url", url],
        cwd=app, env=_env(app), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "is unreachable" in output and "***" in output, output
    assert SECRET not in output, output


def test_stats_command_error_hides_the_password(app: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0?password={SECRET}&retry_for=0.5"
    done = subprocess.run(
        [str(BANANAS), "stats", "--url", url],
        cwd=app, env=_env(app), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "password=***" in output and SECRET not in output, output

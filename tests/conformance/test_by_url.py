"""The whole suite by URL with no code at all, as a third party runs it::

    pytest --pyargs bananas.testing.run --bananas-url sqlite:///$(mktemp -d)/t.db

Each run is a subprocess outside this repository (no conftest, no fixture overrides): the
default factory must create each namespace's schema itself, through the backend's migration.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each is a whole suite run


def run_suite(url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs", "bananas.testing.run",
         "--bananas-url", url],
        cwd=cwd, capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip


def assert_passed(result: subprocess.CompletedProcess[str]) -> None:
    tail = "\n".join(result.stdout.splitlines()[-15:])
    assert result.returncode == 0, tail + result.stderr[-2000:]
    assert " passed" in tail and "failed" not in tail and "error" not in tail, tail


def test_sqlite_by_url(tmp_path: Path) -> None:
    assert_passed(run_suite(f"sqlite:///{tmp_path}/t.db", tmp_path))


def test_postgres_by_url(postgres_url: str, tmp_path: Path) -> None:
    assert_passed(run_suite(postgres_url, tmp_path))

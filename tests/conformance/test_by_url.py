"""The suite by URL with no code at all, as a third party runs it::

    pytest --pyargs bananas.testing.run --bananas-url sqlite:///$(mktemp -d)/t.db

Each run is a subprocess outside this repository (no conftest, no fixture overrides): the
default factory must create each namespace's schema itself, through the backend's migration.
The runs select the tests of the newest tables (groups, unique keys, cancellation): the
whole suite runs the same way, URL and default factory, in test_sqlite.py and
test_postgres.py, and a second whole run here cost ten minutes of CI for nothing more.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each is a suite run in a subprocess

SELECTION = "(groups or unique or cancel) and not follow_the_rule"
"""The tests of the newest schema steps; the property test of unique keys connects once per
example (each a namespace to migrate), which the in-repository runs cover."""


def run_suite(url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs", "bananas.testing.run",
         "--bananas-url", url, "-k", SELECTION],
        cwd=cwd, capture_output=True, text=True, timeout=1200, check=False,
    )  # fmt: skip


def assert_passed(result: subprocess.CompletedProcess[str]) -> None:
    tail = "\n".join(result.stdout.splitlines()[-15:])
    assert result.returncode == 0, tail + result.stderr[-2000:]
    assert " passed" in tail and "failed" not in tail and "error" not in tail, tail
    passed = re.search(r"(\d+) passed", tail)
    assert passed is not None and int(passed.group(1)) >= 40, tail


def test_sqlite_by_url(tmp_path: Path) -> None:
    assert_passed(run_suite(f"sqlite:///{tmp_path}/t.db", tmp_path))


def test_postgres_by_url(postgres_url: str, tmp_path: Path) -> None:
    assert_passed(run_suite(postgres_url, tmp_path))

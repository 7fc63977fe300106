"""End-to-end fixtures: one URL per installed server backend (fresh namespace or file per
test), and real worker processes started the way users start them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import Worker, isolated_store

BACKENDS = ("redis", "postgresql", "sqlite")


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an isolated store on one server backend (skipped, with a reason, if its plugin is absent)."""
    return isolated_store(request.param, request, tmp_path, "e2e")


@pytest.fixture
def workers(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Start workers with ``workers(url, *options)``; every one still running is killed afterwards."""
    started: list[Worker] = []

    def start(url: str, *args: str, command: list[str] | None = None) -> Worker:
        worker = Worker(url, tmp_path, *args, command=command)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
    report = request.node.stash.get(_FAILED, False)
    if report:
        for worker in started:
            print(f"--- {' '.join(worker.proc.args)} (exit {worker.proc.returncode}) ---\n{worker.output()}")


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[_FAILED] = True
    return report

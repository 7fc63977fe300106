"""Fixtures of the dashboard tests: a store on each backend, real ``bananas dashboard`` and
worker processes, and a headless Debian Chromium driven by Playwright.

The browser is ``/usr/bin/chromium`` (``scripts/ensure-servers`` installs it as root); nothing
is downloaded at test time. Screenshots go to a directory under the test session's tmp dir;
with ``BANANAS_REFRESH_SCREENSHOTS=1`` they are also copied to ``docs/img/dashboard/``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import installed, migrate, wait_for
from servers import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCS_IMAGES = ROOT / "docs" / "img" / "dashboard"
REFRESH_ENV = "BANANAS_REFRESH_SCREENSHOTS"
CHROMIUM = os.environ.get("BANANAS_TEST_CHROMIUM", "/usr/bin/chromium")
BACKENDS = ("redis", "postgresql", "sqlite")


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store: a namespace on the session's throwaway redis-server or PostgreSQL
    cluster, or a temp SQLite file."""
    scheme: str = request.param
    if not installed(scheme):
        pytest.skip(f"no installed plugin serves {scheme}://")
    if scheme in ("redis", "postgresql"):
        base = request.getfixturevalue("redis_url" if scheme == "redis" else "postgres_url")
        url = f"{base}{'&' if '?' in base else '?'}namespace=dash{uuid.uuid4().hex[:10]}"
    else:
        url = f"sqlite:///{tmp_path / 'dashboard.db'}"
    with ThreadPoolExecutor(1) as pool:  # a thread of its own: the session's Playwright loop holds this one
        pool.submit(migrate, url).result()
    return url


class Process:
    """A process we started (a dashboard or a worker); its output kept for failure reports."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        for name in ("BANANAS_URL", "BANANAS_DASHBOARD_TOKEN"):
            env.pop(name, None)
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


class Dashboard(Process):
    """``bananas dashboard`` on a free loopback port; ``base`` is its address once it listens."""

    def __init__(self, url: str, log: Path, *options: str) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "bananas.cli", "dashboard", "--url", url, "--port", str(self.port), *options]
        super().__init__(argv, log)
        self.base = f"http://127.0.0.1:{self.port}"
        wait_for(lambda: "on http://" in self.output() or self.proc.poll() is not None, 30, "the dashboard to listen")
        if self.proc.poll() is not None:
            raise AssertionError(f"the dashboard exited with {self.proc.returncode}:\n{self.output()}")


@pytest.fixture
def processes(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """``processes.dashboard(url, *options)`` and ``processes.worker(url, *options)``; all stopped afterwards."""
    started: list[Process] = []

    class Starter:
        @staticmethod
        def dashboard(url: str, *options: str) -> Dashboard:
            d = Dashboard(url, tmp_path / f"dashboard-{len(started)}.log", *options)
            started.append(d)
            return d

        @staticmethod
        def worker(url: str, *options: str) -> Process:
            argv = [sys.executable, "-m", "bananas.worker", "tests.dashboard.app:registry", "--url", url]
            argv += ["--scheduler-interval", "100ms", *options]
            w = Process(argv, tmp_path / f"worker-{len(started)}.log")
            started.append(w)
            return w

    yield Starter
    for p in started:
        p.stop()
    if request.node.stash.get(FAILED, False):
        for p in started:
            print(f"--- {' '.join(map(str, p.proc.args))} (exit {p.proc.returncode}) ---\n{p.output()}")


FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[FAILED] = True
    return report


def _chromium_missing_reason() -> str | None:
    """Why the browser tests cannot run here, or ``None``. Where the test command could have
    installed chromium (root with apt-get) its absence is a failure, not a skip."""
    if os.path.exists(CHROMIUM):
        return None
    message = f"Debian's chromium is not installed ({CHROMIUM} does not exist)"
    if os.geteuid() == 0 and shutil.which("apt-get"):
        pytest.fail(f"{message}: run scripts/ensure-servers, which installs it as root", pytrace=False)
    return f"{message}, and it installs only as root with apt-get (scripts/ensure-servers)"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium (the Debian package) under Playwright, for one test module.

    Not for the session: while Playwright's sync API runs, its event loop is the running loop
    of the main thread, so ``asyncio.run`` there fails (run store calls on a thread).
    """
    reason = _chromium_missing_reason()
    if reason:
        pytest.skip(reason)
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        )
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser page (own cookies) that accepts every confirmation dialog."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, color_scheme="light")
    pg = context.new_page()
    pg.on("dialog", lambda dialog: dialog.accept())
    pg.set_default_timeout(15_000)
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Any, str], Path]:
    """``screenshots(page, name)`` saves ``name.png`` (full page) under the session's tmp dir,
    and into docs/img/dashboard/ when $BANANAS_REFRESH_SCREENSHOTS is set."""
    folder = tmp_path_factory.mktemp("dashboard-screenshots")
    print(f"dashboard screenshots: {folder}")

    def take(pg: Any, name: str) -> Path:
        if not re.fullmatch(r"[a-z0-9-]+", name):
            raise ValueError(f"screenshot name {name!r}")
        path = folder / f"{name}.png"
        pg.screenshot(path=str(path), full_page=True)
        if os.environ.get(REFRESH_ENV):
            DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, DOCS_IMAGES / path.name)
        return path

    return take

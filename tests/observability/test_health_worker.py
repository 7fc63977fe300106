"""The worker's probes against a store that goes away: /readyz turns 503 while the server is
stopped and 200 once it is back, while /healthz (the worker itself) stays 200 throughout.

Each test starts its own server (never the session's shared one), since it kills it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_helpers import installed, migrate
from observability.metrics_support import MetricsWorker, wait_for
from servers import PostgresServer, RedisServer, find_postgres_bin

pytestmark = pytest.mark.slow


@pytest.fixture(params=("redis", "postgresql"))
def server(request: pytest.FixtureRequest) -> Iterator[Any]:
    scheme = request.param
    if not installed(scheme):
        pytest.skip(f"no installed plugin serves {scheme}:// yet")
    if scheme == "postgresql" and find_postgres_bin() is None:
        pytest.fail("PostgreSQL binaries are missing: run scripts/ensure-servers")
    started = (RedisServer() if scheme == "redis" else PostgresServer()).start()
    try:
        yield started
    finally:
        started.stop()


def test_readyz_follows_the_store_and_healthz_the_worker(server: Any, tmp_path: Path) -> None:
    url = server.url
    migrate(url)
    worker = MetricsWorker(url, tmp_path, "--metrics-interval", "0")
    try:
        worker.wait_until_serving()
        wait_for(lambda: worker.get("/readyz")[0] == 200, 30, "/readyz to say ready", worker)
        server.kill()
        wait_for(lambda: worker.get("/readyz")[0] == 503, 30, "/readyz to say not ready once the store stopped", worker)
        status, body = worker.get("/readyz")
        assert (status, body) == (503, "not ready: the store does not answer\n")
        assert worker.get("/healthz") == (200, "alive\n")
        server.start()
        wait_for(lambda: worker.get("/readyz") == (200, "ready\n"), 60, "/readyz to say ready again", worker)
        assert worker.get("/healthz") == (200, "alive\n")
        assert worker.scrape()[("bananas_store_up", ())] == 1.0
    finally:
        worker.stop()
    assert "Traceback" not in worker.output()


def test_healthz_says_503_while_the_event_loop_is_blocked(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A handler that blocks the loop longer than the probe allows: /healthz answers 503 (from its
    own thread) until the loop turns again."""
    from bananas import Client
    from observability.metrics_support import store_url

    url = store_url("sqlite", request, tmp_path)
    worker = MetricsWorker(url, tmp_path, "--metrics-interval", "0")
    try:
        worker.wait_until_serving()
        with Client(url) as client:
            client.submit_job("block_loop", 14)
        wait_for(lambda: worker.get("/healthz")[0] == 503, 30, "/healthz to notice the blocked loop", worker)
        wait_for(lambda: worker.get("/healthz") == (200, "alive\n"), 30, "/healthz to recover", worker)
    finally:
        worker.stop()

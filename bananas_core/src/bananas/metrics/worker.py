"""Metrics in ``bananas worker``: the periodic "System metrics" line and, with a port, the
``/metrics``, ``/healthz`` and ``/readyz`` endpoints.

``prometheus_client`` is imported only when a metrics port is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from bananas import observe
from bananas.config import parse_duration
from bananas.errors import ConfigError
from bananas.metrics.collector import Collector, JobMetrics, StoreSample, sample_store
from bananas.worker.loop import stop_tasks

if TYPE_CHECKING:
    from bananas.worker.executor import Executor

__all__ = [
    "DEFAULT_INTERVAL",
    "HOST_ENV",
    "INTERVAL_ENV",
    "PORT_ENV",
    "MetricsOptions",
    "metrics_options",
    "serve_metrics",
    "worker_metrics",
]

log = logging.getLogger("bananas.worker")

PORT_ENV = "BANANAS_METRICS_PORT"
HOST_ENV = "BANANAS_METRICS_HOST"
INTERVAL_ENV = "BANANAS_METRICS_INTERVAL"
DEFAULT_INTERVAL = 30.0
"""Seconds between two "System metrics" lines (the original's 30 s)."""
PROBE_TIMEOUT = 3.0
"""Seconds ``/readyz`` waits for the store's ping."""
SAMPLE_TIMEOUT = 5.0
"""Seconds a scrape waits for the store-wide numbers."""


@attrs.frozen
class MetricsOptions:
    """``port``: where to serve the endpoints (``None``: not served); ``host``: the address
    (loopback unless asked); ``interval``: seconds between "System metrics" lines (0: none)."""

    port: int | None = None
    host: str = "127.0.0.1"
    interval: float = DEFAULT_INTERVAL


def metrics_options(
    port: str | int | None = None,
    host: str | None = None,
    interval: str | float | None = None,
    env: Mapping[str, str] | None = None,
) -> MetricsOptions:
    """The worker's metrics options: each given value, else its environment variable
    (``BANANAS_METRICS_PORT``, ``BANANAS_METRICS_HOST``, ``BANANAS_METRICS_INTERVAL``), else
    the default. Raises :class:`ConfigError` naming a bad value and what is allowed."""
    source = os.environ if env is None else env
    port_name, raw_port = ("--metrics-port", port) if port is not None else (PORT_ENV, source.get(PORT_ENV))
    chosen_port: int | None = None
    if raw_port is not None and str(raw_port).strip():
        text = str(raw_port).strip()
        if not text.isdigit() or not 0 <= int(text) <= 65535:
            raise ConfigError(f"{port_name}={raw_port!r} is not a port: use a whole number from 0 to 65535")
        chosen_port = int(text)
    chosen_host = (host if host is not None else source.get(HOST_ENV, "")).strip() or "127.0.0.1"
    interval_name, raw = ("--metrics-interval", interval) if interval is not None else (INTERVAL_ENV, None)
    if raw is None:
        raw = source.get(INTERVAL_ENV)
    seconds = DEFAULT_INTERVAL
    if raw is not None and str(raw).strip():
        seconds = parse_duration(str(raw), name=interval_name)
        if not 0 <= seconds <= 86400:
            raise ConfigError(f"{interval_name}={raw!r} is out of range: use 0 (off) to 24h")
    return MetricsOptions(port=chosen_port, host=chosen_host, interval=seconds)


@contextlib.asynccontextmanager
async def worker_metrics(
    options: MetricsOptions, backend: Any, executor: Executor, alive: Callable[[], bool]
) -> AsyncIterator[Collector | None]:
    """Count ``executor``'s jobs while the block runs: log "System metrics" every
    ``options.interval`` seconds and, with a port, serve the endpoints.

    ``alive`` says the worker still works (for ``/healthz``, together with the event loop
    turning). Yields the collector (``None`` when neither the line nor the endpoints are
    wanted). Without a port nothing is registered: the line reads the executor's own counters,
    so it costs no work per job.
    """
    if options.port is None and options.interval <= 0:
        yield None
        return
    collector: Collector
    if options.port is None:
        collector = Collector(
            counts=lambda: (executor.completed, executor.failed, executor.attempt_seconds),
            concurrency=executor.concurrency,
        )
    else:
        collector = JobMetrics()
    collector.running = lambda: len(executor.running)
    async with contextlib.AsyncExitStack() as stack:
        if isinstance(collector, JobMetrics):
            await stack.enter_async_context(serve_metrics(options.host, options.port or 0, backend, collector, alive))
            observe.add_observer(collector)
            stack.callback(observe.remove_observer, collector)
        if options.interval > 0:
            task = asyncio.create_task(_log_every(collector, options.interval), name="bananas-metrics-log")
            stack.callback(task.cancel)
        yield collector


async def _log_every(collector: Collector, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        snapshot = collector.snapshot()
        log.info("System metrics: %s", snapshot.describe(), extra={"metrics": snapshot.as_dict()})


@contextlib.asynccontextmanager
async def serve_metrics(
    host: str, port: int, backend: Any, jobs: JobMetrics | None, alive: Callable[[], bool] = lambda: True
) -> AsyncIterator[int]:
    """Serve ``/metrics`` (``jobs`` and the store-wide numbers of ``backend``), ``/healthz``
    (the running loop turns and ``alive()``) and ``/readyz`` (``backend.queue.ping`` answers)
    on ``host:port`` while the block runs; yields the bound port.

    Raises :class:`ConfigError` when ``prometheus_client`` is missing or the port cannot be bound.
    """
    try:
        from bananas.metrics.prometheus import CONTENT_TYPE, BananasMetrics, render
    except ImportError as exc:
        raise ConfigError(
            f"serving metrics needs prometheus_client: pip install 'bananas-core[prometheus]' ({exc})"
        ) from None
    from bananas.metrics.http import LoopWatch, ProbeServer, ask_loop

    loop = asyncio.get_running_loop()
    watch = LoopWatch()

    def store() -> StoreSample | None:
        try:
            return ask_loop(loop, lambda: sample_store(backend), SAMPLE_TIMEOUT)
        except Exception as exc:
            log.warning("metrics: could not read the store-wide numbers: %s", exc)
            return None

    def ready() -> bool:
        ask_loop(loop, backend.queue.ping, PROBE_TIMEOUT)
        return True

    metrics = BananasMetrics(jobs, store)
    server = ProbeServer(
        host,
        port,
        metrics=lambda: render(metrics),
        alive=lambda: watch.alive() and alive(),
        ready=ready,
        content_type=CONTENT_TYPE,
    )
    try:
        server.start()
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    ticker = asyncio.create_task(watch.run(), name="bananas-metrics-watch")
    log.info("serving metrics on http://%s:%d/metrics (and /healthz, /readyz)", host, server.port)
    try:
        yield server.port
    finally:
        await stop_tasks([ticker])
        await asyncio.to_thread(server.stop)

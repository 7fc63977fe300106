"""A small HTTP server for Prometheus and Kubernetes: ``/metrics``, ``/healthz`` and ``/readyz``.

It runs on a daemon thread (the standard library's threading HTTP server), so a probe is
answered even while the event loop is busy; the answers themselves ask the loop, with a
timeout: a loop that does not answer in time is not healthy.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

__all__ = ["LoopWatch", "ProbeServer", "ask_loop"]

log = logging.getLogger("bananas.metrics")

T = TypeVar("T")


class LoopWatch:
    """Notes, from a task on the event loop, that the loop still turns.

    :meth:`alive` is true while the last tick is at most ``stale_after`` seconds old and
    the watch has not been stopped.
    """

    def __init__(self, interval: float = 1.0, stale_after: float = 10.0) -> None:
        self.interval = interval
        self.stale_after = stale_after
        self.last_tick = time.monotonic()
        self.stopped = False

    async def run(self) -> None:
        """Tick until cancelled."""
        try:
            while True:
                self.last_tick = time.monotonic()
                await asyncio.sleep(self.interval)
        finally:
            self.stopped = True

    def alive(self) -> bool:
        """True if the loop ticked recently."""
        return not self.stopped and time.monotonic() - self.last_tick <= self.stale_after


def ask_loop(loop: asyncio.AbstractEventLoop, make: Callable[[], Awaitable[T]], timeout: float) -> T:
    """Run the awaitable ``make()`` returns on ``loop`` (from another thread) and return its value.

    Raises ``TimeoutError`` if it takes longer than ``timeout`` seconds (it is then cancelled),
    and whatever it raises.
    """

    async def bounded() -> T:
        return await asyncio.wait_for(make(), timeout)

    future = asyncio.run_coroutine_threadsafe(bounded(), loop)
    try:
        return future.result(timeout + 1.0)
    except FutureTimeout:
        future.cancel()
        raise TimeoutError(f"no answer within {timeout:g}s") from None


class ProbeServer:
    """Serves ``/metrics`` (``metrics()``'s bytes), ``/healthz`` (200 if ``alive()``, else 503)
    and ``/readyz`` (200 if ``ready()``, else 503) on ``host:port`` from a daemon thread.

    :meth:`start` binds (an ``OSError`` says why it could not); :attr:`port` is the bound
    port (useful with port 0); :meth:`stop` closes it.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        metrics: Callable[[], bytes] | None,
        alive: Callable[[], bool],
        ready: Callable[[], bool],
        content_type: str = "text/plain; version=0.0.4; charset=utf-8",
    ) -> None:
        self.host = host
        self.port = port
        self._routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/healthz": lambda: _probe(alive, "alive", "not alive: the worker's event loop is not turning"),
            "/readyz": lambda: _probe(ready, "ready", "not ready: the store does not answer"),
        }
        if metrics is not None:
            self._routes["/metrics"] = lambda: (200, content_type, metrics())
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve on a daemon thread."""
        routes = self._routes

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path.split("?", 1)[0])
                if route is None:
                    known = ", ".join(sorted(routes))
                    status, ctype, body = 404, "text/plain; charset=utf-8", f"not found; try {known}\n".encode()
                else:
                    try:
                        status, ctype, body = route()
                    except Exception as exc:
                        log.exception("serving %s failed", self.path)
                        status, ctype, body = 500, "text/plain; charset=utf-8", f"{type(exc).__name__}\n".encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: not worth a line
                pass

        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, name="bananas-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()


def _probe(check: Callable[[], bool], good: str, bad: str) -> tuple[int, str, bytes]:
    try:
        ok = check()
    except Exception:
        ok = False
    return (200, "text/plain; charset=utf-8", f"{good}\n".encode()) if ok else (503, "text/plain", f"{bad}\n".encode())

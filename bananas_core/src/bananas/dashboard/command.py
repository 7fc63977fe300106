"""``bananas dashboard``: serve the web dashboard with uvicorn.

Safe by default: it binds 127.0.0.1 and accepts only loopback host names there; any other
address needs a token (``--token`` or ``$BANANAS_DASHBOARD_TOKEN``), or it refuses to start
with a one-line explanation.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import socket
import sys
from collections.abc import Iterator
from typing import Any

from bananas.cli.common import URL_HELP, UsageError, count_arg, load_app, open_from_args, schedules_of
from bananas.errors import BananasError

__all__ = ["TOKEN_ENV", "add_arguments", "is_loopback", "run"]

TOKEN_ENV = "BANANAS_DASHBOARD_TOKEN"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]", "::1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the dashboard's options to its subcommand."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=count_arg(0, 65535), default=8080, help="port (default 8080; 0: any free one)")
    parser.add_argument("--read-only", action="store_true", help="no requeue or purge: the pages only show the store")
    parser.add_argument(
        "--token",
        default=None,
        help=f"require this token from every client (default: ${TOKEN_ENV}); needed to listen beyond loopback",
    )
    parser.add_argument(
        "--app",
        metavar="APP",
        default=None,
        help="module:attribute naming a Registry: its schedules' cron, zone and enabled state show on /schedules",
    )
    parser.add_argument("--url", metavar="URL", default=None, help=URL_HELP)


def is_loopback(host: str) -> bool:
    """True if ``host`` names only this machine (127.0.0.0/8, ::1 or localhost)."""
    if host.strip("[]").lower() in ("localhost", "::1"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; exit code 0 when stopped by SIGINT/SIGTERM."""
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    if token is not None and len(token) < 8:
        raise UsageError("the dashboard token is too short: use at least 8 characters (e.g. openssl rand -hex 16)")
    loopback = is_loopback(args.host)
    if not loopback and token is None:
        raise UsageError(
            f"refusing to listen on {args.host} without a token: anyone who can reach it could read jobs "
            f"and requeue or purge them; pass --token or set {TOKEN_ENV}, or listen on 127.0.0.1"
        )
    try:
        import uvicorn

        from bananas.dashboard.app import create_app
    except ImportError as exc:
        raise UsageError(f"the dashboard needs its extra: pip install 'bananas[dashboard]' ({exc})") from None
    defined = list(schedules_of(load_app(args.app), args.app)) if args.app else []
    sock = _listen(args.host, args.port)
    try:
        async with open_from_args(args, read_only=True) as backend:
            await backend.queue.ping()
            app = create_app(
                backend,
                read_only=args.read_only,
                token=token,
                schedules=defined,
                allowed_hosts=None if token is not None else (*LOOPBACK_NAMES, args.host.lower()),
            )
            config = uvicorn.Config(app, log_level="warning", lifespan="on")
            server = _server_class(uvicorn)(config)
            _announce(server, args, backend.url, token)
            await server.serve(sockets=[sock])
    finally:
        sock.close()
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port``; a port in use is one line (exit 1), not a log record."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise BananasError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise BananasError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _server_class(uvicorn: Any) -> Any:
    """uvicorn's Server, except that a SIGINT or SIGTERM is the normal way to stop: the
    backend is closed and the exit code is 0 (uvicorn re-raises the signal after shutdown)."""

    class Server(uvicorn.Server):  # type: ignore[misc]
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            with super().capture_signals():
                yield
                captured = getattr(self, "_captured_signals", None)
                if isinstance(captured, list):
                    captured.clear()

    return Server


def _announce(server: Any, args: argparse.Namespace, url: str, token: str | None) -> None:
    """Print where the dashboard listens once uvicorn has bound its socket."""
    original = server.startup

    async def startup(sockets: Any = None) -> None:
        await original(sockets=sockets)
        if server.should_exit:
            return
        port = args.port
        for s in server.servers:
            for sock in s.sockets:
                port = sock.getsockname()[1]
                break
        host = f"[{args.host}]" if ":" in args.host else args.host
        mode = " (read-only)" if args.read_only else ""
        suffix = " (send the token: ?token=... once in a browser, or Authorization: Bearer)" if token else ""
        print(f"bananas dashboard{mode} for {url} on http://{host}:{port}/{suffix}", file=sys.stderr, flush=True)

    server.startup = startup

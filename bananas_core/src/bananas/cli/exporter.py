"""``bananas exporter``: serve the store-wide gauges for Prometheus, without running a worker.

For fleets whose workers are not scraped one by one (as the rq and asynq exporters do): one
process reads the store through the protocols at each scrape (depth by routing key and
priority, scheduled, processing, dead, live workers) and serves ``/metrics``, ``/healthz``
and ``/readyz``. Listens on 127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from typing import Any

from bananas.cli.common import URL_HELP, count_arg, open_from_args

__all__ = ["DEFAULT_PORT", "register", "run"]

DEFAULT_PORT = 9808


def register(sub: Any) -> None:
    """Add ``bananas exporter`` to the command's subparsers."""
    help_text = "serve the store-wide metrics for Prometheus (needs the prometheus extra)"
    parser = sub.add_parser(
        "exporter",
        help=help_text,
        description="Serve /metrics (queue depths, scheduled, processing and dead jobs, live workers, read from "
        "the store at each scrape), /healthz and /readyz. Listens on 127.0.0.1 unless --host says otherwise.",
    )
    parser.add_argument("--url", metavar="URL", default=None, help=URL_HELP)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=count_arg(0, 65535), default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free one)"
    )
    parser.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; exit code 0 then."""
    from bananas.metrics.worker import serve_metrics

    async with open_from_args(args, read_only=True) as backend:
        await backend.queue.ping()
        async with serve_metrics(args.host, args.port, backend, None) as port:  # ConfigError: exit code 2
            host = f"[{args.host}]" if ":" in args.host else args.host
            print(f"bananas exporter for {backend.url} on http://{host}:{port}/metrics", file=sys.stderr, flush=True)
            await _until_signalled()
    return 0


async def _until_signalled() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)

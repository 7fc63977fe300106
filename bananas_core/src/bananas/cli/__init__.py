"""The ``bananas`` command: run a worker, submit and inspect jobs, watch the fleet, run the demo.

``main(argv)`` returns the exit code: 0 on success, 1 for an operational failure (backend
unreachable, job not found, timeout), 2 for a usage mistake (bad option, bad JSON payload,
bad priority, unknown URL scheme, bad APP). Errors are one line on stderr, never a traceback
(set ``BANANAS_DEBUG=1`` to see one for an unexpected error).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from bananas.cli.common import UsageError, add_common
from bananas.errors import (
    BananasError,
    ConfigError,
    InvalidJob,
    PluginError,
    UnknownBackendScheme,
)

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes are one line and exit code 2, not usage dumps."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    """The ``bananas`` argument parser with every subcommand."""
    from bananas.cli import admin, cancel, demo, exporter, groups, jobs, workflow

    parser = _Parser(
        prog="bananas",
        description="Bananas: a distributed task queue with pluggable storage.",
        epilog="Every command takes --url (default: $BANANAS_URL, then $REDIS_URL, then sqlite:///bananas.db) "
        "and --json, before or after the command's name. Exit codes: 0 ok, 1 operational failure "
        "(unreachable backend, job not found, failed job, timeout), 2 usage mistake.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--url", dest="global_url", metavar="URL", default=None, help="backend URL, for any command")
    parser.add_argument("--json", dest="global_json", action="store_true", help="JSON output, for any command")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_worker(sub)
    jobs.register(sub)
    cancel.register(sub)
    groups.register(sub)
    admin.register(sub)
    demo.register(sub)
    exporter.register(sub)
    workflow.register(sub)
    _add_dashboard(sub)
    return parser


def _version() -> str:
    from bananas import __version__

    return __version__


def _add_worker(sub: Any) -> None:
    help_text = "run a worker for APP (module:attribute naming a Registry)"
    parser = sub.add_parser("worker", help=help_text, description=help_text)
    try:
        from bananas.worker.command import add_worker_arguments, run_worker
    except ImportError as exc:  # the worker runtime is optional for every other command
        reason = str(exc)
        add_common(parser)
        parser.add_argument("rest", nargs=argparse.REMAINDER)

        def unavailable(_args: argparse.Namespace) -> int:
            raise PluginError(f"bananas worker is not available: {reason}")

        parser.set_defaults(run=unavailable)
        return
    add_worker_arguments(parser)
    parser.set_defaults(run=run_worker)


def _add_dashboard(sub: Any) -> None:
    help_text = "serve the web dashboard (needs the dashboard extra)"
    parser = sub.add_parser(
        "dashboard",
        help=help_text,
        description="Serve the web dashboard: queues, jobs, dead letters, workers and schedules. Listens on "
        "127.0.0.1 unless --host says otherwise; another address needs --token.",
    )
    from bananas.dashboard.command import add_arguments, run  # no web library imported here

    add_arguments(parser)
    parser.set_defaults(run=run)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bananas`` command with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help and --version exit 0 through argparse
            return exc.code if isinstance(exc.code, int) else EXIT_OK
        # Global options go before or after the command (and before a group's action):
        # `bananas --url X dlq list`, `bananas dlq --url X list`, `bananas dlq list --url X`.
        args.url = getattr(args, "url", None) or getattr(args, "group_url", None) or args.global_url
        args.json = bool(getattr(args, "json", False) or getattr(args, "group_json", False) or args.global_json)
        args.standalone = argv is None  # the console script: the process (and a memory:// store) ends after
    except BaseException as exc:
        return _exit_code(exc)
    try:
        with _quiet_logs(args.command):
            result = args.run(args)
            if asyncio.iscoroutine(result):
                result = asyncio.run(result)
        return int(result or 0)
    except BaseException as exc:
        return _exit_code(exc, args.url if args.command != "backends" else "-")


def _exit_code(exc: BaseException, url: str | None = "-") -> int:
    """The exit code for ``exc`` raised by the command, after saying what went wrong in one line."""
    if isinstance(exc, KeyboardInterrupt):
        print("bananas: interrupted", file=sys.stderr)
        return 130
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else EXIT_FAILURE
    return _report(exc, url)


@contextlib.contextmanager
def _quiet_logs(command: str) -> Iterator[None]:
    """Keep library warnings (such as reconnect attempts) out of one-shot commands' output;
    the worker logs as configured, and ``BANANAS_DEBUG=1`` shows everything."""
    logger = logging.getLogger("bananas")
    level = logger.level
    if command != "worker" and not os.environ.get("BANANAS_DEBUG"):
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _report(exc: BaseException, url: str | None = "-") -> int:
    """Print ``exc`` as one line on stderr and choose the exit code. An operational failure
    on the embedded default says where its file is (``url`` is the command's ``--url``)."""
    code = exit_code(exc)
    if isinstance(exc, BananasError | UsageError):
        message = str(exc)
    elif isinstance(exc, OSError):
        message = f"{type(exc).__name__}: {exc}"
    else:
        message = f"unexpected error: {type(exc).__name__}: {exc}"
        if os.environ.get("BANANAS_DEBUG"):
            traceback.print_exception(exc)
        else:
            message += " (set BANANAS_DEBUG=1 to see the traceback)"
    if code == EXIT_FAILURE and url != "-":
        from bananas.config import embedded_path, uses_embedded_default

        with contextlib.suppress(BananasError):
            if uses_embedded_default(url):
                message += f" (backend: the embedded default, {embedded_path()})"
    print(f"bananas: {' '.join(message.split())}", file=sys.stderr)
    return code


def exit_code(exc: BaseException) -> int:
    """2 for the user's own mistakes (fix the command line), 1 for everything else."""
    if isinstance(exc, UsageError | InvalidJob | ConfigError | UnknownBackendScheme):
        return EXIT_USAGE
    return EXIT_FAILURE

"""What every ``bananas`` subcommand shares: --url/--json, opening the backend, loading an APP."""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bananas.backend import Backend

__all__ = [
    "UsageError",
    "add_common",
    "backend_label",
    "count_arg",
    "load_app",
    "open_from_args",
    "refuse_memory",
    "schedules_of",
    "seconds_arg",
]

MAX_COMMAND_SECONDS = 365 * 86400.0
"""Longest wait or timeout a command takes (a year): longer ones are surely a typo."""
MAX_COMMAND_COUNT = 2**31 - 1
"""Largest count or offset a command takes: what every store's integer arguments hold."""


class UsageError(Exception):
    """The command line is wrong; the message says how (exit code 2)."""


def seconds_arg(text: str) -> float:
    """An argparse ``type``: a finite number of seconds > 0, at most a year.

    NaN, infinity, zero, negative and overflowing numbers are one-line usage errors.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= MAX_COMMAND_SECONDS:  # also NaN
        raise argparse.ArgumentTypeError(
            f"{text!r} is not allowed: give a number of seconds greater than 0 and at most {MAX_COMMAND_SECONDS:.0f}"
        )
    return value


def count_arg(low: int, high: int = MAX_COMMAND_COUNT) -> Any:
    """An argparse ``type``: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is out of range: give a whole number from {low} to {high}")
        return value

    parse.__name__ = "whole number"  # what argparse calls the type in its own messages
    return parse


URL_HELP = "backend URL (default: $BANANAS_URL, then $REDIS_URL, then the embedded default sqlite:///bananas.db)"


def add_common(parser: argparse.ArgumentParser, *, group: bool = False) -> None:
    """Add ``--url`` and ``--json`` to a subcommand. A ``group`` (``dlq``, ``db``) takes them
    too, before its action (``bananas dlq --url URL list``), under their own names so that
    the action's defaults do not overwrite them."""
    prefix = "group_" if group else ""
    parser.add_argument("--url", dest=f"{prefix}url", metavar="URL", default=None, help=URL_HELP)
    parser.add_argument(
        "--json", dest=f"{prefix}json", action="store_true", help="print JSON for scripts instead of tables"
    )


MEMORY_REFUSED = (
    "memory:// lives inside one process, so what this command {what} would vanish when it exits; "
    "use a shared backend (redis://..., postgresql://..., sqlite:///file.db), or use memory:// from Python "
    "in the process that also runs the worker"
)


def refuse_memory(args: argparse.Namespace, what: str) -> None:
    """Raise :class:`UsageError` if ``args`` name ``memory://`` on a real command line (the
    process ends after the command, and the store with it). ``bananas.cli.main(argv)``
    called from Python, in a process that keeps the store, is allowed."""
    from bananas.config import resolve_url

    standalone = getattr(args, "standalone", False)
    if standalone and resolve_url(args.url).split("://", 1)[0].lower() == "memory":
        raise UsageError(MEMORY_REFUSED.format(what=what))


def backend_label(url: str | None) -> str:
    """The backend a command uses, fit to print: the redacted URL, and for the embedded
    default also where its file is."""
    from bananas.backend import redact_url
    from bananas.config import EMBEDDED_DEFAULT_URL, embedded_path, resolve_url, uses_embedded_default

    if uses_embedded_default(url):
        return f"{EMBEDDED_DEFAULT_URL} (the embedded default, {embedded_path()})"
    return redact_url(resolve_url(url))


# How long one-shot commands let a backend retry a lost connection before they report it.
# Backends name this setting differently; each reads its own name and ignores the others.
COMMAND_RETRY_SECONDS = 5.0
_RETRY_OPTIONS = ("retry_for", "retry_seconds")


def _no_database_here(url: str | None) -> bool:
    """True when ``url`` means the embedded default and its file does not exist."""
    from bananas.config import embedded_path, uses_embedded_default

    return uses_embedded_default(url) and not os.path.exists(embedded_path())


@asynccontextmanager
async def open_from_args(
    args: argparse.Namespace,
    *,
    retry: float | None = COMMAND_RETRY_SECONDS,
    read_only: bool = False,
    lasting: str = "",
) -> AsyncIterator[Backend]:
    """The backend named by ``--url`` (or the default), closed afterwards.

    ``retry`` bounds how long an unreachable backend is retried (unless the URL sets it).
    A ``read_only`` command refuses (:class:`UsageError`) to create the embedded default's
    file where there is none. A command with a ``lasting`` effect (what it does, e.g.
    "submits") refuses ``memory://``, where that effect would vanish with the process.
    """
    from bananas.config import embedded_path, open_backend, resolve_url

    url = resolve_url(args.url)
    if lasting:
        refuse_memory(args, lasting)
    if read_only and _no_database_here(args.url):
        raise UsageError(
            f"there is no Bananas database here ({embedded_path()} does not exist): run this in the directory "
            "that holds bananas.db, or point at one with --url (e.g. --url sqlite:////path/to/bananas.db) "
            "or $BANANAS_URL"
        )
    extra: dict[str, Any] = {}
    if retry is not None:
        given = {key for key, _ in parse_qsl(urlsplit(url).query)}
        extra = {name: retry for name in _RETRY_OPTIONS if name not in given}
    backend = await open_backend(args.url, announce=True, extra=extra)
    try:
        yield backend
    finally:
        await backend.close()


def load_app(spec: str) -> Any:
    """Import ``module:attribute`` with the worker's loader; raise :class:`UsageError`."""
    from bananas.worker.command import AppError, import_app

    try:
        return import_app(spec)
    except AppError as exc:
        raise UsageError(str(exc)) from None


def schedules_of(app: Any, spec: str) -> Sequence[Any]:
    """The cron schedules of an APP: a Registry's ``schedules``, or a sequence of Schedule."""
    from bananas.scheduler import Schedule

    items = getattr(app, "schedules", app)
    if isinstance(items, Sequence) and not isinstance(items, str) and all(isinstance(s, Schedule) for s in items):
        return list(items)
    raise UsageError(f"APP {spec!r} is a {type(app).__name__}, not a Registry or a list of Schedule")

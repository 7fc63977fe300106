"""The event loop a worker runs on.

``asyncio`` (the default) is asyncio's own loop; ``uvloop`` is uvloop's drop-in loop written
on libuv (the ``uvloop`` extra), whose waits, sockets and callbacks cost less CPU; ``auto``
takes uvloop when it is installed, as uvicorn does, and asyncio's loop otherwise. Chosen with
``--loop`` or ``$BANANAS_LOOP``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Collection
from typing import Any

from bananas.errors import ConfigError

__all__ = ["LOOPS", "loop_factory", "stop_tasks"]

LOOPS = ("auto", "asyncio", "uvloop")
"""The choices of ``--loop``."""


def loop_factory(choice: str | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the loop ``choice`` (else ``$BANANAS_LOOP``, else ``asyncio``) names, for
    :class:`asyncio.Runner`; ``None`` for asyncio's default loop. Raises :class:`ConfigError`
    for an unknown name, or ``uvloop`` asked for and not installed."""
    raw = choice if choice is not None else os.environ.get("BANANAS_LOOP", "asyncio")
    name = raw.strip().lower()
    if name not in LOOPS:
        raise ConfigError(f"--loop must be one of {', '.join(LOOPS)}, got {raw!r}")
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise ConfigError("--loop uvloop needs the uvloop package: pip install 'bananas-core[uvloop]'") from None
        return None
    return uvloop.new_event_loop


async def stop_tasks(tasks: Collection[asyncio.Future[Any]], *, again_after: float = 0.5) -> None:
    """Cancel ``tasks`` and return once every one has ended, cancelling those still running
    again every ``again_after`` seconds: a cancellation that lands inside a network call can be
    swallowed by the library that makes it, and a task that carried on (a loop that sleeps and
    works again) must not keep a stopping worker alive. Their errors are collected, not raised."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=again_after)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: ended tasks' errors were logged where they happened

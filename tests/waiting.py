"""Waiting in tests without guessing a duration: poll a condition until a deadline.

A test that sleeps "long enough" for something to happen is slow when the machine is idle
and flaky when it is loaded. Wait for the thing itself instead: an ``asyncio.Event`` the
code under test sets, or :func:`eventually` on a condition that can be checked.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

__all__ = ["eventually"]


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, what: str = "the condition"
) -> None:
    """Return once ``check()`` (plain or async) is true; fail the test if it is still false after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout:g}s")
        await asyncio.sleep(0.01)

"""Wake-ups that cross threads and event loops: the in-memory backend's waiting machinery."""

from __future__ import annotations

import asyncio
import contextlib
import threading

__all__ = ["Signal"]


class Signal:
    """Waiters that any thread may wake, each waiting in its own event loop.

    A waiter registers (under the caller's own lock, so no wake-up between a check and
    the registration is missed) and then awaits; :meth:`wake_all` completes every
    registered waiter through its loop's ``call_soon_threadsafe``, never touching
    another loop's objects directly.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = {}

    def register(self) -> asyncio.Future[None]:
        """A future of the running loop, completed by the next :meth:`wake_all`."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._waiters[id(fut)] = (loop, fut)
        return fut

    def discard(self, fut: asyncio.Future[None]) -> None:
        """Forget a waiter (after it was woken or gave up)."""
        with self._lock:
            self._waiters.pop(id(fut), None)

    def __bool__(self) -> bool:
        """True while anyone is registered."""
        with self._lock:
            return bool(self._waiters)

    def wake_all(self) -> None:
        """Wake every registered waiter; callable from any thread."""
        with self._lock:
            waiters = list(self._waiters.values())
            self._waiters.clear()
        for loop, fut in waiters:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits there any more
                loop.call_soon_threadsafe(_settle, fut)

    async def wait(self, fut: asyncio.Future[None], timeout: float) -> bool:
        """Await a registered future up to ``timeout`` seconds; True if it was woken."""
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout=max(timeout, 0.0))
            return True
        except TimeoutError:
            return False
        finally:
            self.discard(fut)


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)

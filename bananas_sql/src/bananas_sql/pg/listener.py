"""The one LISTEN connection of a PostgreSQL backend: wake-ups for new work, stored results
and jobs handed over to this process's idle workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from bananas_sql.database import one_line
from bananas_sql.pg.pool import ConnectionPool

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("bananas.sql.postgres")


class Listener:
    """One connection LISTENing for new work and stored results, reconnecting when lost; it
    counts in the backend's ``pool_size`` while open.

    It listens only on the channels this process asked for: a worker that never waits for a
    result is not sent a notification for every result stored (nor a client for every job).
    """

    def __init__(self, pool: ConnectionPool, work_channel: str, result_channel: str) -> None:
        self.pool = pool
        self.describe = pool.describe
        """The redacted URL, for log lines."""
        self.work_channel = work_channel
        self.result_channel = result_channel
        self.generation = 0
        self.work_event = asyncio.Event()
        self.connected = False
        self._results: dict[str, set[asyncio.Event]] = {}
        self.hand_off_channel = f"bananas_w_{uuid.uuid4().hex}"
        """This process's channel for jobs handed over to its waiting workers (one slot each)."""
        self.hand_off_events: dict[int, asyncio.Event] = {}
        """Per slot waiting now, the event its worker waits on: set by a hand-off to that slot,
        by any work notification, and by ``PostgresQueue.wake_waiter``; cleared by the worker
        once its wait is over."""
        self.handed: dict[int, list[str]] = {}
        """Per slot, the hand-offs (``seq`` or ``seq data``) received and not yet taken, oldest first."""
        self._wanted: set[str] = set()
        self._changed = asyncio.Event()
        """Set when a channel is asked for or dropped."""
        self._task: asyncio.Task[None] | None = None

    def listening(self, channel: str) -> bool:
        """Whether ``channel`` was asked for (and not dropped since)."""
        return channel in self._wanted

    def start(self, channel: str) -> None:
        """Listen on ``channel`` (``work_channel``, ``result_channel`` or ``hand_off_channel``)
        from now on; :attr:`connected` is false until it does."""
        if channel not in self._wanted:
            self._wanted.add(channel)
            self.connected = False
            self._changed.set()
        if (self._task is None or self._task.done()) and self._wanted:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="bananas-sql-listener")

    def drop(self, channel: str) -> None:
        """Stop listening on ``channel`` (the connection goes back to the pool when none is left)."""
        if channel in self._wanted:
            self._wanted.discard(channel)
            self._changed.set()

    def watch(self, job_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._results.setdefault(job_id, set()).add(event)
        return event

    def watching(self, job_id: str) -> bool:
        """Whether a result waiter of this process waits for ``job_id``'s notification."""
        return job_id in self._results

    def unwatch(self, job_id: str, event: asyncio.Event) -> None:
        events = self._results.get(job_id)
        if events is not None:
            events.discard(event)
            if not events:
                del self._results[job_id]

    def _wake_work(self) -> None:
        self.generation += 1
        event, self.work_event = self.work_event, asyncio.Event()
        event.set()
        for waiter in self.hand_off_events.values():
            waiter.set()

    def _wake_all(self) -> None:
        self._wake_work()
        for events in self._results.values():
            for event in events:
                event.set()

    async def _run(self) -> None:
        """Listen on the channels wanted until none is, on one connection from the pool: a
        channel asked for or dropped meanwhile is a LISTEN or UNLISTEN on it. Reconnects (with
        backoff) whenever the connection is lost or lands on a read-only server (LISTEN is
        refused during recovery), and wakes every waiter on each reconnect and each new channel
        (what was announced before is unknown)."""
        delay = 0.1
        lost_at: float | None = None
        while self._wanted:
            try:
                async with self.pool.connection("listen") as conn:  # one of the backend's pool_size
                    listening: set[str] = set()
                    while self._wanted or listening:
                        self._changed.clear()
                        wanted = set(self._wanted)
                        for channel in sorted(listening - wanted):
                            await conn.execute(f'UNLISTEN "{channel}"')
                        added = wanted - listening
                        for channel in sorted(added):
                            await conn.execute(f'LISTEN "{channel}"')
                        listening = wanted
                        if not listening:
                            break  # nothing wanted: the connection goes back to the pool
                        if self._changed.is_set():
                            continue
                        self.connected = True
                        delay = 0.1
                        if lost_at is not None:
                            back = time.monotonic() - lost_at
                            log.info("LISTEN connection to %s is back after %.1fs", self.describe, back)
                            lost_at = None
                        if added:
                            self._wake_all()  # whatever was announced before we listened
                        await self._read_until_changed(conn)
                self.connected = False
                if not self._wanted:
                    return
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if lost_at is None:
                    lost_at = time.monotonic()
                    log.warning(
                        "LISTEN connection to %s lost: %s; reconnecting (waiters poll meanwhile)",
                        self.describe, one_line(exc),
                    )  # fmt: skip
                else:
                    log.debug("LISTEN connection to %s: %s; retrying in %.1fs", self.describe, one_line(exc), delay)
            self.connected = False
            self._wake_all()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _read_until_changed(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Dispatch notifications until the wanted channels change; raises if the connection is lost."""
        reader = asyncio.ensure_future(self._read(conn))
        changed = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({reader, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            if not reader.done():
                reader.cancel()  # no statement is running: the connection stays usable
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        if not reader.cancelled():
            reader.result()  # the error that ended it

    async def _read(self, conn: psycopg.AsyncConnection[Any]) -> None:
        async for note in conn.notifies():
            if note.channel == self.work_channel:
                self._wake_work()
            elif note.channel == self.hand_off_channel:
                slot, _, handed = note.payload.partition(" ")
                self.handed.setdefault(int(slot), []).append(handed)
                if (event := self.hand_off_events.get(int(slot))) is not None:
                    event.set()
            else:
                for event in self._results.get(note.payload, ()):
                    event.set()
        raise ConnectionError("the LISTEN connection stopped delivering notifications")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.connected = False

"""The one LISTEN connection of a PostgreSQL backend: wake-ups for new work, stored results
and jobs handed over to this process's idle workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence

from bananas_sql.database import one_line
from bananas_sql.pg.pool import ConnectionPool

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
        self._task: asyncio.Task[None] | None = None
        self._retired: set[asyncio.Task[None]] = set()

    def listening(self, channel: str) -> bool:
        """Whether ``channel`` was asked for (and not dropped since)."""
        return channel in self._wanted

    def start(self, channel: str) -> None:
        """Listen on ``channel`` (``work_channel`` or ``result_channel``) from now on."""
        if channel not in self._wanted:
            self._wanted.add(channel)
            self._retire()  # reconnect listening on both; its wake-up on connecting covers the gap
        if (self._task is None or self._task.done()) and self._wanted:
            channels = sorted(self._wanted)
            self._task = asyncio.get_running_loop().create_task(self._run(channels), name="bananas-sql-listener")

    def drop(self, channel: str) -> None:
        """Stop listening on ``channel`` (reconnecting for the others, if any)."""
        if channel in self._wanted:
            self._wanted.discard(channel)
            self._retire()
            if self._wanted:
                self.start(next(iter(self._wanted)))

    def _retire(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            self._retired.add(self._task)
            self._task.add_done_callback(self._retired.discard)
        self._task = None
        self.connected = False

    def watch(self, job_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._results.setdefault(job_id, set()).add(event)
        return event

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

    async def _run(self, channels: Sequence[str]) -> None:
        """Listen on ``channels`` until cancelled, reconnecting (with backoff) whenever the
        connection is lost or lands on a read-only server (LISTEN is refused during recovery),
        and waking every waiter on each reconnect (what was announced meanwhile is unknown)."""
        delay = 0.1
        lost_at: float | None = None
        while True:
            try:
                async with self.pool.connection("listen") as conn:  # one of the backend's pool_size
                    for channel in channels:
                        await conn.execute(f'LISTEN "{channel}"')
                    self.connected = True
                    delay = 0.1
                    if lost_at is not None:
                        back = time.monotonic() - lost_at
                        log.info("LISTEN connection to %s is back after %.1fs", self.describe, back)
                        lost_at = None
                    self._wake_all()  # whatever happened while we were not listening
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

    async def stop(self) -> None:
        task, self._task = self._task, None
        for old in [*self._retired, *([task] if task is not None else [])]:
            if not old.done():
                old.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await old
        self.connected = False

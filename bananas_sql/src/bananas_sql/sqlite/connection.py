"""The hot paths of the SQLite backend on the standard ``sqlite3`` module, in one thread.

Through SQLAlchemy and aiosqlite every DBAPI call (BEGIN, execute, fetch, COMMIT, cursor
close) is one hop to aiosqlite's thread and back plus SQLAlchemy's per-statement work; here a
whole unit of work is one plain function run in this backend's own thread.

SQLite has one writer at a time, and a write that finds another connection writing waits
for it; so the fewer write transactions a worker makes, the less it stalls its neighbours
(a job body writing on its own connection, other workers). Hence:

- units of work (claims, batches of outcomes, submissions) asked for while a transaction is
  in flight share the next one, each in its own savepoint;
- under load (the previous transaction carried several units or writes), claims and outcomes
  may wait up to ``write_gap`` seconds after it, so that what one moment asks for goes in one
  transaction; one caller alone (a claim, then a completion, then a claim) never waits;
- the write lock is taken by retrying every 0.1-1 ms, not with SQLite's busy handler, which
  sleeps 1, 2, 5, 10, ... ms between tries and so, against a neighbour that commits every few
  hundred microseconds, keeps us out for many milliseconds while the lock is mostly free.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from bananas.errors import BackendUnavailable

T = TypeVar("T")

Unit = Callable[[sqlite3.Connection], Any]
Outcome = tuple[bool, Any]
"""``(True, value)`` or ``(False, exception)`` of one unit."""


def open_connection(path: str) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves) with the backend's pragmas.

    WAL with ``synchronous=NORMAL``: a commit survives a crash of any process; an OS crash
    or power loss may lose the last commits (the WAL is synced at checkpoints). No busy
    handler: :func:`begin_immediate` and :meth:`RawSqlite.read` wait for a locked database.
    """
    conn = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    _retry_busy(lambda: conn.execute("PRAGMA journal_mode=WAL"), time.monotonic() + 30)
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


def _retry_busy(action: Callable[[], T], deadline: float) -> T:
    """``action()``, tried again every 0.1-1 ms while the database is locked, until ``deadline``."""
    pause = 0.0001
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if not _busy(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 1.5, 0.001)


def begin_immediate(conn: sqlite3.Connection, busy_ms: int) -> None:
    """``BEGIN IMMEDIATE`` (the write lock up front: no upgrade deadlock), waiting up to
    ``busy_ms`` for another writer; then ``sqlite3.OperationalError`` (database is locked)."""
    _retry_busy(lambda: conn.execute("BEGIN IMMEDIATE"), time.monotonic() + busy_ms / 1000)


def in_transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T], busy_ms: int) -> T:
    """``work`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back if it raises."""
    begin_immediate(conn, busy_ms)
    try:
        result = work(conn)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def in_shared_transaction(conn: sqlite3.Connection, units: Sequence[Unit], busy_ms: int) -> list[Outcome]:
    """Run ``units`` in one ``BEGIN IMMEDIATE`` ... ``COMMIT``, each in a savepoint: a unit that
    raises rolls back only its own writes and gets its exception; the others commit. An error
    that ends the whole transaction (or fails the commit) is raised for all of them."""
    if len(units) == 1:
        try:
            return [(True, in_transaction(conn, units[0], busy_ms))]
        except Exception as exc:
            return [(False, exc)]
    outcomes: list[Outcome] = []
    begin_immediate(conn, busy_ms)
    try:
        for unit in units:
            conn.execute("SAVEPOINT bananas_unit")
            try:
                outcomes.append((True, unit(conn)))
            except Exception as exc:
                if not conn.in_transaction:  # SQLite rolled the whole transaction back
                    raise
                conn.execute("ROLLBACK TO bananas_unit")
                outcomes.append((False, exc))
            conn.execute("RELEASE bananas_unit")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return outcomes


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class RawSqlite:
    """One ``sqlite3`` connection owned by one thread; :meth:`call` runs a function there."""

    def __init__(self, path: str, busy_ms: int, describe: str, *, write_gap: float = 0.0) -> None:
        self.path = path
        self.busy_ms = busy_ms
        self.describe = describe
        self.write_gap = write_gap
        self._conn: sqlite3.Connection | None = None
        self._inode: int | None = None  # of the file the connection has open
        self._executor: ThreadPoolExecutor | None = None
        self._units: list[tuple[Unit, asyncio.Future[Any], int]] = []
        self._urgent = False  # a unit that must not wait out the gap is pending
        self._nudge: asyncio.Future[None] | None = None  # ends the flusher's wait for the gap
        self._flusher: asyncio.Task[None] | None = None
        self._last_end = float("-inf")  # loop time at which the last transaction ended
        self._last_weight = 0  # how many writes it carried

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = open_connection(self.path)
            self._inode = os.stat(self.path).st_ino
        return work(self._conn)

    async def call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(connection)`` in the connection's thread (it must take no write lock:
        use :meth:`transaction`). An unreadable database raises :class:`BackendUnavailable`;
        constraint errors propagate as ``sqlite3`` errors."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="bananas-sqlite")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, work)
        except sqlite3.OperationalError as exc:
            raise BackendUnavailable(f"sqlite database at {self.describe} is unavailable: {exc}") from exc

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """:meth:`call` read-only ``work``, run again while the database is busy (up to the busy timeout)."""
        return await self.call(lambda conn: _retry_busy(lambda: work(conn), time.monotonic() + self.busy_ms / 1000))

    async def transaction(self, work: Callable[[sqlite3.Connection], T], *, defer: bool = False, weight: int = 1) -> T:
        """``work(connection)`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT``, sharing the
        transaction with whatever other units were asked for meanwhile (see the module docs).

        ``defer``: the unit may wait until ``write_gap`` seconds after the end of the previous
        transaction, when that one was so recent and carried more than one write (``weight``:
        how many writes this unit counts as). ``work`` must not rely on being alone
        in its transaction. A caller cancelled before its unit started leaves nothing written;
        one cancelled later may find it committed.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._units.append((work, future, weight))
        if not defer:
            self._urgent = True
            if self._nudge is not None:
                _settle(self._nudge)
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush(), name="bananas-sqlite-writes")
        return await future

    async def _wait_out_gap(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self._last_end + self.write_gap - loop.time()
        if delay <= 0 or self._urgent or self._last_weight < 2:
            return
        nudge = self._nudge = loop.create_future()
        timer = loop.call_later(delay, _settle, nudge)
        try:
            await nudge
        finally:
            timer.cancel()
            self._nudge = None

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._units:
                await self._wait_out_gap()
                batch, self._units = [u for u in self._units if not u[1].cancelled()], []
                self._urgent = False
                if not batch:
                    continue
                try:
                    outcomes = await self.call(functools.partial(self._shared, [work for work, _, _ in batch]))
                except asyncio.CancelledError:
                    for _, future, _ in [*batch, *self._units]:
                        future.cancel()
                    self._units = []
                    raise
                except BaseException as exc:  # the whole transaction failed: every unit with it
                    outcomes = [(False, exc)] * len(batch)
                self._last_end, self._last_weight = loop.time(), sum(weight for _, _, weight in batch)
                for (_, future, _), (ok, value) in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(self._translate(value))
        finally:
            self._flusher = None

    def _shared(self, units: Sequence[Unit], conn: sqlite3.Connection) -> list[Outcome]:
        return in_shared_transaction(conn, units, self.busy_ms)

    def _translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, sqlite3.OperationalError):
            error = BackendUnavailable(f"sqlite database at {self.describe} is unavailable: {exc}")
            error.__cause__ = exc
            return error
        return exc

    def signature(self) -> tuple[int, int, int, int, int]:
        """Identity (inode), modification time and size of the database file, and modification
        time and size of its WAL: they change when any process commits, so an unchanged
        signature means nothing new to look for."""
        sig = [0, 0, 0, 0, 0]
        for at, name in ((0, self.path), (3, self.path + "-wal")):
            try:
                st = os.stat(name)
            except OSError:
                continue
            if at == 0:
                sig[0] = st.st_ino
                at = 1
            sig[at], sig[at + 1] = st.st_mtime_ns, st.st_size
        return (sig[0], sig[1], sig[2], sig[3], sig[4])

    def replaced(self, signature: tuple[int, ...]) -> bool:
        """Whether the file at the path (as of ``signature``) is not the one our connection
        has open: it was deleted (inode 0) or replaced by another file."""
        return self._inode is not None and signature[0] != self._inode

    async def reopen(self) -> None:
        """Close the connection; the next call opens the file now at the path."""

        def shut(conn: sqlite3.Connection) -> None:
            conn.close()
            self._conn = self._inode = None

        if self._conn is not None:
            await self.call(shut)

    async def close(self) -> None:
        """Close the connection and stop the thread. Idempotent."""
        executor, self._executor = self._executor, None
        if executor is None:
            return

        def shut() -> None:
            conn, self._conn, self._inode = self._conn, None, None
            if conn is not None:
                conn.close()

        await asyncio.get_running_loop().run_in_executor(executor, shut)
        executor.shutdown(wait=False)

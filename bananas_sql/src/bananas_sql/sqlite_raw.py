"""The hot paths of the SQLite backend on the standard ``sqlite3`` module, in one thread.

Through SQLAlchemy and aiosqlite every DBAPI call (BEGIN, execute, fetch, COMMIT, cursor
close) is one hop to aiosqlite's thread and back plus SQLAlchemy's per-statement work; here a
whole unit of work (``BEGIN IMMEDIATE`` ... ``COMMIT``) is one plain function run in this
backend's own thread: one hop per unit.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from bananas.errors import BackendUnavailable

T = TypeVar("T")


def open_connection(path: str, busy_ms: int) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN ourselves) with the backend's pragmas.

    WAL with ``synchronous=NORMAL``: a commit survives a crash of any process; an OS crash
    or power loss may lose the last commits (the WAL is synced at checkpoints). A locked
    database is waited for up to ``busy_ms`` (SQLite's busy handler).
    """
    conn = sqlite3.connect(path, timeout=busy_ms / 1000, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={busy_ms}")
    return conn


def in_transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """``work`` inside ``BEGIN IMMEDIATE`` (the write lock up front: no upgrade deadlock)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


class RawSqlite:
    """One ``sqlite3`` connection owned by one thread; :meth:`call` runs a function there."""

    def __init__(self, path: str, busy_ms: int, describe: str) -> None:
        self.path = path
        self.busy_ms = busy_ms
        self.describe = describe
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            self._conn = open_connection(self.path, self.busy_ms)
        return work(self._conn)

    async def call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work(connection)`` in the connection's thread. A locked or unreadable database
        raises :class:`BackendUnavailable`; constraint errors propagate as ``sqlite3`` errors."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="bananas-sqlite")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, work)
        except sqlite3.OperationalError as exc:
            raise BackendUnavailable(f"sqlite database at {self.describe} is unavailable: {exc}") from exc

    async def transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """:meth:`call` ``work`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT``."""
        return await self.call(lambda conn: in_transaction(conn, work))

    def signature(self) -> tuple[float, int, float, int]:
        """Modification time and size of the database file and its WAL: they change when any
        process commits, so an unchanged signature means nothing new to look for."""
        sig: list[float | int] = []
        for name in (self.path, self.path + "-wal"):
            try:
                st = os.stat(name)
                sig += [st.st_mtime_ns, st.st_size]
            except OSError:
                sig += [0, 0]
        return (sig[0], int(sig[1]), sig[2], int(sig[3]))

    async def close(self) -> None:
        """Close the connection and stop the thread. Idempotent."""
        executor, self._executor = self._executor, None
        if executor is None:
            return

        def shut() -> None:
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.close()

        await asyncio.get_running_loop().run_in_executor(executor, shut)
        executor.shutdown(wait=False)

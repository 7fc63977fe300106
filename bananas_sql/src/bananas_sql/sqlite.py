"""SQLite: one file, no server. WAL mode, a busy timeout, ``BEGIN IMMEDIATE`` writes, and short
polling for wake-ups; several worker processes can share the file."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from bananas.backend import Backend, BackendOptions, redact_url
from bananas.errors import ConfigError
from bananas.job import ALL_PRIORITIES, JobPriority
from sqlalchemy import event
from sqlalchemy.ext.asyncio import create_async_engine

from bananas_sql.batch import Write, statements
from bananas_sql.database import Database
from bananas_sql.plugin import SQLITE_CAPABILITIES
from bananas_sql.results import sql_backend
from bananas_sql.sqlite_raw import RawSqlite
from bananas_sql.urls import number, sqlite_path, sqlite_sqlalchemy_url

log = logging.getLogger("bananas.sql")

READONLY = "bananas_readonly"
"""Execution option: begin a plain (deferred) transaction instead of ``BEGIN IMMEDIATE``."""

FRAGMENTS: Mapping[str, str] = {
    # SQLite has no sequences; writers are serialised, so MAX/MIN(position) are safe.
    "next_pos": "(SELECT COALESCE(MAX(position), 0) + 1 FROM {jobs})",
    "front_pos": "(SELECT COALESCE(MIN(position), 0) - 1 FROM {jobs})",
    "lock": "",
}

DEFAULT_WRITE_GAP = 0.002
"""Seconds a claim or an outcome may wait after a recent write transaction (``write_gap``)."""

HINT_INTERVAL = 0.002
"""Seconds between looks at the file's signature while waiting (a stat of two files, no query)."""


class SqliteDatabase(Database):
    """SQLite flavour of :class:`Database`."""

    dialect = "sqlite"
    fragments = FRAGMENTS

    def __init__(self, url: str, options: BackendOptions) -> None:
        extra = options.extra
        busy_ms = int(number(extra, "busy_timeout", 30.0) * 1000)
        engine = create_async_engine(sqlite_sqlalchemy_url(url), connect_args={"timeout": busy_ms / 1000})

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let us issue BEGIN ourselves (pysqlite's implicit transactions get it wrong).
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            # IMMEDIATE takes the write lock up front: no deadlock upgrading a read lock later.
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READONLY) else "BEGIN IMMEDIATE")

        super().__init__(url, engine, options)
        self.poll_interval = number(extra, "poll_interval", 0.05)
        self.raw = RawSqlite(sqlite_path(url), busy_ms, redact_url(url), write_gap=_write_gap(extra))
        self._claims: dict[tuple[int, tuple[int, ...] | None, int], str] = {}
        self._any_ready: dict[int, str] = {}

    def _claim_sql(self, n_keys: int, ranks: tuple[int, ...] | None, n_names: int) -> str:
        shape = (n_keys, ranks, n_names)
        query = self._claims.get(shape)
        if query is None:
            prio = f"AND priority IN ({', '.join(str(r) for r in ranks)})" if ranks is not None else ""
            names = f"AND name IN ({', '.join(f':n{i}' for i in range(n_names))})" if n_names else ""
            jobs = self.names.jobs
            # One arm per routing key, each walking the claim index in (priority, position)
            # order and stopping at the limit: no sort of the whole backlog. Key rank first.
            arms = " UNION ALL ".join(
                f"SELECT * FROM (SELECT seq, {i} AS key_rank, priority, position FROM {jobs} "
                f"WHERE state IN ('ready', 'scheduled') AND routing_key = :k{i} AND run_at <= :now "
                f"{prio} {names} ORDER BY priority, position LIMIT :limit)"
                for i in range(n_keys)
            )
            rank = "CASE routing_key " + " ".join(f"WHEN :k{i} THEN {i}" for i in range(n_keys)) + " END"
            query = self._claims[shape] = (
                f"UPDATE {jobs} SET state = 'processing', lease_until = :lease_until, lease_token = :token "
                f"WHERE seq IN ("
                f"SELECT seq FROM ({arms}) ORDER BY key_rank, priority, position LIMIT :limit) "
                f"RETURNING seq, data, id, {rank} AS key_rank, priority, position"
            )
        return query

    async def claim(
        self,
        routing_keys: Sequence[str],
        priorities: Sequence[JobPriority],
        *,
        limit: int,
        lease_until: float,
        job_names: Sequence[str] | None,
        now: float,
        token: str,
    ) -> list[tuple[int, str, str]]:
        await self._ensure_schema()
        ranks = None if set(priorities) == set(ALL_PRIORITIES) else tuple(sorted({p.rank for p in priorities}))
        names = list(job_names or ())
        query = self._claim_sql(len(routing_keys), ranks, len(names))
        params: dict[str, Any] = {"now": now, "lease_until": lease_until, "limit": limit, "token": token}
        params.update({f"k{i}": key for i, key in enumerate(routing_keys)})
        params.update({f"n{i}": name for i, name in enumerate(names)})

        def work(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(query, params).fetchall()

        # One UPDATE inside BEGIN IMMEDIATE: no other writer can claim the same rows meanwhile.
        rows = await self.raw.transaction(work, defer=True)
        if len(rows) > limit:  # never expected; a claim must not take more than asked
            raise RuntimeError(f"claimed {len(rows)} rows for a limit of {limit}")
        rows.sort(key=lambda r: (r[3], r[4], r[5]))
        return [(seq, data, job_id) for seq, data, job_id, *_ in rows]

    async def enqueue_one(self, params: Mapping[str, Any]) -> bool:
        await self._ensure_schema()
        sql = self.sql["enqueue"]
        return await self.raw.transaction(lambda conn: bool(conn.execute(sql, params).fetchall()))

    async def write_batch(self, writes: Sequence[Write]) -> list[bool]:
        await self._ensure_schema()
        sql = self.sql

        def batch(conn: sqlite3.Connection) -> list[bool]:
            touched = []
            for name, params in writes:
                first = None
                for part in statements(name):  # a chain stops at the first statement that touched nothing
                    cursor = conn.execute(sql[part], params)
                    hit = bool(cursor.fetchall()) if cursor.description else cursor.rowcount > 0
                    first = hit if first is None else first
                    if not hit:
                        break
                touched.append(bool(first))
            return touched

        return await self.raw.transaction(batch, defer=True, weight=len(writes))

    async def _poll(self, timeout: float, check: Callable[[], Awaitable[bool]]) -> bool:
        """Run ``check`` when the file changed (looked at every few ms: a stat, no query) and at
        least every ``poll_interval`` (scheduled jobs fall due with no write)."""
        deadline = time.monotonic() + timeout
        seen: tuple[int, ...] | None = None
        checked = 0.0
        while True:
            signature = self.raw.signature()  # before the check: a commit after it changes it
            if self.raw.replaced(signature) and signature != seen:
                await self._follow_replaced_file(signature)
            now = time.monotonic()
            if signature != seen or now - checked >= self.poll_interval:
                seen, checked = signature, now
                if await check():
                    return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(HINT_INTERVAL, left))

    async def _follow_replaced_file(self, signature: tuple[int, ...]) -> None:
        """The file at our path is not the one we have open: it was deleted (wait for it to
        come back) or replaced (open the new one). Said loudly: the jobs of the old file are
        gone for this worker, and serving the old file would wait forever in silence."""
        path = self.raw.path
        if not signature[0]:
            log.warning("the SQLite database %s was deleted while this process had it open", path)
            return
        log.warning("the SQLite database %s was replaced by another file; reopening it", path)
        await self.raw.reopen()
        await self.engine.dispose()
        self._schema_ok = False

    async def wait_for_work(self, routing_keys: Sequence[str], timeout: float) -> None:
        keys = list(routing_keys)
        if not keys:
            await asyncio.sleep(timeout)
            return
        query = self._any_ready.get(len(keys))
        if query is None:
            marks = ", ".join(f":k{i}" for i in range(len(keys)))
            query = self._any_ready[len(keys)] = self.sql["any_ready"].replace(":keys", f"({marks})")
        await self._ensure_schema()

        async def any_ready() -> bool:
            params: dict[str, Any] = {"now": self.clock(), **{f"k{i}": key for i, key in enumerate(keys)}}
            return await self.raw.read(lambda conn: conn.execute(query, params).fetchone() is not None)

        await self._poll(timeout, any_ready)

    async def wait_for_result(self, job_id: str, timeout: float, check: Callable[[], Awaitable[bool]]) -> bool:
        return await self._poll(timeout, check)

    async def close(self) -> None:
        await self.raw.close()
        await super().close()


def _write_gap(extra: Mapping[str, Any]) -> float:
    value = extra.get("write_gap", DEFAULT_WRITE_GAP)
    try:
        gap = float(value)
    except (TypeError, ValueError):
        gap = -1.0
    if not 0 <= gap <= 1:
        raise ConfigError(f"write_gap must be a number of seconds from 0 to 1, got {value!r}")
    return gap


def connect_sqlite(url: str, options: BackendOptions) -> Backend:
    """The SQLite backend for ``url`` (the file is opened on first use)."""
    return sql_backend("sqlite", SqliteDatabase(url, options), url, options, SQLITE_CAPABILITIES)

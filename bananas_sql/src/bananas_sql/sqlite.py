"""SQLite: one file, no server. WAL mode, a busy timeout, ``BEGIN IMMEDIATE`` writes, and short
polling for wake-ups; several worker processes can share the file."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from bananas.backend import Backend, BackendOptions
from bananas.job import ALL_PRIORITIES, JobPriority
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from bananas_sql.database import Database
from bananas_sql.plugin import SQLITE_CAPABILITIES
from bananas_sql.queue import SqlQueue
from bananas_sql.results import SqlResults, SqlScheduler, SqlWorkers
from bananas_sql.urls import number, sqlite_sqlalchemy_url

READONLY = "bananas_readonly"
"""Execution option: begin a plain (deferred) transaction instead of ``BEGIN IMMEDIATE``."""

FRAGMENTS: Mapping[str, str] = {
    # SQLite has no sequences; writers are serialised, so MAX/MIN(position) are safe.
    "next_pos": "(SELECT COALESCE(MAX(position), 0) + 1 FROM {jobs})",
    "front_pos": "(SELECT COALESCE(MIN(position), 0) - 1 FROM {jobs})",
    "lock": "",
}


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
        self._claims: dict[tuple[int, tuple[int, ...] | None, int], sa.TextClause] = {}

    def _claim_query(self, n_keys: int, ranks: tuple[int, ...] | None, n_names: int) -> sa.TextClause:
        shape = (n_keys, ranks, n_names)
        query = self._claims.get(shape)
        if query is None:
            keys = ", ".join(f":k{i}" for i in range(n_keys))
            rank = "CASE routing_key " + " ".join(f"WHEN :k{i} THEN {i}" for i in range(n_keys)) + " END"
            prio = f"AND priority IN ({', '.join(str(r) for r in ranks)})" if ranks is not None else ""
            names = f"AND name IN ({', '.join(f':n{i}' for i in range(n_names))})" if n_names else ""
            jobs = self.names.jobs
            query = self._claims[shape] = sa.text(
                f"UPDATE {jobs} SET state = 'processing', lease_until = :lease_until WHERE seq IN ("
                f"SELECT seq FROM {jobs} WHERE state IN ('ready', 'scheduled') AND run_at <= :now "
                f"AND routing_key IN ({keys}) {prio} {names} "
                f"ORDER BY {rank}, priority, position LIMIT :limit) "
                f"RETURNING seq, state, data, error, name, id, {rank} AS key_rank, priority, position"
            )
        return query

    async def claim_rows(
        self,
        conn: AsyncConnection,
        routing_keys: Sequence[str],
        priorities: Sequence[JobPriority],
        *,
        limit: int,
        lease_until: float,
        job_names: Sequence[str] | None,
        now: float,
    ) -> Sequence[sa.Row[Any]]:
        ranks = None if set(priorities) == set(ALL_PRIORITIES) else tuple(sorted({p.rank for p in priorities}))
        names = list(job_names or ())
        query = self._claim_query(len(routing_keys), ranks, len(names))
        params: dict[str, Any] = {"now": now, "lease_until": lease_until, "limit": limit}
        params.update({f"k{i}": key for i, key in enumerate(routing_keys)})
        params.update({f"n{i}": name for i, name in enumerate(names)})
        # One UPDATE inside BEGIN IMMEDIATE: no other writer can claim the same rows meanwhile.
        rows = (await conn.execute(query, params)).all()
        if len(rows) > limit:  # never expected; a claim must not take more than asked
            raise RuntimeError(f"claimed {len(rows)} rows for a limit of {limit}")
        return sorted(rows, key=lambda r: (r.key_rank, r.priority, r.position))

    async def _poll(self, timeout: float, check: Callable[[], Awaitable[bool]]) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if await check():
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(self.poll_interval, left))

    async def wait_for_work(self, routing_keys: Sequence[str], timeout: float) -> None:
        keys = list(routing_keys)

        async def any_ready() -> bool:
            async def work(conn: AsyncConnection) -> bool:
                params = {"now": self.clock(), "keys": keys}
                return (await conn.execute(self.q["any_ready"], params)).first() is not None

            return await self.run(work, readonly=True)

        if keys:
            await self._poll(timeout, any_ready)
        else:
            await asyncio.sleep(timeout)

    async def wait_for_result(self, job_id: str, timeout: float, check: Callable[[], Awaitable[bool]]) -> bool:
        return await self._poll(timeout, check)


def connect_sqlite(url: str, options: BackendOptions) -> Backend:
    """The SQLite backend for ``url`` (the file is opened on first use)."""
    db = SqliteDatabase(url, options)
    return Backend(
        name="sqlite",
        url=url,
        queue=SqlQueue(db),
        results=SqlResults(db),
        workers=SqlWorkers(db),
        scheduler=SqlScheduler(db),
        capabilities=SQLITE_CAPABILITIES,
        options=options,
    )

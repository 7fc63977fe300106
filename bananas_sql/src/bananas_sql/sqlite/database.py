"""The SQLite :class:`~bananas_sql.database.Database`: one file, no server. WAL mode, a busy
timeout, ``BEGIN IMMEDIATE`` writes, and short polling for wake-ups; several worker processes
can share the file. Claims, outcomes, submissions and lease renewals run on the ``sqlite3``
connection of :mod:`~bananas_sql.sqlite.connection`; the rest (reads, the reaper and mover,
admin) on SQLAlchemy."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from bananas.backend import BackendOptions, redact_url
from bananas.errors import BackendUnavailable, ConfigError
from bananas.job import ALL_PRIORITIES, JobPriority
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import create_async_engine

from bananas_sql.batch import Write, statements
from bananas_sql.database import ClaimedRow, Connection, Database, OutageLog, one_line
from bananas_sql.groups import Claimed, GroupClaim, claim_steps, run_steps
from bananas_sql.queries import compile_all, fill
from bananas_sql.queries.groups import SqliteSql as group_sql
from bananas_sql.queries.sqlite import FRAGMENTS, any_ready_sql, claim_sql
from bananas_sql.sqlite.connection import RawSqlite
from bananas_sql.sqlite.groups import SqliteGroupSteps
from bananas_sql.urls import number, sqlite_path, sqlite_sqlalchemy_url

T = TypeVar("T")

log = logging.getLogger("bananas.sql")

READONLY = "bananas_readonly"
"""Execution option: begin a plain (deferred) transaction instead of ``BEGIN IMMEDIATE``."""

DEFAULT_WRITE_GAP = 0.002
"""Seconds a claim or an outcome may wait after a recent write transaction (``write_gap``)."""

HINT_INTERVAL = 0.002
"""Seconds between looks at the file's signature while waiting (a stat of two files, no query)."""


class SqliteDatabase(Database):
    """SQLite flavour of :class:`Database`."""

    dialect = "sqlite"

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

        super().__init__(url, options)
        self.engine = engine
        names = self.names.as_mapping()
        self.q = compile_all(names, FRAGMENTS)
        self.sql = fill(names, FRAGMENTS)
        self._outage = OutageLog(f"sqlite database at {redact_url(url)}")
        self.poll_interval = number(extra, "poll_interval", 0.05)
        self.raw = RawSqlite(sqlite_path(url), busy_ms, redact_url(url), write_gap=_write_gap(extra))
        self._claims: dict[tuple[int, tuple[int, ...] | None, int], str] = {}
        self._any_ready: dict[int, str] = {}
        self._grouped: dict[int, str] = {}

    async def run(
        self, work: Callable[[Connection], Awaitable[T]], *, readonly: bool = False, single: bool = False
    ) -> T:
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.05
        while True:
            try:
                if not self._schema_ok:
                    await self._check_schema()
                async with self.engine.connect() as conn:
                    if readonly:
                        await conn.execution_options(**{READONLY: True})
                    async with conn.begin():
                        result = await work(conn)
                self._outage.recovered()
                return result
            except (OperationalError, InterfaceError, OSError) as exc:
                if self._closed or time.monotonic() + delay > deadline:
                    raise self._unavailable(exc) from exc
                self._outage.failing(_cause(exc), self.retry_seconds)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _unavailable(self, exc: BaseException) -> BackendUnavailable:
        where = redact_url(self.url)
        return BackendUnavailable(f"sqlite database at {where} is unavailable: {one_line(_cause(exc))}")

    def statement(self, sql: str) -> sa.TextClause:
        return sa.text(sql)

    async def _check_schema(self) -> None:
        async with self.engine.connect() as conn:
            try:
                version = (await conn.execute(self.q["schema_version"])).scalar()
            except (OperationalError, InterfaceError) as exc:
                if "no such table" not in str(exc.orig):
                    raise
                version = None
            await conn.rollback()
        self.schema_checked(version)

    async def insert_many(self, rows: Sequence[Mapping[str, Any]], now: float) -> bool:
        """See :meth:`Database.insert_many`: in a savepoint of a shared write transaction, so an
        id already taken leaves nothing of the batch written."""
        await self._ensure_schema()
        ids = {f"i{n}": r["id"] for n, r in enumerate(rows)}
        delete = self.sql["delete_expired_ids"].replace(":ids", "(" + ", ".join(f":{k}" for k in ids) + ")")
        insert = self.sql["insert"]

        def work(conn: sqlite3.Connection) -> bool:
            conn.execute(delete, {**ids, "now": now})
            conn.executemany(insert, rows)
            return True

        try:
            return await self.raw.transaction(work, weight=len(rows))
        except sqlite3.IntegrityError:
            return False

    async def renew_leases(self, held: Sequence[tuple[str, str]], until: float) -> set[str]:
        await self._ensure_schema()
        renew = self.sql["renew"]

        def work(conn: sqlite3.Connection) -> set[str]:
            return {
                job_id
                for job_id, token in held
                if conn.execute(renew, {"id": job_id, "token": token, "until": until}).fetchone() is not None
            }

        return await self.raw.transaction(work, defer=True, weight=len(held))

    def _claim_sql(self, n_keys: int, ranks: tuple[int, ...] | None, n_names: int) -> str:
        shape = (n_keys, ranks, n_names)
        query = self._claims.get(shape)
        if query is None:
            query = self._claims[shape] = claim_sql(self.names.jobs, n_keys, ranks, n_names)
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
    ) -> list[ClaimedRow] | None:
        await self._ensure_schema()
        ranks = None if set(priorities) == set(ALL_PRIORITIES) else tuple(sorted({p.rank for p in priorities}))
        names = list(job_names or ())
        query = self._claim_sql(len(routing_keys), ranks, len(names))
        params: dict[str, Any] = {"now": now, "lease_until": lease_until, "limit": limit, "token": token}
        params.update({f"k{i}": key for i, key in enumerate(routing_keys)})
        params.update({f"n{i}": name for i, name in enumerate(names)})

        grouped = self._grouped_due(len(routing_keys))

        def work(conn: sqlite3.Connection) -> list[Any] | None:
            if conn.execute(grouped, params).fetchone() is not None:
                return None  # a grouped job is due: claim_grouped
            return conn.execute(query, params).fetchall()

        # One UPDATE inside BEGIN IMMEDIATE: no other writer can claim the same rows meanwhile.
        rows = await self.raw.transaction(work, defer=True)
        if rows is None:
            return None
        if len(rows) > limit:  # never expected; a claim must not take more than asked
            raise RuntimeError(f"claimed {len(rows)} rows for a limit of {limit}")
        ordered = sorted((key_rank, priority, position, seq, data, job_id)
                         for seq, data, job_id, key_rank, priority, position in rows)  # fmt: skip
        return [ClaimedRow(seq, data, job_id) for *_, seq, data, job_id in ordered]

    def _grouped_due(self, n_keys: int) -> str:
        query = self._grouped.get(n_keys)
        if query is None:
            query = self._grouped[n_keys] = group_sql.grouped_due(self.names.jobs, n_keys)
        return query

    async def claim_grouped(self, req: GroupClaim) -> Claimed:
        await self._ensure_schema()
        names = self.names.as_mapping()

        def work(conn: sqlite3.Connection) -> Claimed:
            return run_steps(claim_steps(req), SqliteGroupSteps(conn, names, req))

        return await self.raw.transaction(work, defer=True)

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
            query = self._any_ready[len(keys)] = any_ready_sql(self.sql["any_ready"], len(keys))
        await self._ensure_schema()

        grouped = self._grouped_due(len(keys))
        names = self.names.as_mapping()

        def look(conn: sqlite3.Connection, now: float) -> bool:
            params: dict[str, Any] = {"now": now, **{f"k{i}": key for i, key in enumerate(keys)}}
            if conn.execute(query, params).fetchone() is not None:
                return True
            if conn.execute(grouped, params).fetchone() is None:
                return False
            # Grouped jobs are due: is one of them (or a job behind them) one a claim would take?
            ranks = tuple(p.rank for p in ALL_PRIORITIES)
            req = GroupClaim(tuple(keys), ranks, True, None, 1, now, now, "", dry=True)
            return run_steps(claim_steps(req), SqliteGroupSteps(conn, names, req)).takes

        async def any_ready() -> bool:
            now = self.clock()
            return await self.raw.read(lambda conn: look(conn, now))

        await self._poll(timeout, any_ready)

    async def wait_for_result(self, job_id: str, timeout: float, check: Callable[[], Awaitable[bool]]) -> bool:
        return await self._poll(timeout, check)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self.raw.close()
            await self.engine.dispose()


def _write_gap(extra: Mapping[str, Any]) -> float:
    value = extra.get("write_gap", DEFAULT_WRITE_GAP)
    try:
        gap = float(value)
    except (TypeError, ValueError):
        gap = -1.0
    if not 0 <= gap <= 1:
        raise ConfigError(f"write_gap must be a number of seconds from 0 to 1, got {value!r}")
    return gap


def _cause(exc: BaseException) -> BaseException:
    return exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc

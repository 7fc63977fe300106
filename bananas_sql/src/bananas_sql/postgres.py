"""PostgreSQL: one-statement SKIP LOCKED claims, LISTEN/NOTIFY wake-ups, transactional enqueue."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from bananas.backend import Backend, BackendOptions, redact_url
from bananas.clock import Clock, system_clock
from bananas.errors import DuplicateJob
from bananas.job import ALL_PRIORITIES, Job, JobPriority
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from bananas_sql.batch import Write
from bananas_sql.database import Database
from bananas_sql.pg_batch import combined_sql, insert_many_sql, plan, single_sql
from bananas_sql.pg_raw import RawPg, pyformat
from bananas_sql.plugin import POSTGRES_CAPABILITIES
from bananas_sql.queries import compile_all
from bananas_sql.queue import job_params
from bananas_sql.results import sql_backend
from bananas_sql.tables import Names
from bananas_sql.urls import number, postgres_conninfo, postgres_sqlalchemy_url

log = logging.getLogger("bananas.sql.postgres")

FRAGMENTS: Mapping[str, str] = {
    "next_pos": "nextval('{position_seq}')",
    "front_pos": "-nextval('{position_seq}')",
    "lock": "FOR UPDATE SKIP LOCKED",
}

_CLAIM_ONE_KEY = """
UPDATE {jobs} SET state = 'processing', lease_until = :lease_until
WHERE seq = ANY(ARRAY(
    SELECT seq FROM {jobs}
    WHERE state IN ('ready', 'scheduled') AND run_at <= :now AND routing_key = :k{i} {priority_filter} {name_filter}
    ORDER BY priority, position
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
))
RETURNING seq, state, data, error, name, id, {i} AS key_rank, priority, position"""


def claim_sql(jobs: str, n_keys: int, all_priorities: bool, by_name: bool) -> str:
    """One statement claiming up to ``:limit`` jobs over ``n_keys`` routing keys in order.

    Each key is a data-modifying CTE walking the partial index in (priority, position)
    order, limited to what the keys before it left; so no claim sorts the whole backlog.
    The claimed rows are found again by primary key from an ARRAY of their ``seq``: with
    ``seq IN (subquery)`` PostgreSQL's generic plan for the prepared statement (which it
    may switch to after five executions) hash-joins the subquery against a sequential
    scan of the whole table, 200 ms with a million jobs (bench/pg_claim_probe.py).
    """
    priority_filter = "" if all_priorities else "AND priority = ANY(CAST(:prios AS smallint[]))"
    name_filter = "AND name = ANY(CAST(:names AS text[]))" if by_name else ""
    parts = []
    for i in range(n_keys):
        taken = "".join(f" - (SELECT count(*) FROM c{j})" for j in range(i))
        limit = f"(:limit{taken})" if taken else ":limit"
        body = _CLAIM_ONE_KEY.format(
            jobs=jobs, i=i, limit=limit, priority_filter=priority_filter, name_filter=name_filter
        )
        parts.append(body)
    if n_keys == 1:
        return parts[0]
    ctes = ",\n".join(f"c{i} AS ({body})" for i, body in enumerate(parts))
    return f"WITH {ctes}\n" + "\nUNION ALL ".join(f"SELECT * FROM c{i}" for i in range(n_keys))


def _claim_params(
    routing_keys: Sequence[str],
    priorities: Sequence[JobPriority],
    all_prios: bool,
    job_names: Sequence[str] | None,
    **values: float,
) -> dict[str, Any]:
    """Parameters of :func:`claim_sql`'s statement (``values``: limit, lease_until, now)."""
    params: dict[str, Any] = dict(values)
    params.update({f"k{i}": key for i, key in enumerate(routing_keys)})
    if not all_prios:
        params["prios"] = [p.rank for p in priorities]
    if job_names is not None:
        params["names"] = list(job_names)
    return params


BUSY_CLAIMS = 8
"""Full claims in a row after which a worker stops listening for work until it runs dry."""


class PostgresDatabase(Database):
    """PostgreSQL flavour of :class:`Database`."""

    dialect = "postgresql"
    fragments = FRAGMENTS

    def __init__(self, url: str, options: BackendOptions) -> None:
        extra = options.extra
        engine = create_async_engine(
            postgres_sqlalchemy_url(url),
            # Off by default: every operation already retries on a lost connection, and a
            # ping would add a round trip to each one.
            pool_pre_ping=str(extra.get("pool_pre_ping", "")).lower() in ("1", "true", "yes"),
            pool_size=int(number(extra, "pool_size", 10)),
            max_overflow=20,
        )
        super().__init__(url, engine, options)
        self._claims: dict[tuple[int, bool, bool], sa.TextClause] = {}
        self._raw_claims: dict[tuple[int, bool, bool], str] = {}
        self.pg = {name: pyformat(sql) for name, sql in self.sql.items()}
        self.pg.update(single_sql(self.names.as_mapping()))
        self.pg_combined = combined_sql(self.names.as_mapping())
        self.pg_insert_many = insert_many_sql(self.names.as_mapping())
        self.pg["delete_expired_ids"] = pyformat(
            self.sql["delete_expired_ids"].replace("id IN :ids", "id = ANY(CAST(:ids AS text[]))")
        )
        conninfo, describe, size = postgres_conninfo(url), redact_url(url), int(number(extra, "pool_size", 10))
        self.raw = RawPg(conninfo, describe, self.retry_seconds, size)
        # Claims commit asynchronously (no WAL flush wait): a claim lost in a server crash
        # leaves its job ready to run again, which at-least-once allows; submissions,
        # outcomes and results stay synchronous. claim_sync_commit=true turns this off.
        sync_claims = str(extra.get("claim_sync_commit", "")).lower() in ("1", "true", "yes")
        # The claim's generic plan (see claim_sql) is as good as a custom one and skips
        # planning every claim (0.3 ms with a large backlog); unforced, PostgreSQL keeps
        # re-planning because it misjudges LIMIT $n as a tenth of the table.
        claim_options = {"plan_cache_mode": "force_generic_plan"}
        if not sync_claims:
            claim_options["synchronous_commit"] = "off"
        self.raw_claimer = RawPg(conninfo, describe, self.retry_seconds, size, claim_options)
        self.listener = Listener(postgres_conninfo(url), self.names.channel("work"), self.names.channel("result"))
        self._seen_generation = -1
        self._full_claims = 0

    def _claim_query(self, n_keys: int, all_priorities: bool, by_name: bool) -> sa.TextClause:
        variant = (n_keys, all_priorities, by_name)
        query = self._claims.get(variant)
        if query is None:
            query = self._claims[variant] = sa.text(claim_sql(self.names.jobs, n_keys, all_priorities, by_name))
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
        all_prios = set(priorities) == set(ALL_PRIORITIES)
        query = self._claim_query(len(routing_keys), all_prios, job_names is not None)
        params = _claim_params(
            routing_keys, priorities, all_prios, job_names, limit=limit, lease_until=lease_until, now=now
        )
        rows = (await conn.execute(query, params)).all()
        return sorted(rows, key=lambda r: (r.key_rank, r.priority, r.position))

    async def claim(
        self,
        routing_keys: Sequence[str],
        priorities: Sequence[JobPriority],
        *,
        limit: int,
        lease_until: float,
        job_names: Sequence[str] | None,
        now: float,
    ) -> list[tuple[int, str, str]]:
        await self._ensure_schema()
        all_prios = set(priorities) == set(ALL_PRIORITIES)
        variant = (len(routing_keys), all_prios, job_names is not None)
        query = self._raw_claims.get(variant)
        if query is None:
            query = self._raw_claims[variant] = pyformat(claim_sql(self.names.jobs, *variant))
        params = _claim_params(
            routing_keys, priorities, all_prios, job_names, limit=limit, lease_until=lease_until, now=now
        )

        async def work(conn: Any) -> list[Any]:
            return list(await (await conn.execute(query, params)).fetchall())

        rows = await self.raw_claimer.run(work)
        self._note_claimed(len(rows), limit)
        rows.sort(key=lambda r: (r[6], r[7], r[8]))
        return [(r[0], r[2], r[5]) for r in rows]

    async def enqueue_one(self, params: Mapping[str, Any]) -> bool:
        await self._ensure_schema()
        sql = self.pg["enqueue"]
        attempts = 0

        async def work(conn: Any) -> bool:
            nonlocal attempts
            attempts += 1
            return await (await conn.execute(sql, params)).fetchone() is not None or attempts > 1

        return await self.raw.run(work)

    async def insert_many(self, rows: Sequence[Mapping[str, Any]], now: float) -> bool:
        import psycopg

        await self._ensure_schema()
        columns = ("id", "name", "state", "routing_key", "priority", "run_at", "data")
        arrays = {col: [r[col] for r in rows] for col in columns}
        delete, insert = self.pg["delete_expired_ids"], self.pg_insert_many

        async def work(conn: psycopg.AsyncConnection[Any]) -> bool:
            try:
                async with conn.transaction():
                    await conn.execute(delete, {"ids": arrays["id"], "now": now})
                    await conn.execute(insert, arrays)
            except psycopg.errors.UniqueViolation:
                return False
            return True

        return await self.raw.run(work)

    async def write_batch(self, writes: Sequence[Write]) -> list[bool]:
        await self._ensure_schema()
        steps = plan(writes, self.pg, self.pg_combined)
        outcomes = await self.raw.statements([(sql, params) for sql, params, _ in steps])
        touched = [False] * len(writes)
        for (_sql, _params, indexes), (rows, count) in zip(steps, outcomes, strict=True):
            if len(indexes) == 1:
                touched[indexes[0]] = bool(rows) or count > 0
            else:
                hit = {row[0] for row in rows}
                for i in indexes:
                    touched[i] = writes[i][1]["id"] in hit
        return touched

    def execution_options(self, *, readonly: bool, single: bool) -> dict[str, Any]:
        # One statement is atomic by itself: skip the BEGIN and COMMIT round trips.
        return {"isolation_level": "AUTOCOMMIT"} if readonly or single else {}

    def note_claim(self) -> None:
        if self._full_claims < BUSY_CLAIMS:  # not busy: listen (from before the claim, so nothing is missed)
            self.listener.start(self.listener.work_channel)
            self._seen_generation = self.listener.generation

    def _note_claimed(self, claimed: int, limit: int) -> None:
        """Stop listening for work after :data:`BUSY_CLAIMS` full claims in a row.

        Every NOTIFY in the database (each stored result's, too) makes each LISTENing session
        run a transaction, so a busy worker pays one per completion batch for a wake-up it does
        not need. The next :meth:`wait_for_work` listens again and returns once it does, so
        the claim that follows sees whatever was submitted meanwhile.
        """
        if claimed >= limit:
            self._full_claims += 1
            if self._full_claims == BUSY_CLAIMS:
                self.listener.drop(self.listener.work_channel)
        elif self._full_claims < BUSY_CLAIMS:
            self._full_claims = 0  # once busy, only wait_for_work listens again

    async def wait_for_work(self, routing_keys: Sequence[str], timeout: float) -> None:
        self._full_claims = 0
        self.listener.start(self.listener.work_channel)
        if self.listener.generation != self._seen_generation:
            self._seen_generation = self.listener.generation
            return  # something was announced since the last claim
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.listener.work_event.wait(), timeout)
        self._seen_generation = self.listener.generation

    async def wait_for_result(self, job_id: str, timeout: float, check: Callable[[], Awaitable[bool]]) -> bool:
        deadline = time.monotonic() + timeout
        self.listener.start(self.listener.result_channel)
        event = self.listener.watch(job_id)
        try:
            while True:
                event.clear()
                if await check():
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                # Re-check now and then in case the listener connection was down when it fired.
                step = min(left, 5.0 if self.listener.connected else 0.5)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), step)
        finally:
            self.listener.unwatch(job_id, event)

    async def close(self) -> None:
        await self.listener.stop()
        await self.raw.close()
        await self.raw_claimer.close()
        await super().close()


class Listener:
    """One dedicated connection LISTENing for new work and stored results, reconnecting when lost.

    It listens only on the channels this process asked for: a worker that never waits for a
    result is not sent a notification for every result stored (nor a client for every job).
    """

    def __init__(self, conninfo: str, work_channel: str, result_channel: str) -> None:
        self.conninfo = conninfo
        self.work_channel = work_channel
        self.result_channel = result_channel
        self.generation = 0
        self.work_event = asyncio.Event()
        self.connected = False
        self._results: dict[str, set[asyncio.Event]] = {}
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

    def _wake_all(self) -> None:
        self._wake_work()
        for events in self._results.values():
            for event in events:
                event.set()

    async def _run(self, channels: Sequence[str]) -> None:
        import psycopg

        delay = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
                    for channel in channels:
                        await conn.execute(f'LISTEN "{channel}"')
                    self.connected = True
                    delay = 0.1
                    self._wake_all()  # whatever happened while we were not listening
                    async for note in conn.notifies():
                        if note.channel == self.work_channel:
                            self._wake_work()
                        else:
                            for event in self._results.get(note.payload, ()):
                                event.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("LISTEN connection lost (%s); reconnecting in %.1fs", exc, delay)
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


def connect_postgres(url: str, options: BackendOptions) -> Backend:
    """The PostgreSQL backend for ``url`` (connections open on first use)."""
    return sql_backend("postgresql", PostgresDatabase(url, options), url, options, POSTGRES_CAPABILITIES)


# -- transactional submission -----------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _enqueue_query(prefix_key: tuple[tuple[str, str], ...]) -> sa.TextClause:
    names = Names.from_extra(dict(prefix_key))
    return compile_all(names.as_mapping(), FRAGMENTS)["enqueue"]


def _prepare(
    job: Job, namespace: str | None, table_prefix: str | None, schema: str | None, clock: Clock
) -> tuple[sa.TextClause, dict[str, Any]]:
    extra = {k: v for k, v in (("namespace", namespace), ("table_prefix", table_prefix), ("schema", schema)) if v}
    return _enqueue_query(tuple(sorted(extra.items()))), job_params(job, clock())


def enqueue_in_transaction(
    connection: sa.Connection | Session,
    job: Job,
    *,
    namespace: str | None = None,
    table_prefix: str | None = None,
    schema: str | None = None,
    clock: Clock = system_clock,
) -> None:
    """Insert ``job`` through the caller's SQLAlchemy ``Connection`` or ``Session``.

    The job exists (and idle workers are woken) only when the caller's transaction
    commits; a rollback leaves no trace. PostgreSQL only. Raises
    :class:`~bananas.errors.DuplicateJob` if the id exists, :class:`~bananas.errors.InvalidJob`
    for a status other than pending/scheduled.
    """
    query, params = _prepare(job, namespace, table_prefix, schema, clock)
    if connection.execute(query, params).first() is None:
        raise DuplicateJob(f"a job with id {job.id!r} already exists")


async def enqueue_in_transaction_async(
    connection: AsyncConnection | AsyncSession,
    job: Job,
    *,
    namespace: str | None = None,
    table_prefix: str | None = None,
    schema: str | None = None,
    clock: Clock = system_clock,
) -> None:
    """:func:`enqueue_in_transaction` for an ``AsyncConnection`` or ``AsyncSession``."""
    query, params = _prepare(job, namespace, table_prefix, schema, clock)
    if (await connection.execute(query, params)).first() is None:
        raise DuplicateJob(f"a job with id {job.id!r} already exists")

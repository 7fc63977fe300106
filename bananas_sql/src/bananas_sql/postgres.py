"""PostgreSQL: one-statement SKIP LOCKED claims, LISTEN/NOTIFY wake-ups, transactional enqueue."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from bananas.backend import Backend, BackendOptions, redact_url
from bananas.clock import Clock, system_clock
from bananas.errors import DuplicateJob, InvalidJob
from bananas.job import ALL_PRIORITIES, Job, JobPriority
from bananas.protocols import DEFAULT_LEASE_SECONDS
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from bananas_sql.batch import Write
from bananas_sql.database import Database, one_line, stored_as_given
from bananas_sql.pg_batch import combined_sql, insert_many_sql, plan, renew_sql, single_sql
from bananas_sql.pg_raw import RawPg, pyformat, read_only
from bananas_sql.plugin import POSTGRES_CAPABILITIES
from bananas_sql.queries import compile_all
from bananas_sql.queue import SqlQueue, claim_arguments, job_params, new_lease_token
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
UPDATE {jobs} SET state = 'processing', lease_until = :lease_until, lease_token = :lease_token
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
    parts = _claim_parts(jobs, n_keys, all_priorities, by_name)
    if n_keys == 1:
        return parts[0]
    ctes = ",\n".join(f"c{i} AS ({body})" for i, body in enumerate(parts))
    return f"WITH {ctes}\n" + "\nUNION ALL ".join(f"SELECT * FROM c{i}" for i in range(n_keys))


def _claim_parts(jobs: str, n_keys: int, all_priorities: bool, by_name: bool) -> list[str]:
    """The claim of each routing key, in order; each a CTE named ``c{i}`` (see :func:`claim_sql`)."""
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
    return parts


def claim_or_register_sql(jobs: str, waiters: str, n_keys: int, all_priorities: bool) -> str:
    """:func:`claim_sql` that also registers the claiming worker as a waiter when it finds
    nothing and ``:register`` is true, and removes its registration otherwise.

    The registration and the claim share one snapshot: a job committed after it was taken is
    seen by the trigger (and handed over) or by this claim; one committed in between wakes the
    worker through the ordinary work channel, which it listens on too.
    """
    parts = _claim_parts(jobs, n_keys, all_priorities, False)
    ctes = [f"c{i} AS ({body})" for i, body in enumerate(parts)]
    ctes.append("c AS (" + " UNION ALL ".join(f"SELECT * FROM c{i}" for i in range(n_keys)) + ")")
    ctes.append(
        f"r AS (INSERT INTO {waiters} (token, channel, slot, routing_keys, priorities, lease, clock_offset, until, "
        "fenced) SELECT :token, :channel, :slot, CAST(:wkeys AS text[]), CAST(:wprios AS smallint[]), "
        ":lease, :now - s.t, s.t + :wait, true "
        "FROM (SELECT extract(epoch FROM clock_timestamp())::float8 AS t) AS s "
        "WHERE :register AND NOT EXISTS (SELECT 1 FROM c) "
        "ON CONFLICT (token) DO UPDATE SET channel = excluded.channel, slot = excluded.slot, "
        "routing_keys = excluded.routing_keys, priorities = excluded.priorities, lease = excluded.lease, "
        "clock_offset = excluded.clock_offset, until = excluded.until, fenced = true)"
    )
    ctes.append(
        f"d AS (DELETE FROM {waiters} WHERE token = :token AND NOT (:register AND NOT EXISTS (SELECT 1 FROM c)))"
    )
    return "WITH " + ",\n".join(ctes) + "\nSELECT * FROM c"


def _claim_params(
    routing_keys: Sequence[str],
    priorities: Sequence[JobPriority],
    all_prios: bool,
    job_names: Sequence[str] | None,
    **values: float | str,
) -> dict[str, Any]:
    """Parameters of :func:`claim_sql`'s statement (``values``: limit, lease_until, now; ``lease_token``)."""
    params: dict[str, Any] = dict(values)
    params.update({f"k{i}": key for i, key in enumerate(routing_keys)})
    if not all_prios:
        params["prios"] = [p.rank for p in priorities]
    if job_names is not None:
        params["names"] = list(job_names)
    return params


def _drop_read_only(context: sa.engine.ExceptionContext) -> None:
    """A statement refused by a read-only server (a standby after a switch of primaries) is a
    lost connection to SQLAlchemy: the connection, and the pool's older ones, are replaced."""
    if read_only(context.original_exception):
        context.is_disconnect = True


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
        sa.event.listen(engine.sync_engine, "handle_error", _drop_read_only)
        super().__init__(url, engine, options)
        self._claims: dict[tuple[int, bool, bool], sa.TextClause] = {}
        self._raw_claims: dict[tuple[int, bool, bool], str] = {}
        self._raw_waits: dict[tuple[int, bool], str] = {}
        self.pg = {name: pyformat(sql) for name, sql in self.sql.items()}
        self.pg.update(single_sql(self.names.as_mapping()))
        self.pg_combined = combined_sql(self.names.as_mapping())
        self.pg_insert_many = insert_many_sql(self.names.as_mapping())
        self.pg_renew = renew_sql(self.names.as_mapping())
        for name in ("delete_expired_ids", "stored_data"):
            self.pg[name] = pyformat(self.sql[name].replace("id IN :ids", "id = ANY(CAST(:ids AS text[]))"))
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
        self.listener = Listener(conninfo, self.names.channel("work"), self.names.channel("result"), describe)
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
        token: str,
    ) -> Sequence[sa.Row[Any]]:
        all_prios = set(priorities) == set(ALL_PRIORITIES)
        query = self._claim_query(len(routing_keys), all_prios, job_names is not None)
        params = _claim_params(
            routing_keys, priorities, all_prios, job_names, limit=limit, lease_until=lease_until, now=now,
            lease_token=token,
        )  # fmt: skip
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
        token: str,
    ) -> list[tuple[int, str, str]]:
        await self._ensure_schema()
        all_prios = set(priorities) == set(ALL_PRIORITIES)
        variant = (len(routing_keys), all_prios, job_names is not None)
        query = self._raw_claims.get(variant)
        if query is None:
            query = self._raw_claims[variant] = pyformat(claim_sql(self.names.jobs, *variant))
        params = _claim_params(
            routing_keys, priorities, all_prios, job_names, limit=limit, lease_until=lease_until, now=now,
            lease_token=token,
        )  # fmt: skip

        async def work(conn: Any) -> list[Any]:
            return list(await (await conn.execute(query, params)).fetchall())

        rows = await self.raw_claimer.run(work)
        self._note_claimed(len(rows), limit)
        rows.sort(key=lambda r: (r[6], r[7], r[8]))
        return [(r[0], r[2], r[5]) for r in rows]

    async def claim_or_register(
        self,
        routing_keys: Sequence[str],
        priorities: Sequence[JobPriority],
        *,
        limit: int,
        lease: float,
        now: float,
        token: str,
        lease_token: str,
        slot: int,
        register: bool,
        wait: float,
    ) -> list[tuple[int, str, str]]:
        """Claim up to ``limit`` jobs under ``lease_token``; register ``token`` (``slot`` on this
        process's hand-off channel) as a waiter for ``wait`` seconds if none was found and
        ``register``, else drop its registration. ``(seq, data, id)`` in claim order."""
        await self._ensure_schema()
        all_prios = set(priorities) == set(ALL_PRIORITIES)
        variant = (len(routing_keys), all_prios)
        query = self._raw_waits.get(variant)
        if query is None:
            query = self._raw_waits[variant] = pyformat(
                claim_or_register_sql(self.names.jobs, self.names.waiters, *variant)
            )
        params = _claim_params(
            routing_keys, priorities, all_prios, None, limit=limit, lease_until=now + lease, now=now,
            lease_token=lease_token,
        )  # fmt: skip
        params.update(
            token=token,
            channel=self.listener.hand_off_channel,
            slot=slot,
            wkeys=list(routing_keys),
            wprios=[p.rank for p in priorities],
            lease=float(lease),
            register=register,
            wait=float(wait),
        )

        async def work(conn: Any) -> list[Any]:
            return list(await (await conn.execute(query, params)).fetchall())

        rows = await self.raw_claimer.run(work)
        rows.sort(key=lambda r: (r[6], r[7], r[8]))
        return [(r[0], r[2], r[5]) for r in rows]

    async def unregister(self, token: str) -> None:
        """Drop the waiter registration of ``token``, if any."""
        await self._ensure_schema()
        sql = f"DELETE FROM {self.names.waiters} WHERE token = %(token)s"

        async def work(conn: Any) -> None:
            await conn.execute(sql, {"token": token})

        await self.raw_claimer.run(work)

    async def handed_rows(self, handed: Sequence[tuple[int, str]]) -> dict[int, tuple[str, str]]:
        """``seq -> (data, id)`` of handed-over ``(seq, lease token)`` jobs still held under that
        token (for jobs too large to travel with their hand-off)."""
        sql = (
            f"SELECT j.seq, j.data, j.id FROM {self.names.jobs} AS j "
            "JOIN unnest(CAST(%(seqs)s AS bigint[]), CAST(%(tokens)s AS text[])) AS v(seq, token) "
            "ON j.seq = v.seq AND j.lease_token = v.token WHERE j.state = 'processing'"
        )
        params = {"seqs": [seq for seq, _ in handed], "tokens": [token for _, token in handed]}

        async def work(conn: Any) -> dict[int, tuple[str, str]]:
            rows = await (await conn.execute(sql, params)).fetchall()
            return {r[0]: (r[1], r[2]) for r in rows}

        return await self.raw_claimer.run(work)

    async def renew_handed(self, handed: Sequence[tuple[int, str]], until: float) -> None:
        """Extend the leases of handed-over ``(seq, lease token)`` jobs not yet taken by the
        worker they were handed to (only while still held under that token)."""
        sql = (
            f"UPDATE {self.names.jobs} AS j SET lease_until = %(until)s "
            "FROM unnest(CAST(%(seqs)s AS bigint[]), CAST(%(tokens)s AS text[])) AS v(seq, token) "
            "WHERE j.seq = v.seq AND j.lease_token = v.token AND j.state = 'processing'"
        )
        params = {"seqs": [seq for seq, _ in handed], "tokens": [token for _, token in handed], "until": until}

        async def work(conn: Any) -> None:
            await conn.execute(sql, params)

        await self.raw.run(work)

    async def renew_leases(self, held: Sequence[tuple[str, str]], until: float) -> set[str]:
        """One statement over arrays of ``(id, lease token)`` (see :meth:`Database.renew_leases`)."""
        await self._ensure_schema()
        sql = self.pg_renew
        params = {"ids": [job_id for job_id, _ in held], "tokens": [token for _, token in held], "until": until}

        async def work(conn: Any) -> set[str]:
            return {r[0] for r in await (await conn.execute(sql, params)).fetchall()}

        return await self.raw.run(work)

    async def enqueue_one(self, params: Mapping[str, Any]) -> bool:
        """See :meth:`Database.enqueue_one` (a retry that finds the job stored as given is True)."""
        await self._ensure_schema()
        sql, stored = self.pg["enqueue"], self.pg["stored_data"]
        attempts = 0

        async def work(conn: Any) -> bool:
            nonlocal attempts
            attempts += 1
            if await (await conn.execute(sql, params)).fetchone() is not None:
                return True
            return attempts > 1 and stored_as_given(
                await (await conn.execute(stored, {"ids": [params["id"]]})).fetchall(), [params]
            )

        return await self.raw.run(work)

    async def insert_many(self, rows: Sequence[Mapping[str, Any]], now: float) -> bool:
        """See :meth:`Database.insert_many` (a retry that finds the jobs stored as given is True)."""
        import psycopg

        await self._ensure_schema()
        columns = ("id", "name", "state", "routing_key", "priority", "run_at", "data")
        arrays = {col: [r[col] for r in rows] for col in columns}
        delete, insert, stored = self.pg["delete_expired_ids"], self.pg_insert_many, self.pg["stored_data"]
        attempts = 0

        async def work(conn: psycopg.AsyncConnection[Any]) -> bool:
            nonlocal attempts
            attempts += 1
            try:
                async with conn.transaction():
                    await conn.execute(delete, {"ids": arrays["id"], "now": now})
                    await conn.execute(insert, arrays)
            except psycopg.errors.UniqueViolation:
                if attempts == 1:
                    return False
                found = await (await conn.execute(stored, {"ids": arrays["id"]})).fetchall()
                return stored_as_given(found, rows)
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
                if not self.listener.hand_off_events:  # no worker of this process waits for a hand-off
                    self.listener.drop(self.listener.hand_off_channel)
        elif self._full_claims < BUSY_CLAIMS:
            self._full_claims = 0  # once busy, only wait_for_work listens again

    def note_waiting(self) -> None:
        """A worker is about to claim and wait for a hand-off: it is not busy."""
        self._full_claims = 0

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

    def __init__(self, conninfo: str, work_channel: str, result_channel: str, describe: str = "") -> None:
        self.conninfo = conninfo
        self.describe = describe or "the database"
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
        import psycopg

        delay = 0.1
        lost_at: float | None = None
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True) as conn:
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


class PostgresQueue(SqlQueue):
    """:class:`SqlQueue` whose idle workers are handed new jobs by the transaction that made
    them ready (``claim_or_wait``), as on Redis: one hop from producer to worker.

    A worker whose claim finds nothing registers in the waiters table in the same statement,
    under a slot of its process's hand-off channel (one LISTEN per process, however many
    workers), and waits. The triggers that announce work (see :mod:`bananas_sql.migrate`)
    claim a job made ready for a registered worker that takes its routing key and priority
    (state and lease, on the worker's clock) and send it, data included, to that slot. Jobs
    handed over while their worker was not waiting are kept for its next claim; until then
    their leases are renewed with the running jobs'. A hand-off whose notification is lost
    (the listening connection dropped, or the worker stopped just then) is recovered when its
    lease runs out, like any job of a worker that died.
    """

    db: PostgresDatabase

    def __init__(self, db: PostgresDatabase) -> None:
        super().__init__(db)
        self._slots: dict[str, int] = {}
        """Each waiter's slot on this process's hand-off channel."""
        self._serves: dict[int, tuple[frozenset[str], frozenset[JobPriority]]] = {}
        """Per slot of a worker that has not stopped waiting: the routing keys and priorities it
        registered for, so a plain claim takes only handed-over jobs it asked for."""

    async def claim(
        self,
        routing_keys: Sequence[str],
        priorities: Sequence[JobPriority] = ALL_PRIORITIES,
        *,
        limit: int = 1,
        lease: float = DEFAULT_LEASE_SECONDS,
        job_names: Collection[str] | None = None,
    ) -> list[Job]:
        keys, prios, _ = claim_arguments(routing_keys, priorities, limit, job_names)
        handed: list[Job] = []
        if job_names is None and self._serves:
            asked_keys, asked_prios = set(keys), set(prios)
            for slot, (served_keys, served_prios) in list(self._serves.items()):
                if len(handed) < limit and served_keys <= asked_keys and served_prios <= asked_prios:
                    handed += await self._take_handed(slot, limit - len(handed))
        if len(handed) >= limit:
            return handed
        return handed + await super().claim(
            routing_keys, priorities, limit=limit - len(handed), lease=lease, job_names=job_names
        )

    async def claim_or_wait(
        self,
        routing_keys: Sequence[str],
        priorities: Sequence[JobPriority] = ALL_PRIORITIES,
        *,
        limit: int = 1,
        lease: float = DEFAULT_LEASE_SECONDS,
        waiter: str,
        timeout: float,
    ) -> list[Job]:
        """Claim like :meth:`claim`; if nothing is ready, wait up to ``timeout`` seconds for a
        job handed over by the next transaction that makes one ready (already claimed, leased
        for ``lease`` seconds). ``waiter`` is a token unique to the worker. Returns ``[]`` when
        the wait ran out or the worker was only woken. Call :meth:`stop_waiting` on stop."""
        keys, prios, _ = claim_arguments(routing_keys, priorities, limit, None)
        if not keys or not prios:
            return []
        if lease <= 0:
            raise InvalidJob(f"lease must be > 0 seconds, got {lease!r}")
        db, listener = self.db, self.db.listener
        slot = self._slots.setdefault(waiter, len(self._slots))
        self._serves[slot] = (frozenset(keys), frozenset(prios))
        event = listener.hand_off_events.setdefault(slot, asyncio.Event())
        listener.start(listener.hand_off_channel)  # the first call reconnects to listen on it
        listener.start(listener.work_channel)
        db.note_waiting()
        jobs = await self._take_handed(slot, limit)
        # Register only while the listener is connected: a hand-off must never be sent to
        # a channel nobody listens on. Otherwise the ordinary work channel wakes the worker.
        register = not jobs and listener.connected
        now = self._now()
        lease_token = new_lease_token()
        rows = await db.claim_or_register(
            keys,
            prios,
            limit=limit - len(jobs),
            lease=lease,
            now=now,
            token=waiter,
            lease_token=lease_token,
            slot=slot,
            register=register,
            wait=timeout,
        )
        jobs += await self.claimed_jobs([(seq, data, job_id, lease_token) for seq, data, job_id in rows], now)
        if jobs:
            return jobs
        # A wake-up since the last wait ended (set, not yet cleared) ends this one at once.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        event.clear()
        return await self._take_handed(slot, limit)

    async def stop_waiting(self, waiter: str) -> list[Job]:
        """Unregister ``waiter`` and return the jobs handed to it that it has not taken (the
        caller releases them)."""
        await self.db.unregister(waiter)
        slot = self._slots.get(waiter)
        if slot is None:
            return []
        self._serves.pop(slot, None)
        self.db.listener.hand_off_events.pop(slot, None)
        return await self._take_handed(slot, len(self.db.listener.handed.get(slot, ())))

    async def wake_waiter(self, waiter: str) -> None:
        """End the current (or else the next) wait of ``waiter``, a worker of this process."""
        slot = self._slots.get(waiter)
        event = None if slot is None else self.db.listener.hand_off_events.get(slot)
        if event is not None:
            event.set()

    async def renew(self, jobs: Sequence[Job], lease: float = DEFAULT_LEASE_SECONDS) -> set[str]:
        buffers = [self.db.listener.handed.get(slot, ()) for slot in self._serves]
        handed = [(seq, token) for buffer in buffers for seq, token, _ in _parse_handed(buffer)]
        if handed:  # kept for this worker's next claim: theirs is its lease to keep
            await self.db.renew_handed(handed, self._now() + lease)
        return await super().renew(jobs, lease)

    async def _take_handed(self, slot: int, limit: int) -> list[Job]:
        """Up to ``limit`` of the jobs handed over to ``slot`` and not yet taken, oldest first."""
        buffer = self.db.listener.handed.get(slot)
        if not buffer or limit < 1:
            return []
        taken = buffer[:limit]
        del buffer[:limit]
        entries = _parse_handed(taken)
        missing = [(seq, token) for seq, token, data in entries if data is None]
        fetched = await self.db.handed_rows(missing) if missing else {}
        rows = []
        for seq, token, data in entries:
            if data is not None:
                rows.append((seq, data, f"#{seq}", token))
            elif seq in fetched:  # gone if reaped or finished meanwhile: no longer ours
                rows.append((seq, *fetched[seq], token))
        return await self.claimed_jobs(rows, self._now())


def _parse_handed(payloads: Sequence[str]) -> list[tuple[int, str, str | None]]:
    """``(seq, lease token, data or None)`` of hand-off payloads (``seq token``, or ``seq token data``)."""
    entries: list[tuple[int, str, str | None]] = []
    for payload in payloads:
        seq, _, rest = payload.partition(" ")
        token, _, data = rest.partition(" ")
        entries.append((int(seq), token, data or None))
    return entries


def connect_postgres(url: str, options: BackendOptions) -> Backend:
    """The PostgreSQL backend for ``url`` (connections open on first use)."""
    db = PostgresDatabase(url, options)
    return sql_backend("postgresql", db, url, options, POSTGRES_CAPABILITIES, queue=PostgresQueue(db))


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

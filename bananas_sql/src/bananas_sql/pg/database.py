"""The PostgreSQL :class:`~bananas_sql.database.Database`: every statement on psycopg, through
the backend's one :class:`~bananas_sql.pg.pool.ConnectionPool`, as prepared statements
(psycopg prepares a query after its fifth use on a connection); a batch of writes is
pipelined (BEGIN, every write and COMMIT leave in one round trip)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from bananas.backend import BackendOptions, redact_url
from bananas.job import ALL_PRIORITIES, JobPriority

from bananas_sql.batch import Write
from bananas_sql.database import Claimed, ClaimedRow, Connection, Database, GroupClaim, stored_as_given
from bananas_sql.pg.batch import plan
from bananas_sql.pg.groups import PostgresGroupStatements, claim_grouped
from bananas_sql.pg.listener import Listener
from bananas_sql.pg.pool import ConnectionPool
from bananas_sql.pg.session import Session
from bananas_sql.queries import fill, pyformat, pyformat_all
from bananas_sql.queries.postgres import FRAGMENTS, claim_or_register_sql, claim_sql, combined_sql, statements
from bananas_sql.urls import number, postgres_conninfo

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")

DEFAULT_POOL_SIZE = 10
"""Connections one PostgreSQL backend may open at most, the listening one included (``pool_size``)."""

BUSY_CLAIMS = 8
"""Full claims in a row after which a worker stops listening for work until it runs dry."""


def _flag(extra: Mapping[str, Any], key: str) -> bool:
    return str(extra.get(key, "")).lower() in ("1", "true", "yes")


class PostgresDatabase(Database):
    """PostgreSQL flavour of :class:`Database`."""

    dialect = "postgresql"

    def __init__(self, url: str, options: BackendOptions) -> None:
        super().__init__(url, options)
        extra = options.extra
        names = self.names.as_mapping()
        self.q = self.sql = pyformat_all(fill(names, FRAGMENTS))
        self.pg = {**self.sql, **statements(names)}
        self.pg_combined = combined_sql(names)
        self.group_sql = PostgresGroupStatements(names)
        # Claims commit asynchronously (no WAL flush wait): a claim lost in a server crash
        # leaves its job ready to run again, which at-least-once allows; submissions,
        # outcomes and results stay synchronous. claim_sync_commit=true turns this off.
        # The claim's generic plan (see claim_sql) is as good as a custom one and skips
        # planning every claim (0.3 ms with a large backlog); unforced, PostgreSQL keeps
        # re-planning because it misjudges LIMIT $n as a tenth of the table. Every claim
        # statement walks a partial index; a generic plan built while grouped jobs were many
        # would otherwise probe for them (or count them) by scanning the table, finished
        # history included, on every claim for the connection's life.
        claim_settings = {"plan_cache_mode": "force_generic_plan", "enable_seqscan": "off"}
        if not _flag(extra, "claim_sync_commit"):
            claim_settings["synchronous_commit"] = "off"
        size = int(number(extra, "pool_size", DEFAULT_POOL_SIZE))
        self.pool = ConnectionPool(
            postgres_conninfo(url), redact_url(url), self.retry_seconds, size, {"claim": claim_settings}
        )
        self.listener = Listener(self.pool, self.names.channel("work"), self.names.channel("result"))
        self._claims: dict[tuple[int, bool, bool], str] = {}
        self._waits: dict[tuple[int, bool], str] = {}
        self._seen_generation = -1
        self._full_claims = 0

    # -- units of work -----------------------------------------------------------------

    async def run(
        self, work: Callable[[Connection], Awaitable[T]], *, readonly: bool = False, single: bool = False
    ) -> T:
        if not self._schema_ok:
            await self._check_schema()

        async def unit(conn: psycopg.AsyncConnection[Any]) -> T:
            if readonly or single:  # one statement (or reads) needs no BEGIN/COMMIT round trips
                return await work(Session(conn))
            async with conn.transaction():
                return await work(Session(conn))

        return await self.pool.run(unit)

    def statement(self, sql: str) -> str:
        return pyformat(sql)

    async def _check_schema(self) -> None:
        import psycopg

        sql = self.sql["schema_version"]

        async def read(conn: psycopg.AsyncConnection[Any]) -> int | None:
            try:
                row = await (await conn.execute(sql)).fetchone()
            except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
                return None
            return None if row is None else int(row[0])

        self.schema_checked(await self.pool.run(read))

    async def _ensure_schema(self) -> None:
        if not self._schema_ok:
            await self._check_schema()

    async def _rows(self, sql: str, params: Mapping[str, Any], kind: str = "plain") -> list[Any]:
        from psycopg.rows import namedtuple_row

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[Any]:
            cur = conn.cursor(row_factory=namedtuple_row)
            await cur.execute(sql, params)
            return await cur.fetchall() if cur.description else []

        return await self.pool.run(work, "claim" if kind == "claim" else "plain")

    # -- claims ------------------------------------------------------------------------

    @staticmethod
    def _claim_params(
        routing_keys: Sequence[str], priorities: Sequence[JobPriority], all_prios: bool, **values: Any
    ) -> dict[str, Any]:
        params: dict[str, Any] = {k: v for k, v in values.items() if v is not None}
        params.update({f"k{i}": key for i, key in enumerate(routing_keys)})
        if not all_prios:
            params["prios"] = [p.rank for p in priorities]
        return params

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
        all_prios = set(priorities) == set(ALL_PRIORITIES)
        variant = (len(routing_keys), all_prios, job_names is not None)
        query = self._claims.get(variant)
        if query is None:
            query = self._claims[variant] = claim_sql(self.names.jobs, *variant)
        params = self._claim_params(
            routing_keys, priorities, all_prios, limit=limit, lease_until=lease_until, now=now, lease_token=token,
            names=list(job_names) if job_names is not None else None,
        )  # fmt: skip
        rows = await self._rows(query, params, "claim")
        if any(r.seq is None for r in rows):
            return None  # a grouped job is due: claim_grouped
        self._note_claimed(len(rows), limit)
        rows.sort(key=lambda r: (r.key_rank, r.priority, r.position))
        return [ClaimedRow(r.seq, r.data, r.id) for r in rows]

    async def claim_grouped(self, req: GroupClaim) -> Claimed:
        await self._ensure_schema()
        claimed = await self.pool.run(functools.partial(claim_grouped, statements=self.group_sql, req=req), "claim")
        self._note_claimed(len(claimed.rows), req.limit)
        return claimed

    async def grouped_takes(self, routing_keys: Sequence[str], now: float) -> Claimed:
        """Whether a claim of ``routing_keys`` (any priority) would take a job now (``takes``)
        and, if not, when a group held back may start one (``wake_at``); reads only."""
        req = GroupClaim(tuple(routing_keys), tuple(p.rank for p in ALL_PRIORITIES), True, None, 1, now, now, "", True)
        return await self.pool.run(functools.partial(claim_grouped, statements=self.group_sql, req=req), "claim")

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
    ) -> list[ClaimedRow] | None:
        """Claim up to ``limit`` jobs under ``lease_token``; register ``token`` (``slot`` on this
        process's hand-off channel) as a waiter for ``wait`` seconds if none was found and
        ``register``, else drop its registration. The claimed rows in claim order; None (nothing
        claimed, no registration) when a grouped job is due, as for :meth:`claim`."""
        await self._ensure_schema()
        all_prios = set(priorities) == set(ALL_PRIORITIES)
        variant = (len(routing_keys), all_prios)
        query = self._waits.get(variant)
        if query is None:
            query = self._waits[variant] = claim_or_register_sql(self.names.jobs, self.names.waiters, *variant)
        params = self._claim_params(
            routing_keys, priorities, all_prios, limit=limit, lease_until=now + lease, now=now,
            lease_token=lease_token, token=token, channel=self.listener.hand_off_channel, slot=slot,
            wkeys=list(routing_keys), wprios=[p.rank for p in priorities], lease=float(lease), register=register,
            wait=float(wait),
        )  # fmt: skip
        rows = await self._rows(query, params, "claim")
        if any(r.seq is None for r in rows):
            return None  # a grouped job is due: neither claimed nor registered
        rows.sort(key=lambda r: (r.key_rank, r.priority, r.position))
        return [ClaimedRow(r.seq, r.data, r.id) for r in rows]

    async def unregister(self, token: str) -> None:
        """Drop the waiter registration of ``token``, if any."""
        await self._ensure_schema()
        await self._rows(self.pg["unregister"], {"token": token}, "claim")

    async def handed_rows(self, handed: Sequence[tuple[int, str]]) -> dict[int, ClaimedRow]:
        """The rows, by ``seq``, of handed-over ``(seq, lease token)`` jobs still held under that
        token (for jobs too large to travel with their hand-off)."""
        params = {"seqs": [seq for seq, _ in handed], "tokens": [token for _, token in handed]}
        rows = await self._rows(self.pg["handed_rows"], params, "claim")
        return {r.seq: ClaimedRow(r.seq, r.data, r.id) for r in rows}

    async def renew_handed(self, handed: Sequence[tuple[int, str]], until: float) -> None:
        """Extend the leases of handed-over ``(seq, lease token)`` jobs not yet taken by the
        worker they were handed to (only while still held under that token)."""
        params = {"seqs": [seq for seq, _ in handed], "tokens": [token for _, token in handed], "until": until}
        await self._rows(self.pg["renew_handed"], params)

    # -- writes ------------------------------------------------------------------------

    async def renew_leases(self, held: Sequence[tuple[str, str]], until: float) -> set[str]:
        """One statement over arrays of ``(id, lease token)`` (see :meth:`Database.renew_leases`)."""
        await self._ensure_schema()
        params = {"ids": [job_id for job_id, _ in held], "tokens": [token for _, token in held], "until": until}
        return {r.id for r in await self._rows(self.pg["renew_many"], params)}

    async def enqueue_one(self, params: Mapping[str, Any]) -> bool:
        """See :meth:`Database.enqueue_one` (a retry that finds the job stored as given is True)."""
        await self._ensure_schema()
        sql, stored = self.pg["enqueue"], self.pg["stored_data"]
        attempts = 0

        async def work(conn: psycopg.AsyncConnection[Any]) -> bool:
            nonlocal attempts
            attempts += 1
            if await (await conn.execute(sql, params)).fetchone() is not None:
                return True
            return attempts > 1 and stored_as_given(
                await (await conn.execute(stored, {"ids": [params["id"]]})).fetchall(), [params]
            )

        return await self.pool.run(work)

    async def insert_many(self, rows: Sequence[Mapping[str, Any]], now: float) -> bool:
        """See :meth:`Database.insert_many` (a retry that finds the jobs stored as given is True)."""
        import psycopg

        await self._ensure_schema()
        columns = ("id", "name", "state", "routing_key", "priority", "run_at", "data", "group_name")
        arrays = {col: [r[col] for r in rows] for col in columns}
        delete, insert, stored = self.pg["delete_expired_ids"], self.pg["insert_many"], self.pg["stored_data"]
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

        return await self.pool.run(work)

    async def write_batch(self, writes: Sequence[Write]) -> list[bool]:
        """Run the writes of a group commit pipelined in one transaction (one statement alone
        needs none); completions and results written more than once are one statement each."""
        await self._ensure_schema()
        steps = plan(writes, self.pg, self.pg_combined)

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[tuple[list[Any], int]]:
            if len(steps) == 1:  # one statement is atomic alone: no BEGIN/COMMIT
                sql, params, _ = steps[0]
                cur = await conn.execute(sql, params)
                return [(await cur.fetchall() if cur.description else [], cur.rowcount)]
            cursors = []
            async with conn.pipeline() as pipeline:
                async with conn.transaction():
                    for sql, params, _ in steps:
                        cursor = conn.cursor()
                        await cursor.execute(sql, params)
                        cursors.append(cursor)
                await pipeline.sync()
                return [(await c.fetchall() if c.description else [], c.rowcount) for c in cursors]

        outcomes = await self.pool.run(work)
        touched = [False] * len(writes)
        for (_sql, _params, indexes), (rows, count) in zip(steps, outcomes, strict=True):
            if len(indexes) == 1:
                touched[indexes[0]] = bool(rows) or count > 0
            else:
                hit = {row[0] for row in rows}
                for i in indexes:
                    touched[i] = writes[i][1]["id"] in hit
        return touched

    # -- wake-ups ----------------------------------------------------------------------

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
        if not self._closed:
            self._closed = True
            await self.listener.stop()
            await self.pool.close()

"""What the PostgreSQL and SQLite backends share: the engine, named queries, the schema
check, and running a unit of work with reconnects. Dialects subclass :class:`Database`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import sqlalchemy as sa
from bananas.backend import BackendOptions, redact_url
from bananas.errors import BackendUnavailable, SchemaError
from bananas.job import JobPriority, JobResult, dumps, loads
from bananas.logsafe import printable
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from bananas_sql.batch import GroupCommit, Write, statements
from bananas_sql.queries import compile_all, raw_all
from bananas_sql.tables import SCHEMA_VERSION, Names

log = logging.getLogger("bananas.sql")
T = TypeVar("T")


def one_line(exc: BaseException, limit: int = 500) -> str:
    """``exc`` as one bounded log line: libpq's multi-line messages (a line per host tried)
    joined with spaces, other control characters escaped."""
    return printable(" ".join(str(exc).split()) or type(exc).__name__, limit)


DEFAULT_RETRY_SECONDS = 15.0
"""How long an operation keeps retrying while the database is unreachable."""


def upgrade_command(url: str, extra: Mapping[str, Any]) -> str:
    """The command that creates or upgrades the schema of ``url``'s namespace (options given
    as keyword arguments are added to the URL's query string, where the command reads them)."""
    query = dict(parse_qsl(urlsplit(url).query))
    missing = {k: str(extra[k]) for k in ("namespace", "table_prefix", "schema") if extra.get(k) and k not in query}
    if missing:
        url += ("&" if "?" in url else "?") + urlencode(missing)
    return f"bananas db upgrade --url '{redact_url(url)}'"


class Database:
    """One namespace in one database: engine, queries, reconnecting transactions.

    Subclasses set :attr:`dialect`, :attr:`fragments` and implement :meth:`claim_rows`,
    :meth:`wait_for_work` and :meth:`wait_for_result`.
    """

    dialect = ""
    fragments: Mapping[str, str] = {}

    def __init__(self, url: str, engine: AsyncEngine, options: BackendOptions) -> None:
        self.url = url
        self.engine = engine
        self.options = options
        self.clock = options.clock
        self.names = Names.from_extra(options.extra)
        self.q = compile_all(self.names.as_mapping(), self.fragments)
        self.sql = raw_all(self.names.as_mapping(), self.fragments)
        self.writes = GroupCommit(self.write_batch)
        self.retry_seconds = float(options.extra.get("retry_seconds", DEFAULT_RETRY_SECONDS))
        self._schema_ok = False
        self._closed = False
        self._failing_since: float | None = None
        """When the current outage began (logged once, and once when it ends)."""

    # -- transactions ------------------------------------------------------------------

    async def run(
        self, work: Callable[[AsyncConnection], Awaitable[T]], *, readonly: bool = False, single: bool = False
    ) -> T:
        """Run ``work`` in one transaction, retrying with backoff while the connection is lost.

        ``work`` must be safe to run again (every caller here is); ``readonly`` work may skip
        taking a write lock (SQLite); ``single`` work is one statement, atomic by itself, so it
        may run without BEGIN/COMMIT round trips (PostgreSQL). Raises
        :class:`BackendUnavailable` when the database stays unreachable for ``retry_seconds``.
        """
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.05
        while True:
            try:
                if not self._schema_ok:
                    await self._check_schema()
                async with self.engine.connect() as conn:
                    options = self.execution_options(readonly=readonly, single=single)
                    if options:
                        await conn.execution_options(**options)
                    async with conn.begin():
                        result = await work(conn)
                if self._failing_since is not None:
                    self._recovered()
                return result
            except (OperationalError, InterfaceError) as exc:
                if self._closed or time.monotonic() + delay > deadline:
                    raise self._unavailable(exc) from exc
                self._failing(exc)
            except DBAPIError as exc:
                if not exc.connection_invalidated:  # e.g. a read-only server (see the dialect)
                    raise
                if time.monotonic() + delay > deadline:
                    raise self._unavailable(exc) from exc
                self._failing(exc)
            except OSError as exc:
                if time.monotonic() + delay > deadline:
                    raise self._unavailable(exc) from exc
                self._failing(exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _unavailable(self, exc: BaseException) -> BackendUnavailable:
        error = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        where = redact_url(self.url)
        return BackendUnavailable(f"{self.dialect} database at {where} is unavailable: {one_line(error)}")

    def _failing(self, exc: BaseException) -> None:
        """Log the first failure of an outage: one line naming the (redacted) URL and the error."""
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            error = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
            log.warning(
                "%s database at %s failed: %s; retrying on a fresh connection for up to %gs",
                self.dialect, redact_url(self.url), one_line(error), self.retry_seconds,
            )  # fmt: skip

    def _recovered(self) -> None:
        since, self._failing_since = self._failing_since, None
        if since is not None:
            log.info("%s database at %s: connected again after %.1fs", self.dialect, redact_url(self.url),
                     time.monotonic() - since)  # fmt: skip

    async def _check_schema(self) -> None:
        cmd = upgrade_command(self.url, self.options.extra)
        where = f"table prefix {self.names.prefix!r}"
        if self.names.schema:
            where += f" in schema {self.names.schema!r}"
        async with self.engine.connect() as conn:
            try:
                version = (await conn.execute(self.q["schema_version"])).scalar()
            except (OperationalError, InterfaceError) as exc:
                if not self._missing_table(exc):
                    raise
                version = None
            except sa.exc.ProgrammingError:
                version = None
            await conn.rollback()
        if version is None:
            raise SchemaError(
                f"the Bananas tables ({where}) do not exist in {redact_url(self.url)}; create them with: {cmd}"
            )
        if version < SCHEMA_VERSION:
            raise SchemaError(
                f"the Bananas tables ({where}) are at schema version {version} but this bananas-sql needs "
                f"{SCHEMA_VERSION}; upgrade them with: {cmd}"
            )
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"the Bananas tables ({where}) are at schema version {version}, newer than this bananas-sql "
                f"understands ({SCHEMA_VERSION}); upgrade the bananas-sql package"
            )
        self._schema_ok = True

    @staticmethod
    def _missing_table(exc: DBAPIError) -> bool:
        return "no such table" in str(exc.orig)

    # -- hot paths (dialects may run them closer to the driver) -------------------------

    async def write_batch(self, writes: Sequence[Write]) -> list[bool]:
        """Run named one-row writes in one transaction (see :class:`GroupCommit`); for each,
        whether it returned or touched a row."""

        async def work(conn: AsyncConnection) -> list[bool]:
            touched = []
            for name, params in writes:
                first = None
                for part in statements(name):  # a chain stops at the first statement that touched nothing
                    result = await conn.execute(self.q[part], params)
                    hit = result.first() is not None if result.returns_rows else result.rowcount > 0
                    first = hit if first is None else first
                    if not hit:
                        break
                touched.append(bool(first))
            return touched

        return await self.run(work, single=len(writes) == 1)

    def result_params(self, result: JobResult) -> dict[str, Any]:
        """The ``store_result`` parameters of ``result`` (wire-format hash, TTL by outcome)."""
        ttl = self.options.result_success_ttl if result.is_success() else self.options.result_failure_ttl
        return {"id": result.job_id, "data": dumps(result.to_hash()), "expires_at": self.clock() + ttl}

    async def _ensure_schema(self) -> None:
        if not self._schema_ok:
            await self.run(_nothing, readonly=True)  # checks the schema, with the usual retries

    async def enqueue_one(self, params: Mapping[str, Any]) -> bool:
        """Insert one job (the ``enqueue`` statement); False if its id exists and has not expired.

        A retry after a failure whose outcome is unknown (the connection lost during the
        commit) that finds the id taken is True only if the stored job is this submission
        (see :func:`same_submission`): the first try committed. Another job under that id is
        False, as without a retry.
        """
        attempts = 0

        async def work(conn: AsyncConnection) -> bool:
            nonlocal attempts
            attempts += 1
            if (await conn.execute(self.q["enqueue"], params)).first() is not None:
                return True
            return attempts > 1 and stored_as_given(
                (await conn.execute(self.q["stored_data"], {"ids": [params["id"]]})).all(), [params]
            )

        return await self.run(work, single=True)

    async def insert_many(self, rows: Sequence[Mapping[str, Any]], now: float) -> bool:
        """Insert jobs (``job_params`` rows, distinct ids) in one transaction, in order, after
        removing expired rows with their ids; False, with nothing written, if an id exists.

        A retry after an unknown outcome that finds the ids taken is True if every stored job
        is the one submitted (the first try committed them all, as one transaction)."""
        ids = [r["id"] for r in rows]
        attempts = 0

        async def work(conn: AsyncConnection) -> None:
            nonlocal attempts
            attempts += 1
            await conn.execute(self.q["delete_expired_ids"], {"ids": ids, "now": now})
            await conn.execute(self.q["insert"], rows)  # an IntegrityError rolls the whole unit back

        async def check(conn: AsyncConnection) -> bool:
            return stored_as_given((await conn.execute(self.q["stored_data"], {"ids": ids})).all(), rows)

        try:
            await self.run(work)
        except sa.exc.IntegrityError:
            return attempts > 1 and await self.run(check, readonly=True)
        return True

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
        """Claim (see :meth:`claim_rows`) in a unit of its own; ``(seq, data, id)`` in claim order."""

        async def work(conn: AsyncConnection) -> list[tuple[int, str, str]]:
            rows = await self.claim_rows(
                conn,
                routing_keys,
                priorities,
                limit=limit,
                lease_until=lease_until,
                job_names=job_names,
                now=now,
                token=token,
            )
            return [(row.seq, row.data, row.id) for row in rows]

        return await self.run(work, single=True)

    async def renew_leases(self, held: Sequence[tuple[str, str]], until: float) -> set[str]:
        """Extend to ``until`` the leases of the ``(id, lease token)`` rows still processing under
        that token, in one transaction; the ids extended."""

        async def work(conn: AsyncConnection) -> set[str]:
            renewed = set()
            for job_id, token in held:
                if (await conn.execute(self.q["renew"], {"id": job_id, "token": token, "until": until})).first():
                    renewed.add(job_id)
            return renewed

        return await self.run(work, single=len(held) == 1)

    # -- dialect hooks -----------------------------------------------------------------

    def execution_options(self, *, readonly: bool, single: bool) -> dict[str, Any]:
        """Connection execution options for one unit of work."""
        return {"bananas_readonly": True} if readonly else {}

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
        """Mark up to ``limit`` claimable rows processing under lease ``token``; return ``(seq, state,
        data, error, name, id, key_rank, priority, position)`` rows in claim order."""
        raise NotImplementedError

    async def wait_for_work(self, routing_keys: Sequence[str], timeout: float) -> None:
        """Return when work may be ready for ``routing_keys`` or after ``timeout`` seconds."""
        raise NotImplementedError

    async def wait_for_result(self, job_id: str, timeout: float, check: Callable[[], Awaitable[bool]]) -> bool:
        """Wait until ``check()`` is true (re-checked on every wake-up) or ``timeout`` passes."""
        raise NotImplementedError

    def note_claim(self) -> None:
        """Called before each claim (lets push wake-ups avoid a lost-wake-up race)."""

    async def close(self) -> None:
        """Dispose of the engine. Idempotent."""
        if not self._closed:
            self._closed = True
            await self.engine.dispose()


_CHANGED_AFTER_SUBMIT = frozenset({"status", "updated_at", "scheduled_for", "attempts", "error"})
"""Wire-format fields that claims, retries and outcomes rewrite; the rest of a job is as submitted."""


def same_submission(stored: str, submitted: str) -> bool:
    """Whether the stored job record ``stored`` is the submission ``submitted`` (both wire-format
    JSON): equal in every field but those a worker rewrites (status, times of update and
    schedule, attempts, error), so also after the job ran. Unreadable records are not."""
    try:
        a, b = loads(stored), loads(submitted)
    except Exception:  # deliberately broad: stored data is hostile
        return False
    if not isinstance(a, dict) or not isinstance(b, dict):
        return False
    return {k: v for k, v in a.items() if k not in _CHANGED_AFTER_SUBMIT} == {
        k: v for k, v in b.items() if k not in _CHANGED_AFTER_SUBMIT
    }


def stored_as_given(found: Sequence[Sequence[Any]], submitted: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the ``(id, data)`` rows ``found`` hold every ``job_params`` row of ``submitted``
    as submitted (see :func:`same_submission`)."""
    stored = {row[0]: row[1] for row in found}
    return all(r["id"] in stored and same_submission(stored[r["id"]], r["data"]) for r in submitted)


async def _nothing(_conn: AsyncConnection) -> None:
    return None

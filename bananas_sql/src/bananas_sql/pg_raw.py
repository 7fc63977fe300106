"""The hot paths of the PostgreSQL backend on psycopg directly.

SQLAlchemy's per-statement work (checkout, execution context, result wrapping, the greenlet
hop) costs more CPU than the statement itself. Here the hot statements run on a small pool of
plain psycopg connections, as prepared statements (psycopg prepares a query after its
fifth use on a connection), and a batch of writes is pipelined: BEGIN, every write and
COMMIT leave in one round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from bananas.errors import BackendUnavailable

from bananas_sql.database import one_line

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")
log = logging.getLogger("bananas.sql.postgres")

_PARAM = re.compile(r"(?<![:\w]):(\w+)")


def pyformat(sql: str) -> str:
    """``:name`` parameters (our templates) as psycopg's ``%(name)s``."""
    return _PARAM.sub(r"%(\1)s", sql.replace("%", "%%"))


def read_only(exc: BaseException) -> bool:
    """Whether ``exc`` says the server is read-only (SQLSTATE 25006: a standby, e.g. a former
    primary restarted after a switch, or a session forced read-only): reconnect elsewhere."""
    return getattr(exc, "sqlstate", None) == "25006"


class RawPg:
    """Up to ``size`` psycopg connections, reconnecting and retrying while the server is away.

    ``options`` are server settings for every connection of this pool (e.g. asynchronous
    commit for claims, see :class:`~bananas_sql.postgres.PostgresDatabase`). A lost
    connection, or one to a server that turned read-only (a switch of primaries), is closed
    together with every other connection of the pool made before it (they lead to the same
    server); the work runs again on a fresh connection, which libpq opens to the host the URL
    selects now (``target_session_attrs=read-write`` with several hosts).
    """

    def __init__(
        self, conninfo: str, describe: str, retry_seconds: float, size: int, options: Mapping[str, str] | None = None
    ) -> None:
        self.conninfo = conninfo
        self.describe = describe
        self.retry_seconds = retry_seconds
        self.options = " ".join(f"-c {k}={v}" for k, v in (options or {}).items())
        self._idle: list[tuple[psycopg.AsyncConnection[Any], int]] = []
        self._slots = asyncio.Semaphore(size)
        self._closed = False
        self._generation = 0
        """Bumped when a connection is found lost: connections opened before are not reused."""
        self._failing_since: float | None = None
        """When the current outage began (logged once, and once when it ends)."""

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        import psycopg

        async with self._slots:
            conn, generation = self._idle.pop() if self._idle else (None, self._generation)
            if conn is None or conn.closed:
                kwargs: dict[str, Any] = {"autocommit": True}
                if self.options:
                    kwargs["options"] = self.options
                generation = self._generation
                conn = await psycopg.AsyncConnection.connect(self.conninfo, **kwargs)
            try:
                yield conn
            except BaseException as exc:
                if conn.broken or conn.closed or read_only(exc):
                    self._discard_older(generation)
                await conn.close()  # state unknown (mid-transaction, or the link is gone)
                raise
            if self._closed or generation < self._generation:
                await conn.close()
            else:
                self._idle.append((conn, generation))

    def _discard_older(self, generation: int) -> None:
        """Close the idle connections opened up to ``generation`` (their server is gone or
        read-only), and have busy ones closed when returned."""
        if generation < self._generation:
            return  # already done for this outage
        self._generation += 1
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            with contextlib.suppress(Exception):
                conn.pgconn.finish()  # no round trip: the server may be unreachable

    async def run(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        """``work(connection)`` (autocommit; open a transaction inside if needed), run again on a
        fresh connection while the server is unreachable or read-only, up to ``retry_seconds``;
        then :class:`BackendUnavailable`. ``work`` must be safe to run again after a failure
        whose outcome is unknown (a connection lost during COMMIT)."""
        import psycopg

        retryable = (psycopg.OperationalError, psycopg.InterfaceError, psycopg.errors.ReadOnlySqlTransaction, OSError)
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.05
        while True:
            try:
                async with self._connection() as conn:
                    result = await work(conn)
                if self._failing_since is not None:
                    self._recovered()
                return result
            except retryable as exc:
                if self._closed or time.monotonic() + delay > deadline:
                    raise self._unavailable(exc) from exc
                self._failing(exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _unavailable(self, exc: BaseException) -> BackendUnavailable:
        what = "is read-only" if read_only(exc) else "is unavailable"
        return BackendUnavailable(f"postgresql database at {self.describe} {what}: {one_line(exc)}")

    def _failing(self, exc: BaseException) -> None:
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            what = "is read-only (a standby?)" if read_only(exc) else "failed"
            log.warning(
                "postgresql at %s %s: %s; retrying on a fresh connection for up to %gs",
                self.describe, what, one_line(exc), self.retry_seconds,
            )  # fmt: skip

    def _recovered(self) -> None:
        assert self._failing_since is not None
        log.info("postgresql at %s: connected again after %.1fs", self.describe, time.monotonic() - self._failing_since)
        self._failing_since = None

    async def statements(self, steps: Sequence[tuple[str, Mapping[str, Any]]]) -> list[tuple[list[Any], int]]:
        """Statements in one transaction, pipelined; for each, the rows it returned and its row count."""

        async def work(conn: psycopg.AsyncConnection[Any]) -> list[tuple[list[Any], int]]:
            if len(steps) == 1:  # one statement is atomic alone: no BEGIN/COMMIT
                sql, params = steps[0]
                cur = await conn.execute(sql, params)
                return [(await cur.fetchall() if cur.description else [], cur.rowcount)]
            cursors = []
            async with conn.pipeline() as pipeline:
                async with conn.transaction():
                    for sql, params in steps:
                        cursor = conn.cursor()
                        await cursor.execute(sql, params)
                        cursors.append(cursor)
                await pipeline.sync()
                return [(await c.fetchall() if c.description else [], c.rowcount) for c in cursors]

        return await self.run(work)

    async def close(self) -> None:
        """Close idle connections; busy ones close when returned. Idempotent."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            with contextlib.suppress(Exception):
                await conn.close()

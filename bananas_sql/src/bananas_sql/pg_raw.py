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
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from bananas.errors import BackendUnavailable

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")

_PARAM = re.compile(r"(?<![:\w]):(\w+)")


def pyformat(sql: str) -> str:
    """``:name`` parameters (our templates) as psycopg's ``%(name)s``."""
    return _PARAM.sub(r"%(\1)s", sql.replace("%", "%%"))


class RawPg:
    """Up to ``size`` psycopg connections, reconnecting and retrying while the server is away.

    ``options`` are server settings for every connection of this pool (e.g. asynchronous
    commit for claims, see :class:`~bananas_sql.postgres.PostgresDatabase`).
    """

    def __init__(
        self, conninfo: str, describe: str, retry_seconds: float, size: int, options: Mapping[str, str] | None = None
    ) -> None:
        self.conninfo = conninfo
        self.describe = describe
        self.retry_seconds = retry_seconds
        self.options = " ".join(f"-c {k}={v}" for k, v in (options or {}).items())
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots = asyncio.Semaphore(size)
        self._closed = False

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        import psycopg

        async with self._slots:
            conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed:
                kwargs: dict[str, Any] = {"autocommit": True}
                if self.options:
                    kwargs["options"] = self.options
                conn = await psycopg.AsyncConnection.connect(self.conninfo, **kwargs)
            try:
                yield conn
            except BaseException:
                await conn.close()  # state unknown (mid-transaction, or the link is gone)
                raise
            if self._closed:
                await conn.close()
            else:
                self._idle.append(conn)

    async def run(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]]) -> T:
        """``work(connection)`` (autocommit; open a transaction inside if needed), run again on a
        fresh connection while the server is unreachable, up to ``retry_seconds``."""
        import psycopg

        deadline = time.monotonic() + self.retry_seconds
        delay = 0.05
        while True:
            try:
                async with self._connection() as conn:
                    return await work(conn)
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
                if self._closed or time.monotonic() + delay > deadline:
                    raise BackendUnavailable(f"postgresql database at {self.describe} is unavailable: {exc}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

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
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.close()

"""Every connection one PostgreSQL backend opens, within one budget: ``pool_size``.

One pool serves three kinds of connection: ``plain`` ones (autocommit; every statement but
claims), ``claim`` ones (server settings of their own, see
:class:`~bananas_sql.pg.database.PostgresDatabase`) and the ``listen`` connection of the
:class:`~bananas_sql.pg.listener.Listener`. Idle connections of every kind and the busy
ones together never exceed ``size``: a caller that finds none idle of its kind opens one
if the budget allows, else closes an idle one of another kind to make room, else waits for
one to come back.

This is our own pool rather than ``psycopg_pool``'s, for what a switch of primaries needs:
psycopg_pool opens connections in background tasks and retries a failed connect after 1 s,
then 2 s, 4 s... (a class constant), while the caller only sees ``PoolTimeout``. Here a
caller opens its connection itself: the libpq error reaches it (and the one log line per
outage), the work is retried with a 50 ms backoff up to ``retry_seconds``, and a switch
costs about 0.2 s, not a second or more (``tests/sql/test_pg_failover.py``). And
psycopg_pool fixes a connection's settings per pool: the claim connections would have to
be a second pool with a fixed share of the budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from bananas.errors import BackendUnavailable, ConfigError

from bananas_sql.database import one_line

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")
log = logging.getLogger("bananas.sql.postgres")

Kind = Literal["plain", "claim", "listen"]

MIN_POOL_SIZE = 2
"""One connection for the listener, at least one for the work."""


def read_only(exc: BaseException) -> bool:
    """Whether ``exc`` says the server is read-only (SQLSTATE 25006: a standby, e.g. a former
    primary restarted after a switch, or a session forced read-only): reconnect elsewhere."""
    return getattr(exc, "sqlstate", None) == "25006"


class ConnectionPool:
    """Up to ``size`` psycopg connections in all, reconnecting and retrying while the server is away.

    ``settings`` are server settings per kind of connection (``SET`` once a connection is
    opened, or taken over from another kind).
    A lost connection, or one to a server that turned read-only (a switch of primaries), is
    closed together with every other connection made before it (they lead to the same
    server); the work runs again on a fresh connection, which libpq opens to the host the URL
    selects now (``target_session_attrs=read-write`` with several hosts).
    """

    def __init__(
        self,
        conninfo: str,
        describe: str,
        retry_seconds: float,
        size: int,
        settings: Mapping[Kind, Mapping[str, str]] | None = None,
    ) -> None:
        if size < MIN_POOL_SIZE:
            raise ConfigError(
                f"pool_size must be at least {MIN_POOL_SIZE} (one listening connection and one for the work), "
                f"got {size}"
            )
        self.conninfo = conninfo
        self.describe = describe
        self.retry_seconds = retry_seconds
        self.size = size
        given = settings or {}
        self._settings = {
            kind: "; ".join(f"SET {k} = {v}" for k, v in values.items()) for kind, values in given.items()
        }
        self._reset = "; ".join(sorted({f"RESET {k}" for values in given.values() for k in values}))
        self._idle: dict[Kind, list[tuple[psycopg.AsyncConnection[Any], int]]] = {
            k: [] for k in ("plain", "claim", "listen")
        }
        self._open = 0
        """Connections open now, idle or busy, of every kind: never more than ``size``."""
        self.peak = 0
        """The most connections open at once so far."""
        self._returned: asyncio.Condition | None = None
        self._closed = False
        self._generation = 0
        """Bumped when a connection is found lost: connections opened before are not reused."""
        self._failing_since: float | None = None
        """When the current outage began (logged once, and once when it ends)."""

    @property
    def open_connections(self) -> int:
        """How many connections this pool has open now (idle, busy and listening)."""
        return self._open

    def _condition(self) -> asyncio.Condition:
        if self._returned is None:
            self._returned = asyncio.Condition()
        return self._returned

    async def _checkout(self, kind: Kind) -> tuple[psycopg.AsyncConnection[Any], int]:
        returned = self._condition()
        async with returned:
            while True:
                idle = self._idle[kind]
                while idle:
                    conn, generation = idle.pop()
                    if not conn.closed:
                        return conn, generation
                    self._open -= 1
                if self._open < self.size:
                    self._open += 1
                    self.peak = max(self.peak, self._open)
                    break
                other = next((k for k, v in self._idle.items() if v), None)
                if other is not None:  # the budget is spent: an idle one of another kind changes kind
                    conn, generation = self._idle[other].pop(0)
                    return await self._adopt(conn, generation, other, kind)
                await returned.wait()
        return await self._connect(kind)

    async def _connect(self, kind: Kind) -> tuple[psycopg.AsyncConnection[Any], int]:
        """Open a connection of ``kind`` (counted already)."""
        import psycopg

        generation = self._generation
        try:
            conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
            if self._settings.get(kind):
                await conn.execute(self._settings[kind])
        except BaseException:
            await self._forget()
            raise
        return conn, generation

    async def _adopt(
        self, conn: psycopg.AsyncConnection[Any], generation: int, was: Kind, kind: Kind
    ) -> tuple[psycopg.AsyncConnection[Any], int]:
        """An idle connection of kind ``was`` made one of ``kind`` (its settings changed: no
        connection is closed and opened to stay within the budget)."""
        try:
            if self._settings.get(was):
                await conn.execute(self._reset)
            if self._settings.get(kind):
                await conn.execute(self._settings[kind])
        except BaseException:
            await conn.close()
            await self._forget()
            raise
        return conn, generation

    async def _forget(self) -> None:
        """One connection fewer open (closed, or never opened): a waiter may open one."""
        returned = self._condition()
        async with returned:
            self._open -= 1
            returned.notify()

    async def _checkin(self, kind: Kind, conn: psycopg.AsyncConnection[Any], generation: int) -> None:
        if self._closed or generation < self._generation or conn.closed:
            await conn.close()
            await self._forget()
            return
        returned = self._condition()
        async with returned:
            self._idle[kind].append((conn, generation))
            returned.notify()

    @contextlib.asynccontextmanager
    async def connection(self, kind: Kind = "plain") -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A connection of ``kind`` for the block, within the budget (waits while it is spent).
        A block that raises closes its connection (its state is unknown), and a lost or
        read-only one also every connection opened before it."""
        conn, generation = await self._checkout(kind)
        try:
            yield conn
        except BaseException as exc:
            if conn.broken or conn.closed or read_only(exc):
                await self._discard_older(generation)
            await conn.close()  # state unknown (mid-transaction, or the link is gone)
            await self._forget()
            raise
        await self._checkin(kind, conn, generation)

    async def _discard_older(self, generation: int) -> None:
        """Close the idle connections opened up to ``generation`` (their server is gone or
        read-only), and have busy ones closed when returned."""
        if generation < self._generation:
            return  # already done for this outage
        self._generation += 1
        returned = self._condition()
        async with returned:
            for idle in self._idle.values():
                for conn, _ in idle:
                    self._finish(conn)
                self._open -= len(idle)
                idle.clear()
            returned.notify_all()

    @staticmethod
    def _finish(conn: psycopg.AsyncConnection[Any]) -> None:
        with contextlib.suppress(Exception):
            conn.pgconn.finish()  # no round trip: the server may be unreachable

    async def run(self, work: Callable[[psycopg.AsyncConnection[Any]], Awaitable[T]], kind: Kind = "plain") -> T:
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
                async with self.connection(kind) as conn:
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

    async def close(self) -> None:
        """Close idle connections; busy ones close when returned. Idempotent."""
        self._closed = True
        for idle in self._idle.values():
            for conn, _ in idle:
                with contextlib.suppress(Exception):
                    await conn.close()
            self._open -= len(idle)
            idle.clear()

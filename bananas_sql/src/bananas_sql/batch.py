"""Group commit: concurrent one-row writes (completions, failures, results) share one transaction.

A write waits only while an earlier transaction is in flight; whatever queued meanwhile is
committed together in the next one. An idle store sees each write alone, at once, so this
adds no latency; a busy one pays one commit (one fsync on PostgreSQL) per batch, not per write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

log = logging.getLogger("bananas.sql")

Write = tuple[str, Mapping[str, Any]]
"""A named statement (see :mod:`bananas_sql.queries`) and its parameters."""

Flush = Callable[[Sequence[Write]], Awaitable[list[bool]]]
"""Runs writes in one transaction; for each, whether it touched (or returned) a row."""

MAX_BATCH = 256

CHAINS: Mapping[str, tuple[str, ...]] = {
    # A success and its result: the result is written only if the completion applied.
    "complete_and_store": ("complete", "store_completed_result"),
}
"""Writes made of several named statements, run in order in the write's transaction: each
runs only if the one before it touched a row; the write's outcome is the first one's.
(PostgreSQL runs each as one statement instead, see :mod:`bananas_sql.queries.postgres`.)"""


def statements(name: str) -> tuple[str, ...]:
    """The named statements that make up write ``name`` (itself, unless it is a chain)."""
    return CHAINS.get(name, (name,))


class GroupCommit:
    """Coalesces concurrent :meth:`submit` calls into transactions run by ``flush``.

    A batch that fails is retried one write at a time, so each caller gets its own outcome
    (one bad write never fails its neighbours). Writes are committed in submission order.
    """

    def __init__(self, flush: Flush) -> None:
        self._flush = flush
        self._pending: list[tuple[Write, asyncio.Future[bool]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, name: str, params: Mapping[str, Any]) -> bool:
        """Commit ``name`` with ``params`` (with whatever else is waiting); whether a row was touched."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append(((name, params), future))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="bananas-sql-group-commit")
        # The write goes on if the caller is cancelled: it may already be committed.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                await self._run(batch)
        finally:
            self._task = None

    async def _run(self, batch: list[tuple[Write, asyncio.Future[bool]]]) -> None:
        try:
            results = await self._flush([write for write, _ in batch])
        except asyncio.CancelledError:
            for _, future in [*batch, *self._pending]:
                future.cancel()
            self._pending = []
            raise
        except Exception as exc:
            if len(batch) > 1:
                log.warning("a batch of %d writes failed (%s); writing them one by one", len(batch), exc)
                for one in batch:  # find out whose write failed
                    await self._run([one])
                return
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

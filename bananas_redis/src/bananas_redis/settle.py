"""Settling claimed jobs in batches: every settle asked for in the same moment goes out as
one ``finish_many.lua`` call (one round trip, one command) instead of one call each.

A settle waits for no timer: the first request of a batch schedules a flush on the event
loop's next turn, so a lone job is sent at once; requests that arrive while a flush is on
the wire join the next one. Each request still gets its own reply code (finish.lua's 1 / 2
/ 0), and finish_many.lua is as safe to repeat as finish.lua, so a batch is retried whole
through :meth:`Connection.run` on connection loss.

On Redis Cluster a batch's keys may hash to different slots, so there every settle is its
own finish.lua call (the requests of a batch are still sent concurrently).

With ``wait_replicas`` a settle is replicated before its caller moves on: the script, a marker
write and ``WAIT`` go out on one connection, and a short count is retried (on the master of
the moment) until the replicas hold the settle. Otherwise a failover could undo a completion
the worker had been told about, and the job would run again when its lease runs out.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bananas_redis.connection import Connection

__all__ = ["MAX_BATCH", "Settle", "Settler"]

MAX_BATCH = 200
"""Jobs per finish_many call at most (keeps one script call short for the server)."""

Settle = tuple[list[str], list[Any]]
"""finish.lua's KEYS and ARGV for one job (see queue.RedisQueue._finish_call)."""


class Settler:
    """Collects finish.lua calls and sends them in batches; see the module docs."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._pending: list[tuple[Settle, asyncio.Future[int]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def settle(self, keys: list[str], args: list[Any]) -> int:
        """finish.lua's reply code for this settle, sent along with the others of the moment."""
        if self.conn.is_cluster:
            return int(await self._call("finish", keys, args, f"{args[2]} {args[0]}"))
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append(((keys, args), future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="bananas-redis-settle")
        return await asyncio.shield(future)  # a cancelled caller does not cancel the batch

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                codes = await self._send([settle for settle, _ in batch])
            except asyncio.CancelledError:
                for _, future in batch + self._pending:
                    future.cancel()
                self._pending = []
                raise
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), code in zip(batch, codes, strict=True):
                if not future.done():
                    future.set_result(int(code))

    async def _send(self, batch: list[Settle]) -> list[Any]:
        if len(batch) == 1:
            keys, args = batch[0]
            return [await self._call("finish", keys, args, f"{args[2]} {args[0]}")]
        return list(await self._call("finish_many", *_combine(batch), f"settle {len(batch)} jobs"))

    async def _call(self, name: str, keys: list[str], args: list[Any], what: str) -> Any:
        """The script through the retry policy; with ``wait_replicas``, until the replicas hold it."""
        if self.conn.wait_replicas:
            return await self.conn.run_replicated(name, keys, args, what)
        return await self.conn.call(name, keys, args, what)


def _combine(batch: list[Settle]) -> tuple[list[str], list[Any]]:
    """finish_many.lua's KEYS and ARGV for a batch of finish.lua calls."""
    first_keys = batch[0][0]
    keys: list[str] = [first_keys[0], first_keys[1], first_keys[4]]  # processing, leases, dead-errors
    args: list[Any] = []
    for k, a in batch:
        job_key, target = k[2], k[3]
        result_key = k[5] if len(k) > 5 else job_key
        keys += [job_key, target, result_key]
        fields = a[8:] if len(a) > 6 else []
        ttl, channel = (a[6], a[7]) if len(a) > 6 else (0, "")
        args += [*a[:6], ttl, channel, len(fields), *fields]
    return keys, args

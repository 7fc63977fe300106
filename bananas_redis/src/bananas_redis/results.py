"""Results on Redis: the ``{ns}:result:{id}`` hash, its TTL, and the notify channel."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from bananas.errors import Timeout
from bananas.job import JobResult

from bananas_redis.connection import RETRYABLE, Connection

__all__ = ["RedisResults"]

RECHECK_SECONDS = 1.0
"""A waiter re-reads the hash this often too, in case a notification was lost with a connection."""


class RedisResults:
    """:class:`bananas.protocols.ResultBackend` on Redis."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.k = conn.keys

    async def store(self, result: JobResult) -> None:
        opts = self.conn.options
        ttl = opts.result_success_ttl if result.is_success() else opts.result_failure_ttl
        args: list[Any] = [max(1, int(ttl * 1000)), self.k.result_notify(result.job_id)]
        for field, value in result.to_hash().items():
            args += [field, value]
        await self.conn.call("store_result", [self.k.result(result.job_id)], args, "store result")

    async def get(self, job_id: str) -> JobResult | None:
        fields = await self.conn.run(lambda: self.conn.client.hgetall(self.k.result(job_id)), "get result")
        if not fields:
            return None
        return JobResult.from_hash(job_id, fields)

    async def wait(self, job_id: str, timeout: float) -> JobResult:
        found = await self.get(job_id)
        if found is not None:
            return found
        loop = asyncio.get_running_loop()
        end = loop.time() + max(timeout, 0.0)
        pubsub: Any = None
        try:
            with contextlib.suppress(*RETRYABLE):
                pubsub = self.conn.client.pubsub()
                await pubsub.subscribe(self.k.result_notify(job_id))
            while True:
                found = await self.get(job_id)  # after subscribing: nothing stored in between is missed
                if found is not None:
                    return found
                left = end - loop.time()
                if left <= 0:
                    raise Timeout(f"no result for job {job_id!r} within {timeout:g}s")
                step = min(left, RECHECK_SECONDS)
                try:
                    if pubsub is None:
                        raise ConnectionError("no subscription")
                    await pubsub.get_message(ignore_subscribe_messages=True, timeout=step)
                except (*RETRYABLE, ConnectionError):
                    await asyncio.sleep(min(step, 0.2))
        finally:
            if pubsub is not None:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def delete(self, job_id: str) -> None:
        await self.conn.run(lambda: self.conn.client.delete(self.k.result(job_id)), "delete result")

    async def close(self) -> None:
        await self.conn.close()

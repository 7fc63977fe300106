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
        self._notifications = _Notifications(conn)

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
        channel = self.k.result_notify(job_id)
        woken = asyncio.Event()
        await self._notifications.add(channel, woken)
        try:
            while True:
                woken.clear()
                found = await self.get(job_id)  # after subscribing: nothing stored in between is missed
                if found is not None:
                    return found
                left = end - loop.time()
                if left <= 0:
                    raise Timeout(f"no result for job {job_id!r} within {timeout:g}s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), min(left, RECHECK_SECONDS))
        finally:
            await self._notifications.remove(channel, woken)

    async def delete(self, job_id: str) -> None:
        await self.conn.run(lambda: self.conn.client.delete(self.k.result(job_id)), "delete result")

    async def close(self) -> None:
        await self._notifications.close()
        await self.conn.close()


class _Notifications:
    """One pub/sub connection shared by every waiter of a :class:`RedisResults`.

    A reader task sets the waiters' events when their channel gets a message, and all of
    them when the connection fails (they re-read the hash, which is the truth either way).
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.events: dict[str, set[asyncio.Event]] = {}
        self.pubsub: Any = None
        self.reader: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()

    async def add(self, channel: str, event: asyncio.Event) -> None:
        self.events.setdefault(channel, set()).add(event)
        try:
            async with self.lock:
                if self.pubsub is None:
                    self.pubsub = self.conn.client.pubsub()
                await self.pubsub.subscribe(channel)
                if self.reader is None or self.reader.done():
                    self.reader = asyncio.create_task(self._read())
        except RETRYABLE:
            await self._reset()  # the waiter still re-reads the hash every RECHECK_SECONDS

    async def remove(self, channel: str, event: asyncio.Event) -> None:
        waiters = self.events.get(channel)
        if waiters is None:
            return
        waiters.discard(event)
        if not waiters:
            del self.events[channel]
            if self.pubsub is not None:
                with contextlib.suppress(Exception):
                    await self.pubsub.unsubscribe(channel)

    async def _read(self) -> None:
        while True:
            try:
                async with self.lock:
                    if self.pubsub is None:  # lost: listen again for every current waiter
                        if not self.events:
                            return
                        self.pubsub = self.conn.client.pubsub()
                        await self.pubsub.subscribe(*self.events)
                    pubsub = self.pubsub
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=RECHECK_SECONDS)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._wake_all()
                await self._reset()
                await asyncio.sleep(0.2)
                continue
            if msg is not None and msg.get("type") == "message":
                channel = msg["channel"]
                channel = channel.decode() if isinstance(channel, bytes) else channel
                for event in self.events.get(channel, ()):
                    event.set()

    def _wake_all(self) -> None:
        for waiters in self.events.values():
            for event in waiters:
                event.set()

    async def _reset(self) -> None:
        pubsub, self.pubsub = self.pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def close(self) -> None:
        reader, self.reader = self.reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        await self._reset()

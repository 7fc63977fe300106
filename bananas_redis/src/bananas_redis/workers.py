"""Worker registry on Redis: ``{ns}:workers`` (id -> expiry, clock seconds) and ``{ns}:workers:info``."""

from __future__ import annotations

import json
from typing import Any

from bananas.protocols import WorkerInfo

from bananas_redis.connection import Connection

__all__ = ["RedisWorkers"]


class RedisWorkers:
    """:class:`bananas.protocols.WorkerRegistry` on Redis; expiry follows the backend clock."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.k = conn.keys

    async def heartbeat(self, info: WorkerInfo, ttl: float) -> None:
        now = self.conn.now()
        client = self.conn.client
        body = json.dumps(info.to_dict(), separators=(",", ":"))

        async def once() -> None:
            async with client.pipeline(transaction=False) as pipe:
                pipe.hset(self.k.workers_info, info.id, body)
                pipe.zadd(self.k.workers, {info.id: now + ttl})
                await pipe.execute()

        await self.conn.run(once, "heartbeat")
        await self.conn.call("prune_workers", [self.k.workers, self.k.workers_info], [repr(now)])

    async def deregister(self, worker_id: str) -> None:
        client = self.conn.client

        async def once() -> None:
            async with client.pipeline(transaction=False) as pipe:
                pipe.zrem(self.k.workers, worker_id)
                pipe.hdel(self.k.workers_info, worker_id)
                await pipe.execute()

        await self.conn.run(once, "deregister")

    async def workers(self) -> list[WorkerInfo]:
        now = self.conn.now()
        client = self.conn.client
        ids = await self.conn.run(lambda: client.zrangebyscore(self.k.workers, f"({now!r}", "+inf"), "workers")
        if not ids:
            return []
        bodies: list[Any] = await self.conn.run(lambda: client.hmget(self.k.workers_info, ids), "workers")
        out = []
        for body in bodies:
            if body is None:
                continue
            try:
                out.append(WorkerInfo.from_dict(json.loads(body)))
            except (ValueError, TypeError):
                continue
        return sorted(out, key=lambda w: w.id)

    async def close(self) -> None:
        await self.conn.close()

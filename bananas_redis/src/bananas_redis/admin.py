"""Looking at and repairing a Redis queue: depths and the dead letter queue (DEAD_LETTER_ADMIN)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from bananas.errors import InvalidJob
from bananas.job import ALL_PRIORITIES, DEFAULT_ROUTING_KEY, Job, JobPriority
from bananas.protocols import QueueDepths

from bananas_redis.connection import Connection
from bananas_redis.jobjson import decode, edit, unreadable_stub, wire_time
from bananas_redis.keys import Keys

__all__ = ["QueueAdmin"]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class QueueAdmin:
    """The administrative half of :class:`~bananas_redis.queue.RedisQueue`."""

    conn: Connection
    k: Keys

    async def _pipeline(self, name: str, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        return await self.conn.batch(name, calls)

    async def depths(self) -> QueueDepths:
        client = self.conn.client
        route_keys: list[str] = []

        group_keys: list[str] = []

        async def scan() -> None:
            route_keys.clear()
            group_keys.clear()
            async for key in client.scan_iter(match=self.k.route_pattern, count=1000):
                route_keys.append(_text(key))
            async for key in client.scan_iter(match=self.k.group_queue_pattern, count=1000):
                group_keys.append(_text(key))

        await self.conn.run(scan, "depths")
        lists: list[tuple[str, str, JobPriority]] = [
            (self.k.ready(DEFAULT_ROUTING_KEY, p), DEFAULT_ROUTING_KEY, p) for p in ALL_PRIORITIES
        ]
        prefix = f"{self.k.ns}:route:"
        for key in sorted(set(route_keys)):
            if not key.startswith(prefix):  # the pattern is escaped; never count another namespace
                continue
            route, _, prio = key[len(prefix) :].rpartition(":queue:")
            if prio in {p.value for p in ALL_PRIORITIES}:
                lists.append((key, route, JobPriority(prio)))
        prefix = f"{self.k.ns}:groups:queue:"
        for key in sorted(set(group_keys)):  # {ns}:groups:queue:{routing key}:{priority}:{group}
            route, _, rest = key[len(prefix) :].partition(":")
            prio = rest.partition(":")[0]
            if key.startswith(prefix) and prio in {p.value for p in ALL_PRIORITIES}:
                lists.append((key, route, JobPriority(prio)))

        async def counts() -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for key, _, _ in lists:
                    pipe.llen(key)
                pipe.llen(self.k.processing)
                pipe.zcard(self.k.scheduled)
                pipe.zcard(self.k.group_scheduled)
                pipe.llen(self.k.dead)
                return list(await pipe.execute())

        values = await self.conn.run(counts, "depths")
        ready: dict[tuple[str, JobPriority], int] = {}
        for (_, route, prio), n in zip(lists, values, strict=False):
            if n:
                ready[(route, prio)] = ready.get((route, prio), 0) + int(n)
        processing, scheduled, group_scheduled, dead = (int(v) for v in values[-4:])
        return QueueDepths(ready=ready, processing=processing, scheduled=scheduled + group_scheduled, dead=dead)

    # -- dead letters -----------------------------------------------------------------

    async def _dead_ids(self, start: int, stop: int) -> list[str]:
        ids = await self.conn.run(lambda: self.conn.client.lrange(self.k.dead, start, stop), "dead letters")
        return [_text(i) for i in ids]

    async def dead_letters(self, *, limit: int = 100, offset: int = 0) -> list[Job]:
        if limit < 1:
            return []
        ids = await self._dead_ids(max(offset, 0), max(offset, 0) + limit - 1)
        if not ids:
            return []
        raws = await self.conn.run(lambda: self.conn.client.mget([self.k.job(i) for i in ids]), "dead letters")
        errors = await self.conn.run(lambda: self.conn.client.hmget(self.k.dead_errors, ids), "dead letters")
        out: list[Job] = []
        for job_id, raw, err in zip(ids, raws, errors, strict=True):
            try:
                out.append(Job.from_json(raw) if raw is not None else unreadable_stub(job_id, err))
            except Exception:  # hostile data: an unreadable entry is listed as what is known of it
                with contextlib.suppress(InvalidJob):
                    out.append(unreadable_stub(job_id, err))
        return out

    async def requeue_dead(self, job_ids: Sequence[str] | None = None) -> int:
        ids = list(job_ids) if job_ids is not None else await self._dead_ids(0, -1)
        if not ids:
            return 0
        raws = await self.conn.run(lambda: self.conn.client.mget([self.k.job(i) for i in ids]), "requeue")
        now = wire_time(self.conn.now())
        calls: list[tuple[list[str], list[Any]]] = []
        for job_id, raw in zip(ids, raws, strict=True):
            if raw is None:
                continue
            try:
                data, job = decode(raw)
                _, text = edit(data, status="pending", attempts=0, error=None, scheduled_for=None, updated_at=now)
            except Exception:  # unreadable: left in the dead letter queue (purge it)
                continue
            keys = [self.k.dead, self.k.job(job_id), self.k.ready_for(job), self.k.dead_errors]
            calls.append((keys, [job_id, raw, text, self.k.wakeup, job.routing_key, self.k.join_spec(job)]))
        if not calls:
            return 0
        return sum(int(r) for r in await self._pipeline("requeue", calls))

    async def purge_dead(self, job_ids: Sequence[str] | None = None) -> int:
        ids = list(job_ids) if job_ids is not None else await self._dead_ids(0, -1)
        if not ids:
            return 0
        client = self.conn.client

        async def once() -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.lrem(self.k.dead, 0, job_id)
                return list(await pipe.execute())

        removed = await self.conn.run(once, "purge")
        gone = [i for i, n in zip(ids, removed, strict=True) if int(n) > 0]
        if gone:
            await self.conn.run(lambda: client.delete(*[self.k.job(i) for i in gone]), "purge")
            await self.conn.run(lambda: client.hdel(self.k.dead_errors, *gone), "purge")
        return len(gone)

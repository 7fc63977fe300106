"""Cron storage on Redis: ``{ns}:schedules:{id}`` hashes, fired atomically in fire.lua.

A tick fires when it is later than the stored ``last_run``. The decision is made in Python
(RFC 3339 times from other implementations vary in precision), then applied by fire.lua
only if ``last_run`` is still what was read (compare and set) and no other scheduler holds
the documented ``{ns}:schedule_lock:{id}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bananas.errors import DuplicateJob, InvalidJob
from bananas.job import Job, JobStatus
from bananas.protocols import ScheduleState
from bananas.timefmt import format_time, parse_time

from bananas_redis.connection import Connection

__all__ = ["RedisScheduler"]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return parse_time(_text(value))
    except ValueError:
        return None


class RedisScheduler:
    """:class:`bananas.protocols.Scheduler` on Redis."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.k = conn.keys

    async def fire(self, schedule_id: str, tick: datetime, job: Job, next_run: datetime) -> bool:
        if job.status is JobStatus.PENDING:
            kind, target, score = "L", self.k.ready(job.routing_key, job.priority), ""
        elif job.status is JobStatus.SCHEDULED and job.scheduled_for is not None:
            kind, target, score = "Z", self.k.scheduled, repr(job.scheduled_for.timestamp())
        else:
            raise InvalidJob(f"a cron job must be pending or scheduled, not {job.status.value}")
        key = self.k.schedule(schedule_id)
        for _ in range(20):
            raw = await self.conn.run(lambda: self.conn.client.hget(key, "last_run"), "fire")
            seen = _text(raw) if raw is not None else ""
            last = _time(seen)
            if last is not None and last >= tick:
                return False
            keys = [key, self.k.schedule_lock(schedule_id), self.k.job(job.id), target]
            args = [seen, format_time(tick), format_time(next_run), job.to_json(), kind, score,
                    self.k.wakeup, job.routing_key, job.id]  # fmt: skip
            outcome = int(await self.conn.call("fire", keys, args, "fire"))
            if outcome == 1:
                return True
            if outcome == -1:
                return False  # another scheduler (holding the documented lock) is firing it
            if outcome == -2:
                stored = await self.conn.run(lambda: self.conn.client.get(self.k.job(job.id)), "fire")
                if stored is not None and _text(stored) == job.to_json():
                    continue  # our own earlier try stored the job; re-read the state
                raise DuplicateJob(f"a job with id {job.id!r} already exists; schedule {schedule_id!r} not fired")
        return False

    async def record(
        self,
        schedule_id: str,
        *,
        next_run: datetime | None = None,
        last_success: datetime | None = None,
        last_error: str | None = None,
    ) -> None:
        key = self.k.schedule(schedule_id)
        mapping: dict[str, str] = {}
        if next_run is not None:
            mapping["next_run"] = format_time(next_run)
        if last_success is not None:
            mapping["last_success"] = format_time(last_success)
        if last_error:
            mapping["last_error"] = last_error
        client = self.conn.client

        async def once() -> None:
            async with client.pipeline(transaction=False) as pipe:
                if mapping:
                    pipe.hset(key, mapping=mapping)
                if last_error == "":
                    pipe.hdel(key, "last_error")
                if mapping or last_error == "":
                    pipe.hsetnx(key, "run_count", 0)  # make the hash exist even for a clear
                await pipe.execute()

        await self.conn.run(once, "record schedule")

    async def state(self, schedule_id: str) -> ScheduleState | None:
        fields = await self.conn.run(lambda: self.conn.client.hgetall(self.k.schedule(schedule_id)), "state")
        return _state(schedule_id, fields) if fields else None

    async def states(self) -> list[ScheduleState]:
        client = self.conn.client
        prefix = len(self.k.schedule(""))
        keys: list[str] = []

        async def scan() -> None:
            keys.clear()
            async for key in client.scan_iter(match=self.k.schedules_pattern, count=1000):
                keys.append(_text(key))

        await self.conn.run(scan, "states")
        out = []
        for key in sorted(set(keys)):
            found = await self.state(key[prefix:])
            if found is not None:
                out.append(found)
        return out

    async def close(self) -> None:
        await self.conn.close()


def _state(schedule_id: str, fields: dict[Any, Any]) -> ScheduleState:
    text = {_text(k): _text(v) for k, v in fields.items()}
    try:
        run_count = int(text.get("run_count") or 0)
    except ValueError:
        run_count = 0
    return ScheduleState(
        schedule_id=schedule_id,
        last_run=_time(text.get("last_run")),
        next_run=_time(text.get("next_run")),
        last_success=_time(text.get("last_success")),
        last_error=text.get("last_error", ""),
        run_count=run_count,
    )

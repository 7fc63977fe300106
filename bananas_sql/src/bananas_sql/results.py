"""Results, cron state and the worker registry on SQL, shared by PostgreSQL and SQLite."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from bananas.errors import DuplicateJob, JobDecodeError, Timeout
from bananas.job import Job, JobResult, dumps, loads
from bananas.protocols import ScheduleState, WorkerInfo
from bananas.timefmt import from_timestamp

from bananas_sql.database import Connection, Database
from bananas_sql.queries import record_schedule_sql
from bananas_sql.rows import job_params


class SqlResults:
    """Results as wire-format hashes (JSON objects of strings), kept for their TTL."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def store(self, result: JobResult) -> None:
        await self.db.writes.submit("store_result", self.db.result_params(result))

    async def get(self, job_id: str) -> JobResult | None:
        now = self.db.clock()

        async def work(conn: Connection) -> str | None:
            row = (await conn.execute(self.db.q["get_result"], {"id": job_id, "now": now})).first()
            return None if row is None else str(row.data)

        data = await self.db.run(work, readonly=True)
        if data is None:
            return None
        fields = loads(data)
        if not isinstance(fields, dict):
            raise JobDecodeError(f"stored result of job {job_id!r} is not a JSON object")
        return JobResult.from_hash(job_id, fields)

    async def wait(self, job_id: str, timeout: float) -> JobResult:
        found: list[JobResult] = []

        async def check() -> bool:
            result = await self.get(job_id)
            if result is not None:
                found.append(result)
            return result is not None

        if await check() or await self.db.wait_for_result(job_id, timeout, check):
            return found[-1]
        raise Timeout(f"no result for job {job_id!r} within {timeout:g}s")

    async def delete(self, job_id: str) -> None:
        async def work(conn: Connection) -> None:
            await conn.execute(self.db.q["delete_result"], {"id": job_id})

        await self.db.run(work, single=True)

    async def close(self) -> None:
        await self.db.close()


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else from_timestamp(value)


def _state(row: Any) -> ScheduleState:
    return ScheduleState(
        schedule_id=row.schedule_id, last_run=_dt(row.last_run), next_run=_dt(row.next_run),
        last_success=_dt(row.last_success), last_error=row.last_error or "", run_count=int(row.run_count),
    )  # fmt: skip


class SqlScheduler:
    """Cron state, one row per schedule; a tick fires by compare-and-set on ``last_run``
    in the same transaction as the job's insert."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def fire(self, schedule_id: str, tick: datetime, job: Job, next_run: datetime) -> bool:
        params = job_params(job, self.db.clock())
        cas = {"id": schedule_id, "tick": tick.timestamp(), "next_run": next_run.timestamp()}

        async def work(conn: Connection) -> bool:
            if (await conn.execute(self.db.q["fire"], cas)).first() is None:
                return False
            if (await conn.execute(self.db.q["enqueue"], params)).first() is None:
                raise DuplicateJob(f"schedule {schedule_id!r}: a job with id {job.id!r} already exists")
            return True

        return await self.db.run(work)

    async def record(
        self,
        schedule_id: str,
        *,
        next_run: datetime | None = None,
        last_success: datetime | None = None,
        last_error: str | None = None,
    ) -> None:
        values: dict[str, Any] = {}
        if next_run is not None:
            values["next_run"] = _ts(next_run)
        if last_success is not None:
            values["last_success"] = _ts(last_success)
        if last_error is not None:
            values["last_error"] = last_error
        if not values:
            return
        sql = record_schedule_sql(self.db.names.schedules, list(values))

        async def work(conn: Connection) -> None:
            await conn.execute(self.db.statement(sql), {"id": schedule_id, **values})

        await self.db.run(work, single=True)

    async def state(self, schedule_id: str) -> ScheduleState | None:
        async def work(conn: Connection) -> ScheduleState | None:
            row = (await conn.execute(self.db.q["schedule_state"], {"id": schedule_id})).first()
            return None if row is None else _state(row)

        return await self.db.run(work, readonly=True)

    async def states(self) -> list[ScheduleState]:
        async def work(conn: Connection) -> list[ScheduleState]:
            return [_state(row) for row in await conn.execute(self.db.q["schedule_states"])]

        return await self.db.run(work, readonly=True)

    async def close(self) -> None:
        await self.db.close()


class SqlWorkers:
    """Live workers, one row each, expiring ``ttl`` clock seconds after the last heartbeat."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def heartbeat(self, info: WorkerInfo, ttl: float) -> None:
        now = self.db.clock()
        data = dumps(WorkerInfo.from_dict({**info.to_dict(), "last_heartbeat": now}).to_dict())

        async def work(conn: Connection) -> None:
            await conn.execute(self.db.q["heartbeat"], {"id": info.id, "data": data, "expires_at": now + ttl})

        await self.db.run(work, single=True)

    async def deregister(self, worker_id: str) -> None:
        async def work(conn: Connection) -> None:
            await conn.execute(self.db.q["deregister"], {"id": worker_id})

        await self.db.run(work, single=True)

    async def workers(self) -> list[WorkerInfo]:
        now = self.db.clock()

        async def work(conn: Connection) -> Sequence[str]:
            return [r.data for r in await conn.execute(self.db.q["workers"], {"now": now})]

        return [WorkerInfo.from_dict(json.loads(data)) for data in await self.db.run(work, readonly=True)]

    async def close(self) -> None:
        await self.db.close()

"""The :class:`~bananas.protocols.Queue` on SQL, shared by PostgreSQL and SQLite."""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from typing import Any

from bananas.errors import DuplicateJob, JobNotFound, LeaseLost
from bananas.job import ALL_PRIORITIES, Job, JobPriority, JobResult, JobStatus, unchecked_copy
from bananas.policy import BY_POLICY, RetryAt, completed, failed_attempt, lease_expired, reaped_result
from bananas.protocols import DEFAULT_LEASE_SECONDS, QueueDepths
from bananas.timefmt import from_timestamp

from bananas_sql import tables as t
from bananas_sql.cancel import SqlCancel
from bananas_sql.checkpoints import SqlCheckpoints
from bananas_sql.database import ClaimedRow, Connection, Database
from bananas_sql.groups import SqlGroups
from bananas_sql.results import SqlResults
from bananas_sql.rows import (
    claim_arguments,
    describe,
    job_params,
    new_lease_token,
    row_to_job,
    warn_unreadable,
)
from bananas_sql.unique import SqlUnique
from bananas_sql.workflow import SqlWorkflows

__all__ = ["MOVE_BATCH", "REAP_BATCH", "SqlQueue", "claim_arguments", "job_params", "new_lease_token"]

_RANK_TO_PRIORITY = {p.rank: p for p in ALL_PRIORITIES}

REAP_BATCH = 500
"""Expired leases taken back per transaction (:meth:`SqlQueue.reap_expired` loops)."""

MOVE_BATCH = 1000
"""Due scheduled jobs made ready per statement (:meth:`SqlQueue.move_scheduled` loops)."""


class SqlQueue(SqlUnique, SqlWorkflows, SqlCheckpoints, SqlCancel, SqlGroups):
    """Jobs in one table; see :mod:`bananas_sql.tables` for the states and indexes."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.q = db.q

    def _now(self) -> float:
        return self.db.clock()

    async def ping(self) -> None:
        async def work(conn: Connection) -> None:
            await conn.execute(self.q["ping"])

        await self.db.run(work, single=True)

    async def enqueue(self, job: Job) -> None:
        if not await self.db.enqueue_one(job_params(job, self._now())):
            raise DuplicateJob(f"a job with id {job.id!r} already exists; nothing was written")

    async def enqueue_many(self, jobs: Sequence[Job]) -> None:
        if not jobs:
            return
        now = self._now()
        rows = [job_params(job, now) for job in jobs]
        ids = [r["id"] for r in rows]
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise DuplicateJob(f"the batch holds the same job id more than once: {', '.join(dupes)}")

        if not await self.db.insert_many(rows, now):
            raise DuplicateJob("a job with one of these ids already exists; nothing of the batch was written")

    async def claim(
        self,
        routing_keys: Sequence[str],
        priorities: Sequence[JobPriority] = ALL_PRIORITIES,
        *,
        limit: int = 1,
        lease: float = DEFAULT_LEASE_SECONDS,
        job_names: Collection[str] | None = None,
    ) -> list[Job]:
        keys, prios, names = claim_arguments(routing_keys, priorities, limit, job_names)
        if not keys or not prios or names == []:
            return []
        self.db.note_claim()
        now = self._now()
        token = new_lease_token()
        rows = None
        if not self._grouped:
            rows = await self.db.claim(
                keys, prios, limit=limit, lease_until=now + lease, job_names=names, now=now, token=token
            )
        if rows is None:
            rows = await self.claim_grouped(keys, prios, limit, now, now + lease, names, token)
        return await self.claimed_jobs([(row, token) for row in rows], now)

    async def claimed_jobs(self, claimed: Sequence[tuple[ClaimedRow, str]], now: float) -> list[Job]:
        """The jobs of claimed rows, each with the lease token it was claimed under, as processing
        copies holding their tokens; a row that cannot be decoded (any exception) is buried
        alone instead."""
        jobs: list[Job] = []
        for row, token in claimed:
            try:
                job = Job.from_json(row.data)  # validated here; the claim's changes need no second check
                job = unchecked_copy(job, status=JobStatus.PROCESSING, scheduled_for=None, lease_token=token)
            except Exception as exc:  # deliberately broad: stored data is hostile
                # Claimed, so leased to us: if this bury is lost, the lease reaper buries it.
                await self.bury_unreadable(row.seq, row.id, describe(exc), now)
                continue
            jobs.append(job)
        return jobs

    async def bury_unreadable(self, seq: int, job_id: str, detail: str, now: float) -> None:
        """Send the row ``seq`` (job ``job_id``, if no better id is known) to the dead letter
        queue as unreadable (see :meth:`_bury`); logs one WARNING."""

        async def work(conn: Connection) -> str | None:
            return await self._bury(conn, seq, detail, now)

        found = await self.db.run(work)
        warn_unreadable(found or job_id, "moved to the dead letter queue", detail)

    async def _bury(self, conn: Connection, seq: int, detail: str, now: float) -> str | None:
        """In ``conn``'s transaction: the row ``seq`` dead with the error "job is unreadable:
        ``detail``", and a failed result for its waiters; its id (None if the row is gone)."""
        error = f"job is unreadable: {detail}"
        params = {"seq": seq, "error": error, "now": now, "expires_at": now + self.db.options.failed_job_ttl}
        row = (await conn.execute(self.q["bury_unreadable"], params)).first()
        if row is None:
            return None
        job_id: str = row.id
        failed = JobResult(job_id=job_id, status=JobStatus.FAILED, error=error, completed_at=from_timestamp(now))
        await conn.execute(self.q["store_result"], self.db.result_params(failed))
        return job_id

    async def renew(self, jobs: Sequence[Job], lease: float = DEFAULT_LEASE_SECONDS) -> set[str]:
        """Extend the leases of ``jobs`` that their claims still hold; the ids still held."""
        held = [(job.id, job.lease_token) for job in jobs if job.lease_token]
        if not held:
            return set()
        return await self.db.renew_leases(held, self._now() + lease)

    async def _settle(self, query: str, job: Job, settled: Job, params: dict[str, Any]) -> Job:
        """Write ``query`` if ``job``'s claim still holds the row (fenced by its token); return
        ``settled``. Raises :class:`LeaseLost` (nothing written) if it does not, unless the row
        already holds exactly what this write writes (a retry of one that was applied)."""
        if not job.lease_token:
            raise LeaseLost(job.id, "this copy of the job does not come from a claim")
        # Committed together with whatever other outcomes are being recorded meanwhile.
        if await self.db.writes.submit(query, {**params, "id": job.id, "token": job.lease_token}):
            return settled
        found = await self._settled_row(job.id)
        if found is not None and found[1] == params["data"]:
            return settled  # applied already: a retry after the reply was lost
        if found is None:
            raise LeaseLost(job.id, "the job no longer exists")
        state = found[0]
        raise LeaseLost(job.id, "it was claimed again" if state == t.PROCESSING else f"it is {state} now")

    async def _settled_row(self, job_id: str) -> tuple[str, str] | None:
        async def work(conn: Connection) -> tuple[str, str] | None:
            row = (await conn.execute(self.q["settled"], {"id": job_id})).first()
            return None if row is None else (row.state, row.data)

        return await self.db.run(work, readonly=True)

    async def complete(self, job: Job) -> Job:
        now = self._now()
        done = completed(job, now)
        params = {"data": done.to_json(), "now": now, "expires_at": now + self.db.options.completed_job_ttl}
        return await self._settle("complete", job, done, params)

    def shares_store_with(self, results: object) -> bool:
        """True if ``results`` keeps its rows in this queue's database, so that
        :meth:`complete_and_store` can write both in one transaction."""
        return isinstance(results, SqlResults) and results.db is self.db

    async def complete_and_store(self, job: Job, result: JobResult) -> Job:
        """:meth:`complete` and ``results.store(result)`` in one write (only for a ``results``
        of :meth:`shares_store_with`): the result row is written only if the completion
        applied; fenced like :meth:`complete` (raises :class:`LeaseLost`, nothing written)."""
        if result.job_id != job.id:
            raise ValueError(f"the result is for job {result.job_id!r}, not {job.id!r}")
        now = self._now()
        done = completed(job, now)
        stored = self.db.result_params(result)
        params = {
            "data": done.to_json(),
            "now": now,
            "expires_at": now + self.db.options.completed_job_ttl,
            "result": stored["data"],
            "result_expires_at": stored["expires_at"],
        }
        return await self._settle("complete_and_store", job, done, params)

    async def fail(self, job: Job, error: str, *, retry_at: RetryAt = BY_POLICY) -> Job:
        """Store a failed attempt as the caller decided (see the protocol): scheduled for its
        retry time, or dead."""
        now = self._now()
        record = failed_attempt(job, error, now, retry_at)
        if record.scheduled_for is not None:
            params = {"data": record.to_json(), "run_at": record.scheduled_for.timestamp()}
            return await self._settle("retry_later", job, record, params)
        params = {"data": record.to_json(), "now": now, "expires_at": now + self.db.options.failed_job_ttl}
        return await self._settle("bury", job, record, params)

    async def release(self, job: Job) -> None:
        """Hand ``job`` back as next in line if its claim still holds it; otherwise do nothing."""
        if not job.lease_token:
            return
        params = {"id": job.id, "token": job.lease_token}

        async def work(conn: Connection) -> None:
            await conn.execute(self.q["release"], params)

        await self.db.run(work, single=True)

    async def move_scheduled(self) -> int:
        """Make due scheduled jobs ready in their due order, :data:`MOVE_BATCH` per transaction;
        return how many. A due job that cannot be decoded or re-encoded (any exception) is
        buried alone instead; the others move on."""
        now = self._now()
        moved = 0
        while True:
            seen, ready, unreadable = await self.db.run(functools.partial(self._move_batch, now=now))
            moved += ready
            for job_id, detail in unreadable:  # logged once committed (a unit of work may run twice)
                warn_unreadable(job_id, "moved to the dead letter queue instead of made ready", detail)
            if seen < MOVE_BATCH:
                return moved

    async def _move_batch(self, conn: Connection, *, now: float) -> tuple[int, int, list[tuple[str, str]]]:
        """Up to :data:`MOVE_BATCH` due jobs made ready (or buried); how many were due, how many
        were made ready, and the unreadable ones as ``(id, detail)``."""
        rows = (await conn.execute(self.q["due_scheduled"], {"now": now, "batch": MOVE_BATCH})).all()
        ready: list[dict[str, Any]] = []
        unreadable: list[tuple[str, str]] = []
        for row in rows:
            try:
                Job.from_json(row.data).to_json()  # only a job that can be read and written again runs
            except Exception as exc:  # deliberately broad: stored data is hostile
                detail = describe(exc)
                unreadable.append((await self._bury(conn, row.seq, detail, now) or row.id, detail))
                continue
            ready.append({"seq": row.seq})
        if ready:
            await conn.execute(self.q["make_ready"], ready)  # one by one, in due order (FIFO positions)
        return len(rows), len(ready), unreadable

    async def reap_expired(self) -> int:
        """Take back expired leases (see the protocol), :data:`REAP_BATCH` per transaction, then
        prune expired rows. A row that cannot be decoded or re-encoded (any exception) is buried
        alone; the others of its batch are taken back all the same."""
        now = self._now()
        ttl = self.db.options.failed_job_ttl
        total = 0
        while True:
            seen, unreadable = await self.db.run(functools.partial(self._reap_batch, now=now, ttl=ttl))
            total += seen
            for job_id, detail in unreadable:  # logged once committed (a unit of work may run twice)
                warn_unreadable(job_id, "moved to the dead letter queue by the lease reaper", detail)
            if seen < REAP_BATCH:
                break

        async def prune(conn: Connection) -> None:
            await conn.execute(self.q["prune_jobs"], {"now": now})
            await conn.execute(self.q["prune_results"], {"now": now})
            await conn.execute(self.q["prune_workers"], {"now": now})
            await self.prune_groups(conn, now)
            await self.prune_workflows(conn, now)  # finished workflows whose record expired

        await self.db.run(prune)
        return total

    async def _reap_batch(self, conn: Connection, *, now: float, ttl: float) -> tuple[int, list[tuple[str, str]]]:
        """Take back up to :data:`REAP_BATCH` expired leases; how many, and the unreadable ones
        buried as ``(id, detail)``."""
        ready: list[dict[str, Any]] = []
        dead: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        unreadable: list[tuple[str, str]] = []
        reaped_dead: list[Job] = []
        rows = (await conn.execute(self.q["expired_leases"], {"now": now, "batch": REAP_BATCH})).all()
        for row in rows:
            try:
                again = lease_expired(Job.from_json(row.data), now)
                result = reaped_result(again, now)
                if result is None:
                    ready.append({"seq": row.seq, "data": again.to_json()})
                else:  # dead: final, so its failed result, in the same transaction
                    dead.append({"seq": row.seq, "data": again.to_json(), "now": now, "expires_at": now + ttl})
                    results.append(self.db.result_params(result))
                    reaped_dead.append(again)
            except Exception as exc:  # deliberately broad: stored data is hostile
                detail = describe(exc)
                unreadable.append((await self._bury(conn, row.seq, detail, now) or row.id, detail))
        if ready:
            await conn.execute(self.q["reap_ready"], ready)
        if dead:
            await conn.execute(self.q["reap_dead"], dead)
            await conn.execute(self.q["store_result"], results)
            await self.follow_reaped(conn, reaped_dead, now)  # dead workflow steps: their dead links, same transaction
        return len(rows), unreadable

    async def get_job(self, job_id: str) -> Job:
        now = self._now()

        async def work(conn: Connection) -> Job:
            row = (await conn.execute(self.q["get_job"], {"id": job_id, "now": now})).first()
            if row is None:
                raise JobNotFound(job_id)
            return row_to_job(row)

        return await self.db.run(work, readonly=True)

    async def depths(self) -> QueueDepths:
        async def work(conn: Connection) -> QueueDepths:
            ready: dict[tuple[str, JobPriority], int] = {}
            totals = {t.SCHEDULED: 0, t.PROCESSING: 0, t.DEAD: 0}
            for state, key, rank, count in await conn.execute(self.q["depths"]):
                if state == t.READY:  # counted with and without a group: summed
                    line = (key, _RANK_TO_PRIORITY[rank])
                    ready[line] = ready.get(line, 0) + count
                else:
                    totals[state] += count
            return QueueDepths(
                ready=ready, processing=totals[t.PROCESSING], scheduled=totals[t.SCHEDULED], dead=totals[t.DEAD]
            )

        return await self.db.run(work, readonly=True)

    async def dead_letters(self, *, limit: int = 100, offset: int = 0) -> list[Job]:
        if limit < 0 or offset < 0:
            raise ValueError(f"limit and offset must be >= 0, got limit={limit}, offset={offset}")
        now = self._now()

        async def work(conn: Connection) -> list[Job]:
            rows = await conn.execute(self.q["dead_letters"], {"limit": limit, "offset": offset, "now": now})
            jobs = []
            for row in rows:
                try:
                    jobs.append(row_to_job(row))
                except Exception as exc:  # not even a placeholder fits (e.g. a foreign id)
                    warn_unreadable(str(row.id), "left out of the dead letter list", describe(exc))
            return jobs

        return await self.db.run(work, readonly=True)

    async def requeue_dead(self, job_ids: Sequence[str] | None = None) -> int:
        now = self._now()

        async def work(conn: Connection) -> int:
            if job_ids is None:
                rows = await conn.execute(self.q["dead_all"])
            elif not job_ids:
                return 0
            else:
                rows = await conn.execute(self.q["dead_some"], {"ids": list(job_ids)})
            updates = []
            for row in rows:
                data = row.data
                try:
                    job = Job.from_json(data)
                    fresh = job.evolve(
                        status=JobStatus.PENDING, attempts=0, error="", scheduled_for=None,
                        updated_at=from_timestamp(now),
                    )  # fmt: skip
                    data = fresh.to_json()
                except Exception:  # deliberately broad: stored data is hostile
                    pass  # requeued as it is; the next claim buries it again with its error
                updates.append({"seq": row.seq, "data": data})
            if updates:
                await conn.execute(self.q["requeue"], updates)
            return len(updates)

        return await self.db.run(work)

    async def purge_dead(self, job_ids: Sequence[str] | None = None) -> int:
        async def work(conn: Connection) -> int:
            if job_ids is None:
                return (await conn.execute(self.q["purge_all"])).rowcount
            if not job_ids:
                return 0
            return (await conn.execute(self.q["purge_some"], {"ids": list(job_ids)})).rowcount

        return await self.db.run(work, single=True)

    async def wait_for_work(self, routing_keys: Sequence[str], timeout: float) -> None:
        await self.db.wait_for_work(list(routing_keys), self.work_wait(timeout))

    async def close(self) -> None:
        await self.db.close()

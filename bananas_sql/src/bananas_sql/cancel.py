"""Cancellation on PostgreSQL and SQLite: :class:`~bananas.protocols.Cancellation`, each call
one transaction.

A ready or scheduled job gets state ``cancelled`` (its data the cancelled record) in one fenced
``UPDATE``, so no claim or mover can take it afterwards; a claimed one gets a row in
``cancel_requests`` (schema version 8) that its worker reads at each lease renewal; the worker's
settle writes state ``cancelled`` fenced by its lease token and drops the request. A workflow
step's dead link is followed in the same transaction as either write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bananas.cancel import CANCELLED_BEFORE_START, CancelOutcome, cancelled_record
from bananas.errors import BackendUnavailable, JobNotFound, LeaseLost
from bananas.job import Job

from bananas_sql import tables as t
from bananas_sql.database import Connection, Database
from bananas_sql.queries.cancel import statements

__all__ = ["SqlCancel"]

_TRIES = 20
"""Reads of a job that changed between the read and the write, before cancel gives up."""

_WAITING = (t.READY, t.SCHEDULED)


def _expanding(sql: str, name: str) -> Any:
    import sqlalchemy as sa

    return sa.text(sql).bindparams(sa.bindparam(name, expanding=True))


class SqlCancel:
    """Mixed into :class:`~bananas_sql.queue.SqlQueue`."""

    db: Database
    _cancel_q: Mapping[str, Any] | None = None

    if TYPE_CHECKING:  # provided by SqlWorkflows

        async def follow_link(
            self, conn: Connection, job: Job, state: str, value: str, error: str, now: float
        ) -> None: ...

    def _xq(self) -> Mapping[str, Any]:
        if self._cancel_q is None:
            raw = statements(self.db.names.table)
            self._cancel_q = {name: self.db.statement(sql) for name, sql in raw.items()}
            if self.db.dialect == "sqlite":  # a list binds as an expanding IN parameter
                self._cancel_q = {**self._cancel_q, "cancel_requested": _expanding(raw["cancel_requested"], "ids")}
        return self._cancel_q

    def _clock_now(self) -> float:
        return float(self.db.options.clock())

    async def cancel(self, job_id: str) -> CancelOutcome:
        """Cancel a waiting job, ask a claimed one to stop (see the protocol); one transaction."""
        xq = self._xq()
        now = self._clock_now()
        expires_at = now + self.db.options.completed_job_ttl

        async def work(conn: Connection) -> CancelOutcome | None:
            row = (await conn.execute(xq["cancel_read"], {"id": job_id, "now": now})).first()
            if row is None:
                raise JobNotFound(job_id)
            if row.state == t.PROCESSING:
                await conn.execute(xq["cancel_prune"])
                await conn.execute(xq["cancel_request"], {"id": job_id})
                return CancelOutcome.REQUESTED
            if row.state not in _WAITING:
                return CancelOutcome.ALREADY_FINISHED  # completed, dead or cancelled
            try:
                job = Job.from_json(row.data)
            except Exception:  # unreadable: the next claim or move buries it; it is not cancelled here
                return CancelOutcome.ALREADY_FINISHED
            params = {"id": job_id, "state": row.state, "old": row.data, "now": now, "expires_at": expires_at,
                      "data": cancelled_record(job, now).to_json()}  # fmt: skip
            if (await conn.execute(xq["cancel_waiting"], params)).first() is None:
                return None  # it moved meanwhile: read it again
            await self.follow_link(conn, job, "cancelled", "null", CANCELLED_BEFORE_START, now)
            return CancelOutcome.CANCELLED

        for _ in range(_TRIES):
            outcome = await self.db.run(work)
            if outcome is not None:
                return outcome
        raise BackendUnavailable(f"job {job_id!r} kept changing while it was being cancelled; try again")

    async def cancel_requested(self, jobs: Sequence[Job]) -> set[str]:
        """The ids of ``jobs`` (still claimed) with a cancel request."""
        if not jobs:
            return set()
        xq = self._xq()
        ids = [job.id for job in jobs]

        async def work(conn: Connection) -> set[str]:
            return {str(r.job_id) for r in await conn.execute(xq["cancel_requested"], {"ids": ids})}

        return await self.db.run(work, readonly=True)

    async def settle_cancelled(self, job: Job, error: str) -> Job:
        """Store claimed ``job`` cancelled while its claim holds it (a workflow step follows its
        dead link in the same transaction); a job already cancelled is returned as stored;
        :class:`LeaseLost` otherwise."""
        if not job.lease_token:
            raise LeaseLost(job.id, "no claim")
        xq = self._xq()
        now = self._clock_now()
        stored = cancelled_record(job, now, error)
        params = {"id": job.id, "token": job.lease_token, "data": stored.to_json(), "now": now,
                  "expires_at": now + self.db.options.completed_job_ttl}  # fmt: skip

        async def work(conn: Connection) -> Job | None:
            if (await conn.execute(xq["settle_cancelled"], params)).first() is None:
                row = (await conn.execute(self.db.q["settled"], {"id": job.id})).first()
                if row is None or row.state != "cancelled":
                    return None
                try:
                    return Job.from_json(row.data)  # settled already: a repeat changes nothing
                except Exception:  # hostile data: an unreadable record is not this job's settle
                    return None
            await conn.execute(xq["cancel_forget"], {"id": job.id})
            await self.follow_link(conn, job, "cancelled", "null", error, now)
            return stored

        found = await self.db.run(work)
        if found is None:
            raise LeaseLost(job.id)
        return found

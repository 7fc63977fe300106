"""Workflows on PostgreSQL and SQLite: :class:`~bananas.protocols.WorkflowSteps` with the
settle of a step and the following of its link in one transaction (tables in
:mod:`bananas_sql.workflow_schema`, statements in :mod:`bananas_sql.queries.workflow`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bananas.errors import DuplicateJob, LeaseLost
from bananas.job import Job, JobResult, JobStatus, dumps
from bananas.policy import BY_POLICY, LEASE_EXPIRED_ERROR, RetryAt, completed, failed_attempt
from bananas.workflows.follow import settle_step
from bananas.workflows.plan import Join, Link, StepRecord, WorkflowPlan, WorkflowRecord, with_field
from bananas.workflows.steps import workflow_id

from bananas_sql.database import Connection, Database
from bananas_sql.queries.workflow import statements
from bananas_sql.rows import job_params

__all__ = ["SqlWorkflows"]


class _Steps:
    """:class:`~bananas.workflows.follow.StepStore` over one transaction's connection."""

    def __init__(self, conn: Connection, wq: Mapping[str, Any], q: Mapping[str, Any], now: float) -> None:
        self.conn, self.wq, self.q, self.now = conn, wq, q, now

    async def links(self, job_id: str) -> tuple[Link, Link] | None:
        row = (await self.conn.execute(self.wq["links"], {"job_id": job_id})).first()
        return None if row is None else (Link.from_json(row.on_success), Link.from_json(row.on_dead))

    async def set_outcome(self, job_id: str, state: str, outcome: str) -> None:
        await self.conn.execute(self.wq["set_outcome"], {"job_id": job_id, "state": state, "outcome": outcome})

    async def create(self, job_ids: tuple[str, ...], field: str, value: str) -> None:
        for job_id in job_ids:
            row = (await self.conn.execute(self.wq["take_waiting"], {"job_id": job_id})).first()
            if row is not None:
                job = Job.from_json(with_field(row.job, field, value))
                await self.conn.execute(self.q["enqueue"], job_params(job, self.now))

    async def join(self, join_id: str) -> Join:
        row = (await self.conn.execute(self.wq["join"], {"join_id": join_id})).first()
        return Join.from_json(join_id, row.definition)

    async def arrive(self, join_id: str, slot: int, outcome: str, value: str, ok: bool) -> tuple[int, int]:
        params = {"join_id": join_id, "slot": slot, "outcome": outcome, "value": value}
        if (await self.conn.execute(self.wq["fill_slot"], params)).first() is None:
            return -1, 0  # filled before: this arrival was counted then
        row = (
            await self.conn.execute(self.wq["count_arrival"], {"join_id": join_id, "failed": 0 if ok else 1})
        ).first()
        return int(row.arrived), int(row.failed)

    async def slots(self, join_id: str) -> list[tuple[str, str]]:
        rows = (await self.conn.execute(self.wq["slots"], {"join_id": join_id})).all()
        return [(r.outcome, r.value) for r in rows]


class SqlWorkflows:
    """Mixed into :class:`~bananas_sql.queue.SqlQueue`."""

    db: Database
    _workflow_q: Mapping[str, Any] | None = None

    def _wq(self) -> Mapping[str, Any]:
        if self._workflow_q is None:
            raw = statements(self.db.names.table)
            self._workflow_q = {name: self.db.statement(sql) for name, sql in raw.items()}
        return self._workflow_q

    async def submit_workflow(self, plan: WorkflowPlan) -> None:
        """Store the workflow, its steps and joins and enqueue its first steps in one transaction."""
        wq, q, now = self._wq(), self.db.q, self.db.clock()
        steps = [
            {
                "job_id": s.job.id,
                "workflow_id": plan.id,
                "state": "created" if s.initial else "waiting",
                "job": s.job.to_json(),
                "on_success": s.on_success.to_json(),
                "on_dead": s.on_dead.to_json(),
            }
            for s in plan.steps
        ]
        joins = [{"join_id": j.id, "workflow_id": plan.id, "definition": j.to_json()} for j in plan.joins]
        first = [job_params(job, now) for job in plan.initial]

        async def work(conn: Connection) -> None:
            if (
                await conn.execute(wq["new_workflow"], {"id": plan.id, "document": plan.document, "now": now})
            ).first() is None:
                raise DuplicateJob(f"a workflow with id {plan.id!r} already exists; nothing was submitted")
            await conn.execute(wq["new_step"], steps)
            if joins:
                await conn.execute(wq["new_join"], joins)
            for params in first:
                if (await conn.execute(q["enqueue"], params)).first() is None:
                    raise DuplicateJob(f"a job with id {params['id']!r} already exists; nothing was submitted")

        await self.db.run(work)

    async def _settle_step(
        self, job: Job, query: str, record: Job, params: dict[str, Any], follow: tuple[bool, str, str] | None
    ) -> Job:
        """Write the settle ``query`` fenced by ``job``'s claim and, when it applied and ``follow``
        is given (``ok``, value, error), the step's link, in one transaction."""
        if not job.lease_token:
            raise LeaseLost(job.id, "this copy of the job does not come from a claim")
        wq, q, now = self._wq(), self.db.q, self.db.clock()
        params = {**params, "id": job.id, "token": job.lease_token}

        async def work(conn: Connection) -> bool:
            if (await conn.execute(q[query], params)).first() is None:
                row = (await conn.execute(q["settled"], {"id": job.id})).first()
                # applied already (its link with it): a retry after a lost reply
                return row is not None and bool(row.data == params["data"])
            if follow is not None and workflow_id(job) is not None:
                ok, value, error = follow
                await settle_step(_Steps(conn, wq, q, now), job.id, ok, value, error)
            return True

        if not await self.db.run(work):
            raise LeaseLost(job.id)
        return record

    async def complete_step(self, job: Job, result: JobResult) -> Job:
        """Complete the step and follow its success link in one transaction."""
        now = self.db.clock()
        done = completed(job, now)
        params = {"data": done.to_json(), "now": now, "expires_at": now + self.db.options.completed_job_ttl}
        return await self._settle_step(job, "complete", done, params, (True, dumps(result.result), ""))

    async def fail_step(self, job: Job, error: str, *, retry_at: RetryAt = BY_POLICY) -> Job:
        """A failed attempt; the last one also follows the step's dead link, in the same transaction."""
        now = self.db.clock()
        record = failed_attempt(job, error, now, retry_at)
        if record.status is not JobStatus.FAILED:
            assert record.scheduled_for is not None
            params = {"data": record.to_json(), "run_at": record.scheduled_for.timestamp()}
            return await self._settle_step(job, "retry_later", record, params, None)
        params = {"data": record.to_json(), "now": now, "expires_at": now + self.db.options.failed_job_ttl}
        return await self._settle_step(job, "bury", record, params, (False, "null", error))

    async def follow_reaped(self, conn: Connection, dead: Sequence[Job], now: float) -> None:
        """Steps the lease reaper made dead follow their dead links, inside the reaper's transaction."""
        for job in dead:
            if workflow_id(job) is not None:
                await settle_step(_Steps(conn, self._wq(), self.db.q, now), job.id, False, "null", LEASE_EXPIRED_ERROR)

    async def workflow_record(self, workflow_id: str) -> WorkflowRecord | None:
        """The stored document and step states, or ``None``."""
        wq = self._wq()

        async def work(conn: Connection) -> WorkflowRecord | None:
            doc = (await conn.execute(wq["document"], {"id": workflow_id})).first()
            if doc is None:
                return None
            rows = (await conn.execute(wq["step_states"], {"id": workflow_id})).all()
            return WorkflowRecord(doc.document, {r.job_id: StepRecord(r.state, r.outcome) for r in rows})

        return await self.db.run(work, readonly=True)

"""Workflows on PostgreSQL and SQLite: :class:`~bananas.protocols.WorkflowSteps` with the
settle (or the cancel) of a step and the following of its link in one transaction (tables in
:mod:`bananas_sql.workflow_schema`, statements in :mod:`bananas_sql.queries.workflow`). A
finished workflow's rows are deleted by the lease reaper's cleanup once they expired."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bananas.errors import DuplicateJob, LeaseLost
from bananas.job import Job, JobResult, JobStatus, dumps
from bananas.policy import BY_POLICY, LEASE_EXPIRED_ERROR, RetryAt, completed, failed_attempt
from bananas.workflows.follow import settle_step
from bananas.workflows.plan import (
    CANCELLED_WAITING,
    Join,
    Link,
    StepRecord,
    WorkflowPlan,
    WorkflowRecord,
    WorkflowStop,
    cancelled_outcome,
    record_ttl,
    with_field,
)
from bananas.workflows.steps import workflow_id

from bananas_sql.database import Connection, Database
from bananas_sql.queries.workflow import statements
from bananas_sql.rows import job_params

__all__ = ["SqlWorkflows"]


class _Steps:
    """:class:`~bananas.workflows.follow.StepStore` over one transaction's connection."""

    def __init__(
        self, conn: Connection, wq: Mapping[str, Any], q: Mapping[str, Any], now: float, workflow_id: str
    ) -> None:
        self.conn, self.wq, self.q, self.now, self.workflow_id = conn, wq, q, now, workflow_id

    async def links(self, job_id: str) -> tuple[Link, Link] | None:
        row = (await self.conn.execute(self.wq["links"], {"job_id": job_id})).first()
        return None if row is None else (Link.from_json(row.on_success), Link.from_json(row.on_dead))

    async def set_outcome(self, job_id: str, state: str, outcome: str) -> None:
        await self.conn.execute(self.wq["set_outcome"], {"job_id": job_id, "state": state, "outcome": outcome})

    async def create(self, job_ids: tuple[str, ...], field: str, value: str) -> int:
        created = 0
        for job_id in job_ids:
            row = (await self.conn.execute(self.wq["take_waiting"], {"job_id": job_id})).first()
            if row is not None:
                job = Job.from_json(with_field(row.job, field, value))
                await self.conn.execute(self.q["enqueue"], job_params(job, self.now))
                created += 1
        return created

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

    async def add_open(self, delta: int) -> int | None:
        row = (await self.conn.execute(self.wq["add_open"], {"id": self.workflow_id, "delta": delta})).first()
        return None if row is None or row.open_steps is None else int(row.open_steps)

    async def expire(self, ttl: float) -> None:
        await self.conn.execute(self.wq["expire_workflow"], {"id": self.workflow_id, "expires_at": self.now + ttl})


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
            new = {"id": plan.id, "document": plan.document, "now": now, "open": len(first)}
            if (await conn.execute(wq["new_workflow"], new)).first() is None:
                raise DuplicateJob(f"a workflow with id {plan.id!r} already exists; nothing was submitted")
            await conn.execute(wq["new_step"], steps)
            if joins:
                await conn.execute(wq["new_join"], joins)
            for params in first:
                if (await conn.execute(q["enqueue"], params)).first() is None:
                    raise DuplicateJob(f"a job with id {params['id']!r} already exists; nothing was submitted")

        await self.db.run(work)

    async def _settle_step(
        self, job: Job, query: str, record: Job, params: dict[str, Any], follow: tuple[str, str, str] | None
    ) -> Job:
        """Write the settle ``query`` fenced by ``job``'s claim and, when it applied and ``follow``
        is given (the state settled, value, error), the step's link, in one transaction."""
        if not job.lease_token:
            raise LeaseLost(job.id, "this copy of the job does not come from a claim")
        q, now = self.db.q, self.db.clock()
        params = {**params, "id": job.id, "token": job.lease_token}

        async def work(conn: Connection) -> bool:
            if (await conn.execute(q[query], params)).first() is None:
                row = (await conn.execute(q["settled"], {"id": job.id})).first()
                # applied already (its link with it): a retry after a lost reply
                return row is not None and bool(row.data == params["data"])
            if follow is not None:
                state, value, error = follow
                await self.follow_link(conn, job, state, value, error, now)
            return True

        if not await self.db.run(work):
            raise LeaseLost(job.id)
        return record

    async def complete_step(self, job: Job, result: JobResult) -> Job:
        """Complete the step and follow its success link in one transaction."""
        now = self.db.clock()
        done = completed(job, now)
        params = {"data": done.to_json(), "now": now, "expires_at": now + self.db.options.completed_job_ttl}
        return await self._settle_step(job, "complete", done, params, ("completed", dumps(result.result), ""))

    async def fail_step(self, job: Job, error: str, *, retry_at: RetryAt = BY_POLICY) -> Job:
        """A failed attempt; the last one also follows the step's dead link, in the same transaction."""
        now = self.db.clock()
        record = failed_attempt(job, error, now, retry_at)
        if record.status is not JobStatus.FAILED:
            assert record.scheduled_for is not None
            params = {"data": record.to_json(), "run_at": record.scheduled_for.timestamp()}
            return await self._settle_step(job, "retry_later", record, params, None)
        params = {"data": record.to_json(), "now": now, "expires_at": now + self.db.options.failed_job_ttl}
        return await self._settle_step(job, "bury", record, params, ("dead", "null", error))

    async def follow_reaped(self, conn: Connection, dead: Sequence[Job], now: float) -> None:
        """Steps the lease reaper made dead follow their dead links, inside the reaper's transaction."""
        for job in dead:
            await self.follow_link(conn, job, "dead", "null", LEASE_EXPIRED_ERROR, now)

    async def follow_link(self, conn: Connection, job: Job, state: str, value: str, error: str, now: float) -> None:
        """Inside ``conn``'s transaction, which settled ``job`` as ``state``: if ``job`` is a
        workflow step, record it and follow its link (see :func:`~bananas.workflows.follow.settle_step`)."""
        wid = workflow_id(job)
        if wid is None:
            return
        opts = self.db.options
        ttl = record_ttl(opts.result_success_ttl, opts.result_failure_ttl)
        wq = self._wq()
        await conn.execute(wq["lock_workflow"], {"id": wid})  # the lock order: see queries.workflow
        await settle_step(_Steps(conn, wq, self.db.q, now, wid), job.id, state, value, error, ttl=ttl)

    async def prune_workflows(self, conn: Connection, now: float) -> None:
        """Inside ``conn``'s transaction: delete up to 100 expired workflows, every row of each."""
        wq = self._wq()
        ids = [{"id": row.id} for row in (await conn.execute(wq["expired_workflows"], {"now": now})).all()]
        if ids:
            for name in ("prune_workflow_slots", "prune_workflow_joins", "prune_workflow_steps", "prune_workflow"):
                await conn.execute(wq[name], ids)

    async def workflow_record(self, workflow_id: str) -> WorkflowRecord | None:
        """The stored document and step states, or ``None``."""
        wq, now = self._wq(), self.db.clock()

        async def work(conn: Connection) -> WorkflowRecord | None:
            doc = (await conn.execute(wq["document"], {"id": workflow_id, "now": now})).first()
            if doc is None:
                return None
            rows = (await conn.execute(wq["step_states"], {"id": workflow_id})).all()
            return WorkflowRecord(doc.document, {r.job_id: StepRecord(r.state, r.outcome) for r in rows})

        return await self.db.run(work, readonly=True)

    async def stop_workflow(self, workflow_id: str) -> WorkflowStop | None:
        """Record the steps not created yet cancelled and name the running ones, in one transaction."""
        wq, now = self._wq(), self.db.clock()
        outcome = cancelled_outcome(CANCELLED_WAITING)

        async def work(conn: Connection) -> WorkflowStop | None:
            if (await conn.execute(wq["document"], {"id": workflow_id, "now": now})).first() is None:
                return None
            await conn.execute(wq["lock_workflow"], {"id": workflow_id})  # before any step row
            if (await conn.execute(wq["running_steps"], {"id": workflow_id})).first() is None:
                return WorkflowStop()  # finished: nothing can be created any more
            params = {"id": workflow_id, "outcome": outcome}
            cancelled = [str(r.job_id) for r in (await conn.execute(wq["cancel_waiting_steps"], params)).all()]
            running = [str(r.job_id) for r in (await conn.execute(wq["running_steps"], {"id": workflow_id})).all()]
            return WorkflowStop(tuple(cancelled), tuple(running))

        return await self.db.run(work)

"""Redis's :class:`~bananas.protocols.WorkflowSteps`: one hash per workflow
(``{ns}:workflow:{id}``, see docs/redis-wire-format.md); a step's settle and the following of
its link are one script call (workflow_step.lua wraps finish.lua, workflow_cancel.lua wraps
cancel.lua). The settle that leaves no step running sets the hash's TTL
(:func:`~bananas.workflows.plan.record_ttl`). With ``wait_replicas`` every one of these writes
waits for the replicas as a settle does (see settle.py): a failover must not undo a step's
continuation its worker was told about."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bananas.errors import DuplicateJob, LeaseLost
from bananas.job import Job, JobResult, JobStatus, dumps
from bananas.policy import BY_POLICY, LEASE_EXPIRED_ERROR, RetryAt, decide_retry
from bananas.workflows.plan import (
    CANCELLED_WAITING,
    StepRecord,
    WorkflowPlan,
    WorkflowRecord,
    WorkflowStop,
    cancelled_outcome,
    failed_outcome,
    ok_outcome,
    record_ttl,
)
from bananas.workflows.steps import workflow_id

from bananas_redis.admin import _text
from bananas_redis.jobjson import edit, wire_time

if TYPE_CHECKING:
    from bananas_redis.connection import Connection
    from bananas_redis.keys import Keys

__all__ = ["RedisWorkflows", "is_step_call", "workflow_key"]

MISSING = "job record missing: the id was in a ready list but its job JSON does not exist"


def is_step_call(call: tuple[list[str], list[Any]]) -> bool:
    """True for a settle call built by :meth:`RedisWorkflows.with_dead_link` for a workflow step
    (its last key is the workflow hash): it runs workflow_step.lua, not finish.lua."""
    return ":workflow:" in call[0][-1]


def workflow_key(keys: Keys, workflow: str) -> str:
    """The hash of one workflow."""
    return f"{keys.ns}:workflow:{workflow}"


class RedisWorkflows:
    """Mixed into :class:`~bananas_redis.queue.RedisQueue`."""

    conn: Connection
    k: Keys

    if TYPE_CHECKING:  # provided by RedisQueue

        def _base(self, job: Job) -> dict[str, Any]: ...

        def _finish_call(
            self,
            job_id: str,
            json_text: str,
            mode: str,
            target: str,
            n: float | int | str,
            *,
            token: str = "",
            dead_error: str = "",
            result: JobResult | None = None,
        ) -> tuple[list[str], list[Any]]: ...

        async def fail(self, job: Job, error: str, *, retry_at: RetryAt = BY_POLICY) -> Job: ...

    async def submit_workflow(self, plan: WorkflowPlan) -> None:
        """Store the workflow hash and enqueue the first steps in one script call."""
        k, now = self.k, self.conn.now()
        fields: list[str] = ["doc", plan.document, "open", str(len(plan.initial))]
        first: list[str] = []
        for step in plan.steps:
            job = step.job
            sid = job.id
            fields += [f"job:{sid}", job.to_json(), f"list:{sid}", k.ready(job.routing_key, job.priority)]
            fields += [f"route:{sid}", job.routing_key, f"ok:{sid}", step.on_success.to_json()]
            fields += [f"dead:{sid}", step.on_dead.to_json(), f"state:{sid}", "waiting"]
            if step.initial:
                first += [sid, k.ready(job.routing_key, job.priority), job.routing_key]
        for join in plan.joins:
            fields += [f"join:{join.id}", join.to_json()]
        args = [f"{k.ns}:", MISSING, wire_time(now), repr(now), str(len(fields) // 2), *fields, *first]
        wkey = workflow_key(k, plan.id)
        conn, tries = self.conn, 0
        acked = None  # with wait_replicas: how many replicas confirmed (WAIT on the same connection)

        async def once() -> Any:
            nonlocal tries, acked
            tries += 1
            if conn.wait_replicas:
                reply, acked = await conn.eval_replicated("workflow_submit", [wkey], args)
                return reply
            return await conn.script("workflow_submit")(keys=[wkey], args=args)

        reply = await conn.run(once, "submit workflow")
        if reply:
            doc = await conn.run(lambda: conn.client.hget(wkey, "doc"), "submit workflow") if tries > 1 else None
            if doc is None or _text(doc) != plan.document:  # not our own earlier try, applied
                raise DuplicateJob(f"{_text(reply[1])!r} already exists; nothing of the workflow was submitted")
            if conn.wait_replicas:  # our earlier try wrote it, on a connection now gone
                acked = await conn.run(lambda: conn.confirm_replicated(wkey), "wait for replicas")
        if acked is not None:
            conn.check_replicas(acked, f"workflow {plan.id!r}")

    def _extra(self, job: Job, mode: str, outcome: str, value: str) -> tuple[str, list[Any]]:
        """The workflow hash and the W arguments of workflow_step.lua / workflow_cancel.lua."""
        now = self.conn.now()
        wid = workflow_id(job) or ""
        opts = self.conn.options
        ttl = max(1, int(record_ttl(opts.result_success_ttl, opts.result_failure_ttl) * 1000))
        w = [f"{self.k.ns}:", job.id, mode, outcome, value, MISSING, wire_time(now), repr(now), ttl]
        return workflow_key(self.k, wid), [*w, str(len(w))]

    async def _replicated(self, name: str, keys: list[str], args: list[Any], what: str) -> Any:
        """A script safe to repeat; with ``wait_replicas``, run until the replicas hold it."""
        if self.conn.wait_replicas:
            return await self.conn.run_replicated(name, keys, args, what)
        return await self.conn.call(name, keys, args, what)

    async def _step(self, job: Job, keys: list[str], args: list[Any], extra: tuple[str, list[Any]]) -> None:
        code = await self._replicated("workflow_step", [*keys, extra[0]], [*args, *extra[1]], f"settle step {job.id}")
        if int(code) == 0:
            raise LeaseLost(job.id)

    async def complete_step(self, job: Job, result: JobResult) -> Job:
        """Complete the step, store its result and follow its success link: one script call."""
        now = self.conn.now()
        data, text = edit(self._base(job), status=JobStatus.COMPLETED.value, updated_at=wire_time(now))
        opts = self.conn.options
        keys, args = self._finish_call(
            job.id, text, "complete", self.k.dead, max(1, int(opts.completed_job_ttl * 1000)), token=job.lease_token
        )
        value = dumps(result.result)
        await self._step(job, keys, args, self._extra(job, "ok", ok_outcome(value), value))
        return Job.from_dict(data)

    async def fail_step(self, job: Job, error: str, *, retry_at: RetryAt = BY_POLICY) -> Job:
        """A failed attempt; the last one also follows the step's dead link, in the same script call."""
        now = self.conn.now()
        when = decide_retry(job, retry_at, now)
        if when is not None:
            return await self.fail(job, error, retry_at=when)  # a retry follows nothing
        common = {"attempts": job.attempts + 1, "error": error or "failed", "updated_at": wire_time(now)}
        data, text = edit(self._base(job), status=JobStatus.FAILED.value, scheduled_for=None, **common)
        ttl = max(1, int(self.conn.options.failed_job_ttl * 1000))
        keys, args = self._finish_call(job.id, text, "dead", self.k.dead, ttl, token=job.lease_token)
        await self._step(job, keys, args, self._extra(job, "dead", failed_outcome(error or "failed"), "null"))
        return Job.from_dict(data)

    def with_dead_link(self, job: Job, call: tuple[list[str], list[Any]]) -> tuple[list[str], list[Any]]:
        """The reaper's finish.lua call that makes ``job`` dead, as a workflow_step.lua call that
        also follows its dead link when ``job`` is a workflow step (see :func:`is_step_call`)."""
        if workflow_id(job) is None:
            return call
        key, extra = self._extra(job, "dead", failed_outcome(LEASE_EXPIRED_ERROR), "null")
        return [*call[0], key], [*call[1], *extra]

    def cancel_step_call(self, job: Job, keys: list[str], args: list[Any], error: str) -> tuple[list[str], list[Any]]:
        """cancel.lua's call for ``job`` as a workflow_cancel.lua call that also records the step
        cancelled and follows its dead link (only for a workflow step: see :func:`is_step_call`)."""
        if workflow_id(job) is None:
            return keys, args
        key, extra = self._extra(job, "cancelled", cancelled_outcome(error), "null")
        return [*keys, key], [*args, *extra]

    async def workflow_record(self, workflow_id: str) -> WorkflowRecord | None:
        """The workflow hash's document and step states, or ``None``."""
        key = workflow_key(self.k, workflow_id)
        raw = await self.conn.run(lambda: self.conn.client.hgetall(key), "read workflow")
        if not raw:
            return None
        fields = {_text(f): _text(v) for f, v in raw.items()}
        steps = {
            name[len("state:") :]: StepRecord(state, fields.get("out:" + name[len("state:") :]))
            for name, state in fields.items()
            if name.startswith("state:")
        }
        return WorkflowRecord(fields["doc"], steps)

    async def stop_workflow(self, workflow_id: str) -> WorkflowStop | None:
        """Record the steps not created yet cancelled and name the running ones: one script call."""
        record = await self.workflow_record(workflow_id)
        if record is None:
            return None
        args: list[Any] = [cancelled_outcome(CANCELLED_WAITING), *record.steps]
        key = workflow_key(self.k, workflow_id)
        reply = await self._replicated("workflow_stop", [key], args, f"cancel workflow {workflow_id}")
        if _text(reply[0]) == "gone":
            return None
        n = int(reply[1])
        ids = [_text(x) for x in reply[2:]]
        return WorkflowStop(tuple(ids[:n]), tuple(ids[n:]))

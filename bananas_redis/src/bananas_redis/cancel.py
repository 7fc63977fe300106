"""Redis's :class:`~bananas.protocols.Cancellation`.

cancel.lua takes a job that waits (in its ready list or the scheduled set) out of it and stores
its cancelled JSON in the same script, so no worker, ours or an original Go one, can pop it
afterwards. A claimed job gets a cancel-request key ``{ns}:cancel:{id}`` (expiring after the
failed-job TTL) that :meth:`RedisCancel.cancel_requested` reads for the workers' renewals; the
worker's settle is finish.lua's fenced ``complete`` with the cancelled JSON. A workflow step's
cancel and settle also record the step and follow its dead link in the same script
(workflow_cancel.lua, workflow_step.lua). With ``wait_replicas`` both wait for the replicas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bananas.cancel import CANCELLED_BEFORE_START, CancelOutcome
from bananas.errors import BackendUnavailable, JobNotFound, LeaseLost
from bananas.job import DEFAULT_ROUTING_KEY, Job, JobResult, JobStatus
from bananas.workflows.plan import cancelled_outcome
from bananas.workflows.steps import workflow_id

from bananas_redis.jobjson import decode, edit, wire_time

if TYPE_CHECKING:
    from bananas_redis.connection import Connection
    from bananas_redis.keys import Keys

__all__ = ["RedisCancel", "cancel_key"]

_READS = 20
"""How often cancel reads the job again when it changed between the read and the script."""


def cancel_key(keys: Keys, job_id: str) -> str:
    """Where a claimed job's cancel request is kept."""
    return f"{keys.ns}:cancel:{job_id}"


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisCancel:
    """Mixed into :class:`~bananas_redis.queue.RedisQueue`."""

    conn: Connection
    k: Keys

    if TYPE_CHECKING:  # provided by RedisQueue

        def _base(self, job: Job) -> dict[str, Any]: ...
        async def _finish(self, job_id: str, json_text: str, mode: str, target: str, n: float | int | str,
                          **kw: Any) -> int: ...  # fmt: skip
        def _finish_call(self, job_id: str, json_text: str, mode: str, target: str, n: float | int | str, *,
                         token: str = "", dead_error: str = "",
                         result: JobResult | None = None) -> tuple[list[str], list[Any]]: ...  # fmt: skip
        @staticmethod
        def _fenced(job: Job, code: int) -> None: ...
        def cancel_step_call(self, job: Job, keys: list[str], args: list[Any],
                             error: str) -> tuple[list[str], list[Any]]: ...  # fmt: skip
        def _extra(self, job: Job, mode: str, outcome: str, value: str) -> tuple[str, list[Any]]: ...
        async def _replicated(self, name: str, keys: list[str], args: list[Any], what: str) -> Any: ...
        async def _step(self, job: Job, keys: list[str], args: list[Any], extra: tuple[str, list[Any]]) -> None: ...
        async def group_settled(self, job: Job) -> None: ...

    async def cancel(self, job_id: str) -> CancelOutcome:
        """Cancel a waiting job, ask a claimed one to stop (see the protocol); one script."""
        key = self.k.job(job_id)
        opts = self.conn.options
        for _ in range(_READS):
            raw = await self.conn.run(lambda: self.conn.client.get(key), "cancel")
            if raw is None:
                raise JobNotFound(job_id)
            try:
                data, job = decode(raw)
            except Exception:  # an unreadable record is dead or about to be: it is finished
                return CancelOutcome.ALREADY_FINISHED
            if job.status.is_final:
                return CancelOutcome.ALREADY_FINISHED
            now = self.conn.now()
            _, text = edit(data, status=JobStatus.CANCELLED.value, scheduled_for=None,
                           error=CANCELLED_BEFORE_START, updated_at=wire_time(now))  # fmt: skip
            ready = self.k.ready_for(job)  # a grouped job waits in its group's list and set
            legacy = ready
            if job.group is None and (not job.routing_key or job.routing_key == DEFAULT_ROUTING_KEY):
                legacy = self.k.legacy_default(job.priority)
            keys = [key, self.k.leases, self.k.scheduled_for(job), ready, legacy, cancel_key(self.k, job_id)]
            ttl = max(opts.failed_job_ttl, opts.completed_job_ttl)
            args: list[Any] = [job_id, raw, text, _ms(opts.completed_job_ttl), _ms(ttl)]
            script = "workflow_cancel" if workflow_id(job) is not None else "cancel"
            keys, args = self.cancel_step_call(job, keys, args, CANCELLED_BEFORE_START)
            code = int(await self._replicated(script, keys, args, f"cancel {job_id}"))
            if code in (1, 3):  # 3: this cancel was applied by an earlier try of the call
                return CancelOutcome.CANCELLED
            if code == 2:
                return CancelOutcome.REQUESTED
            # 0: the job changed meanwhile; -1: between two places (a claim or settle in flight)
        raise BackendUnavailable(f"job {job_id!r} kept changing while it was being cancelled; try again")

    async def cancel_requested(self, jobs: Sequence[Job]) -> set[str]:
        """The ids of ``jobs`` that have a cancel request (one MGET; one GET each on Cluster)."""
        if not jobs:
            return set()
        ids = [job.id for job in jobs]
        keys = [cancel_key(self.k, i) for i in ids]
        client = self.conn.client

        async def read() -> list[Any]:
            if self.conn.is_cluster:  # the keys lie in different slots
                return [await client.get(k) for k in keys]
            return list(await client.mget(keys))

        values = await self.conn.run(read, "cancel_requested")
        return {i for i, v in zip(ids, values, strict=True) if v is not None}

    async def settle_cancelled(self, job: Job, error: str) -> Job:
        """Store claimed ``job`` cancelled (finish.lua's fenced ``complete``; a workflow step's dead
        link in the same script); a job already cancelled is returned as stored; :class:`LeaseLost`
        otherwise."""
        now = self.conn.now()
        data, text = edit(self._base(job), status=JobStatus.CANCELLED.value, scheduled_for=None,
                          error=error, updated_at=wire_time(now))  # fmt: skip
        ttl = _ms(self.conn.options.completed_job_ttl)
        try:
            if workflow_id(job) is None:
                code = await self._finish(job.id, text, "complete", self.k.dead, ttl, token=job.lease_token)
                self._fenced(job, code)
            else:
                keys, args = self._finish_call(job.id, text, "complete", self.k.dead, ttl, token=job.lease_token)
                await self._step(job, keys, args, self._extra(job, "cancelled", cancelled_outcome(error), "null"))
        except LeaseLost:
            stored = await self._stored_cancelled(job.id)
            if stored is None:
                raise
            return stored  # settled already: a repeat changes nothing
        request = cancel_key(self.k, job.id)
        await self.conn.run(lambda: self.conn.client.delete(request), "settle_cancelled")
        await self.group_settled(job)
        return Job.from_dict(data)

    async def _stored_cancelled(self, job_id: str) -> Job | None:
        """The job as stored if it is cancelled, else ``None`` (also for an unreadable record)."""
        key = self.k.job(job_id)
        raw = await self.conn.run(lambda: self.conn.client.get(key), "settle_cancelled")
        try:
            job = Job.from_json(raw) if raw is not None else None
        except Exception:  # hostile data: an unreadable record is no cancelled job
            return None
        return job if job is not None and job.status is JobStatus.CANCELLED else None

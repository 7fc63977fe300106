"""Redis's :class:`~bananas.protocols.Checkpoints`: ``{ns}:checkpoint:{id}`` holds the last
state saved, written by checkpoint.lua only while the saving claim holds the job; with
``wait_replicas`` a save returns once the replicas hold it (a failover must not take a job
back to an older checkpoint than its worker was told was saved)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bananas.errors import LeaseLost
from bananas.job import Job

from bananas_redis.admin import _text

if TYPE_CHECKING:
    from bananas_redis.connection import Connection
    from bananas_redis.keys import Keys

__all__ = ["CHECKPOINT_TTL", "RedisCheckpoints", "checkpoint_key"]

CHECKPOINT_TTL = 7 * 24 * 3600.0
"""Seconds a checkpoint is kept after its last save (at least the failed-job TTL)."""


def checkpoint_key(keys: Keys, job_id: str) -> str:
    """Where a job's checkpoint is kept."""
    return f"{keys.ns}:checkpoint:{job_id}"


class RedisCheckpoints:
    """Mixed into :class:`~bananas_redis.queue.RedisQueue`."""

    conn: Connection
    k: Keys

    async def save_checkpoint(self, job: Job, state: str) -> None:
        """Save ``state`` while ``job``'s claim holds it; :class:`LeaseLost` otherwise."""
        if not job.lease_token:
            raise LeaseLost(job.id, "no claim")
        ttl = int(max(CHECKPOINT_TTL, self.conn.options.failed_job_ttl) * 1000)
        keys = [self.k.leases, checkpoint_key(self.k, job.id)]
        args: list[Any] = [job.id, job.lease_token, state, ttl]
        what = f"checkpoint {job.id}"
        if self.conn.wait_replicas:  # checkpoint.lua is safe to repeat
            code = await self.conn.run_replicated("checkpoint", keys, args, what)
        else:
            code = await self.conn.call("checkpoint", keys, args, what)
        if int(code) == 0:
            raise LeaseLost(job.id)

    async def load_checkpoint(self, job_id: str) -> str | None:
        """The last state saved, or ``None``."""
        key = checkpoint_key(self.k, job_id)
        raw = await self.conn.run(lambda: self.conn.client.get(key), "read checkpoint")
        return None if raw is None else _text(raw)

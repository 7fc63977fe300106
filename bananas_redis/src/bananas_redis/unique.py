"""Unique jobs on Redis: :class:`~bananas.protocols.UniqueEnqueue` in one script call
(``lua/enqueue_unique.lua``); each key is ``{ns}:unique:{key}`` (see docs/redis-wire-format.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bananas.errors import DuplicateJob
from bananas.job import Job
from bananas.unique import UniqueKey

from bananas_redis.admin import _text
from bananas_redis.jobjson import wire_time

if TYPE_CHECKING:
    from bananas_redis.connection import Connection
    from bananas_redis.keys import Keys

__all__ = ["RedisUnique"]


class RedisUnique:
    """``enqueue_unique`` for :class:`~bananas_redis.queue.RedisQueue` (mixed in)."""

    conn: Connection
    k: Keys

    if TYPE_CHECKING:

        def _pack(self, job: Job, out: list[bytes]) -> None: ...

    async def enqueue_unique(self, entries: Sequence[tuple[Job, UniqueKey | None]]) -> list[str]:
        """Enqueue each job unless its key is held, in one script call (see
        :class:`~bananas.protocols.UniqueEnqueue`)."""
        if not entries:
            return []
        keys, args = self._unique_call(entries)
        conn = self.conn
        acked = None  # with wait_replicas: how many replicas confirmed

        async def once() -> Any:
            nonlocal acked
            if conn.wait_replicas:
                reply, acked = await conn.eval_replicated("enqueue_unique", keys, args)
                return reply
            return await conn.script("enqueue_unique")(keys=keys, args=args)

        reply = await conn.run(once, "enqueue")
        if acked is not None:
            conn.check_replicas(acked, f"{len(entries)} job(s)")
        if _text(reply[0]) == "dup":
            raise DuplicateJob(f"a job with id {_text(reply[1])!r} already exists; nothing was enqueued")
        return [_text(answer) for answer in reply[1:]]

    def _unique_call(self, entries: Sequence[tuple[Job, UniqueKey | None]]) -> tuple[list[str], list[Any]]:
        """enqueue_unique.lua's keys and arguments; raises before anything is written."""
        from bananas_redis.queue import MISSING_JOB_ERROR  # the queue module imports this one

        k, now = self.k, self.conn.now()
        args: list[Any] = [f"{k.ns}:", MISSING_JOB_ERROR, wire_time(now), repr(now), str(len(entries))]
        ids: set[str] = set()
        for job, unique in entries:
            if job.id in ids:
                raise DuplicateJob(f"job id {job.id!r} appears twice in the batch; nothing was enqueued")
            ids.add(job.id)
            packed: list[bytes] = []
            self._pack(job, packed)
            args += [
                b"".join(packed),
                "" if unique is None else unique.key,
                "" if unique is None else repr(unique.unique_for),
            ]
        return [k.scheduled], args

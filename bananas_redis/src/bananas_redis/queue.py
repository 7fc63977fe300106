"""The job queue on Redis: enqueue, claim under a lease, settle, reap, schedule, dead letters.

Claim design. One Lua call (claim.lua) walks the ready lists in the worker's order and
moves up to ``limit`` ids to ``{ns}:queue:processing`` with RPOPLPUSH (never in no list),
records each lease deadline in the extra sorted set ``{ns}:queue:leases``, and marks the
job ``processing`` by replacing the values of the top-level ``status`` and ``updated_at``
strings in the JSON text: every other byte stays as its producer wrote it (cjson would
rewrite floats, big integers and field order, so JSON is never re-encoded in Lua). One
round trip claims a whole batch. For a JSON text the in-place editor does not handle (no
top-level ``status`` string, say), Python edits the decoded dict (jobjson.py) and writes
it with set_if_held.lua, guarded by "lease still held and JSON unchanged"; a crash in
between leaves a leased job still saying ``pending``, which the reaper takes back like any
expired claim, so nothing is lost.

Idle workers (claim_or_wait). A worker whose claim finds nothing registers as a waiter in
that same script call ({ns}:waiting:{routing key}, {ns}:waiter:{token}) and blocks on BLPOP
{ns}:inbox:{token}. enqueue.lua claims the new jobs for it exactly as its claim would
(processing list, lease, status) and pushes them to the inbox: the job travels producer ->
Redis -> worker in one hop, with the lease in place before the worker sees it. A registration
lives for one wait (plus WAITER_GRACE); jobs handed over between two waits are taken by the
worker's next claim, and a stopping worker hands back what its inbox holds (stop_waiting). A
worker killed while registered leaves at most what was handed to it within WAITER_GRACE
seconds: leased jobs that the reaper takes back when the lease runs out. Producers that only
LPUSH (other SDKs) hand nothing over; their jobs are found by the waiter's next claim, at the
latest after one poll interval.

Every write script is safe to repeat after a lost reply (see finish.lua's return codes),
so operations are retried through :meth:`Connection.run` on connection loss.

Replicated claims. With ``wait_replicas``, a claim (the script, or a waiter's BLPOP of its
inbox) is followed by ``WAIT`` on the same connection, and jobs whose claim the replicas did
not confirm are not run: a failover could undo the claim and hand them to another worker.
Settles wait for the replicas too (settle.py). See docs/high-availability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Sequence
from typing import Any

from bananas.errors import DuplicateJob, InvalidJob, JobDecodeError, JobNotFound, LeaseLost
from bananas.job import ALL_PRIORITIES, DEFAULT_ROUTING_KEY, Job, JobPriority, JobResult, JobStatus
from bananas.policy import BY_POLICY, LEASE_EXPIRED_ERROR, RetryAt, completed, decide_retry, retries_left
from bananas.protocols import DEFAULT_LEASE_SECONDS
from bananas.timefmt import format_time, from_timestamp

from bananas_redis.admin import QueueAdmin, _text
from bananas_redis.cancel import RedisCancel
from bananas_redis.checkpoints import RedisCheckpoints
from bananas_redis.connection import RETRYABLE, Connection
from bananas_redis.groups import RedisGroups
from bananas_redis.jobjson import dead_error, decode, edit, unreadable_stub, wire_time
from bananas_redis.results import RedisResults
from bananas_redis.settle import Settler
from bananas_redis.unique import RedisUnique
from bananas_redis.workflow import RedisWorkflows, is_step_call

__all__ = ["MISSING_JOB_ERROR", "RedisQueue", "lease_token"]

log = logging.getLogger("bananas.redis")

MISSING_JOB_ERROR = "job record missing: the id was in a ready list but its job JSON does not exist"
REAPER_GRACE = 30.0
"""Seconds a reaper holds a taken lease; if it dies, another reaper retries after this."""
BATCH = 500
WAITER_GRACE = 1.0
"""Seconds a waiter's registration outlives its wait (the next claim renews it)."""
MAX_BLOCK = 5.0
"""Longest single BLPOP of a waiter (below the client's 10 s socket timeout)."""


def unpack_inbox(entry: bytes) -> list[Any]:
    """``[id, json, flag, ...]`` from one inbox entry (claimlib.lua's ``pack``)."""
    out: list[Any] = []
    pos = 0
    while pos < len(entry):
        colon = entry.index(b":", pos)
        end_id = colon + 1 + int(entry[pos:colon])
        colon1 = entry.index(b":", end_id)
        colon2 = entry.index(b":", colon1 + 1)
        end_json = colon2 + 1 + int(entry[colon1 + 1 : colon2])
        out += [entry[colon + 1 : end_id], entry[colon2 + 1 : end_json], int(entry[end_id:colon1])]
        pos = end_json
    return out


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def lease_token(claim: int) -> str:
    """The lease token of claim number ``claim`` (claimlib.lua): finish.lua and renew.lua apply a
    worker's settle only while that claim is still the job's holder."""
    return f"c{claim}"


def _what(jobs: Sequence[Job]) -> str:
    return f"job {jobs[0].id!r}" if len(jobs) == 1 else f"a batch of {len(jobs)} jobs ({jobs[0].id!r}, ...)"


def _unreadable(job_id: str, error: str) -> None:
    log.warning("job %r sent to the dead letter queue: %s", job_id, error)


class RedisQueue(QueueAdmin, RedisUnique, RedisGroups, RedisWorkflows, RedisCheckpoints, RedisCancel):
    """:class:`bananas.protocols.Queue` on Redis, in the wire format of docs/redis-wire-format.md."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.k = conn.keys
        self._held: dict[str, tuple[str, dict[str, Any]]] = {}  # claimed id -> (lease token, stored JSON)
        self._pubsub: Any = None
        self._settler = Settler(conn)
        self._free_in: float | None = None  # after a claim that held grouped jobs back: seconds until one may go
        self._free_from = 0.0  # when that was said (time.monotonic)

    async def ping(self) -> None:
        await self.conn.run(self.conn.client.ping, "ping")

    # -- enqueue ----------------------------------------------------------------------

    def _fields(self, job: Job) -> tuple[str, str, str, str, str]:
        """``job`` as enqueue.lua takes it: kind, id, JSON, target (list key or score), routing key.
        A grouped job goes to its group's list ("G", with its join spec) or the groups'
        scheduled set ("S"): never where an original Go worker or scheduler would find it."""
        grouped = job.group is not None
        if job.status is JobStatus.PENDING:
            if grouped:
                kind, target = "G", f"{self.k.ready_for(job)}\n{self.k.join_spec(job)}"
            else:
                kind, target = "L", self.k.ready(job.routing_key, job.priority)
        elif job.status is JobStatus.SCHEDULED:
            if job.scheduled_for is None:
                raise InvalidJob(f"job {job.id} is scheduled but has no scheduled_for time")
            kind, target = "S" if grouped else "Z", repr(job.scheduled_for.timestamp())
        else:
            raise InvalidJob(f"only pending or scheduled jobs can be enqueued; job {job.id} is {job.status.value}")
        return kind, job.id, job.to_json(), target, job.routing_key

    def _pack(self, job: Job, out: list[bytes]) -> None:
        """Append ``job``'s part of enqueue.lua's packed argument to ``out``."""
        kind, *texts = self._fields(job)
        out.append(kind.encode())
        for text in texts:
            data = text.encode()
            out += (b"%d:" % len(data), data)

    async def enqueue(self, job: Job) -> None:
        await self.enqueue_many([job])

    async def enqueue_many(self, jobs: Sequence[Job]) -> None:
        if not jobs:
            return
        keys, args = self._enqueue_call(jobs)
        script, tries, conn = self.conn.script("enqueue"), 0, self.conn
        acked = None  # with wait_replicas: how many replicas confirmed (WAIT on the same connection)

        async def once() -> Any:
            nonlocal tries, acked
            tries += 1
            if conn.wait_replicas:
                reply, acked = await conn.eval_replicated("enqueue", keys, args)
                return reply
            return await script(keys=keys, args=args)

        reply = await conn.run(once, "enqueue")
        if reply:
            mine = tries > 1 and self._stored_as(jobs, await conn.run(lambda: self._mget(jobs), "mget"))
            self._check_enqueued(reply, mine)
            if conn.wait_replicas:  # our earlier try wrote them, on a connection now gone
                acked = await conn.run(lambda: conn.confirm_replicated(keys[0]), "wait for replicas")
        if acked is not None:
            conn.check_replicas(acked, _what(jobs))

    def enqueue_many_blocking(self, jobs: Sequence[Job]) -> None:
        """:meth:`enqueue_many` from any thread, without an event loop (the synchronous
        client's path): the same script, guarantees and errors, on the blocking client."""
        if not jobs:
            return
        keys, args = self._enqueue_call(jobs)
        tries, conn = 0, self.conn
        acked = None

        def once() -> Any:
            nonlocal tries, acked
            tries += 1
            if conn.wait_replicas:
                reply, acked = conn.blocking_eval_replicated("enqueue", keys, args)
                return reply
            return conn.blocking_eval("enqueue", keys, args)

        reply = conn.run_blocking(once, "enqueue")
        if reply:
            stored = conn.run_blocking(lambda: self._mget_blocking(jobs), "mget") if tries > 1 else None
            mine = stored is not None and self._stored_as(jobs, stored)
            self._check_enqueued(reply, mine)
            if conn.wait_replicas:
                acked = conn.run_blocking(lambda: conn.blocking_confirm_replicated(keys[0]), "wait for replicas")
        if acked is not None:
            conn.check_replicas(acked, _what(jobs))

    def _enqueue_call(self, jobs: Sequence[Job]) -> tuple[list[str], list[str | bytes]]:
        """enqueue.lua's keys and arguments for ``jobs``; raises before anything is written."""
        k, now = self.k, self.conn.now()
        head: list[str | bytes] = [f"{k.ns}:", MISSING_JOB_ERROR, wire_time(now), repr(now)]
        if len(jobs) == 1:
            return [k.scheduled], [*head, "", *self._fields(jobs[0])]
        packed: list[bytes] = []
        ids: set[str] = set()
        for job in jobs:
            if job.id in ids:
                raise DuplicateJob(f"job id {job.id!r} appears twice in the batch; nothing was enqueued")
            ids.add(job.id)
            self._pack(job, packed)
        return [k.scheduled], [*head, b"".join(packed)]

    def _mget(self, jobs: Sequence[Job]) -> Any:
        return self.conn.client.mget([self.k.job(j.id) for j in jobs])

    def _mget_blocking(self, jobs: Sequence[Job]) -> Any:
        keys = [self.k.job(j.id) for j in jobs]
        if self.conn.is_cluster:
            return self.conn.blocking_client.mget(keys)
        return self.conn.blocking_command("MGET", *keys)

    @staticmethod
    def _stored_as(jobs: Sequence[Job], stored: Sequence[Any]) -> bool:
        """Whether every job is stored exactly as given (our earlier try of a retried call was applied)."""
        return all(s is not None and _text(s) == j.to_json() for s, j in zip(stored, jobs, strict=True))

    @staticmethod
    def _check_enqueued(reply: Any, mine: bool) -> None:
        """Raise DuplicateJob for enqueue.lua's "exists" reply, unless the stored jobs are ``mine``
        (a retry after a lost reply found its own earlier write)."""
        if not mine:
            raise DuplicateJob(f"a job with id {_text(reply[1])!r} already exists; nothing was enqueued")

    async def claim(
        self,
        routing_keys: Sequence[str],
        priorities: Sequence[JobPriority] = ALL_PRIORITIES,
        *,
        limit: int = 1,
        lease: float = DEFAULT_LEASE_SECONDS,
        job_names: Collection[str] | None = None,
    ) -> list[Job]:
        if limit < 1:
            return []
        return await self._claim(routing_keys, priorities, limit, lease, job_names)

    async def claim_or_wait(
        self,
        routing_keys: Sequence[str],
        priorities: Sequence[JobPriority] = ALL_PRIORITIES,
        *,
        limit: int = 1,
        lease: float = DEFAULT_LEASE_SECONDS,
        waiter: str,
        timeout: float,
    ) -> list[Job]:
        """Claim like :meth:`claim`; if nothing is ready, wait up to ``timeout`` seconds for jobs
        handed over by the next enqueue (one round trip from the producer to this worker).

        In the same script call that finds nothing, the worker registers as a waiter under
        ``waiter`` (a token unique to it); it then blocks on its inbox. An enqueue claims the
        new jobs for it (processing list and lease, as this claim would) and pushes them there;
        a promoted scheduled job only wakes it. Jobs handed over while the worker was not
        blocked are taken by its next call. Returns ``[]`` when the wait ran out or it was only
        woken. Call :meth:`stop_waiting` when the worker stops.
        """
        if limit < 1:
            return []
        return await self._claim(routing_keys, priorities, limit, lease, None, waiter=waiter, timeout=timeout)

    async def stop_waiting(self, waiter: str) -> list[Job]:
        """Unregister ``waiter`` and return the jobs handed to it that it has not taken (the
        caller releases them)."""
        return await self._claim([DEFAULT_ROUTING_KEY], ALL_PRIORITIES, 0, DEFAULT_LEASE_SECONDS, None, waiter=waiter)

    async def wake_waiter(self, waiter: str) -> None:
        """End the current wait of ``waiter`` (an empty entry in its inbox)."""
        await self.conn.run(lambda: self.conn.client.lpush(self.k.inbox(waiter), b""), "wake waiter")

    def _waiter_prefixes(self, now: float) -> list[str]:
        return [self.k.waiting(""), self.k.waiter(""), self.k.inbox(""), repr(now)]

    async def _claim(
        self,
        routing_keys: Sequence[str],
        priorities: Sequence[JobPriority],
        limit: int,
        lease: float,
        job_names: Collection[str] | None,
        *,
        waiter: str | None = None,
        timeout: float = 0.0,
    ) -> list[Job]:
        if lease <= 0:
            raise InvalidJob(f"lease must be > 0 seconds, got {lease!r}")
        ordered = self.k.claim_lines(list(routing_keys), [JobPriority.parse(p) for p in priorities])
        if not ordered:
            return []
        lists = [ready for ready, _ in ordered]
        now = self.conn.now()
        deadline = repr(now + lease)
        names = sorted(job_names) if job_names is not None else []
        if job_names is not None and not names:
            return []
        k = self.k
        args: list[Any] = [k.job(""), limit, deadline, MISSING_JOB_ERROR, wire_time(now), len(names), *names]
        args += [f"{k.ns}:groups:", "\n".join(line for _, line in ordered), repr(now)]
        if waiter is not None:
            routes = "\n".join(dict.fromkeys(r or DEFAULT_ROUTING_KEY for r in routing_keys))
            register = "1" if timeout > 0 else "0"
            expiry = repr(now + min(timeout, MAX_BLOCK) + WAITER_GRACE)
            args += [waiter, register, *self._waiter_prefixes(now), expiry, repr(lease), routes]
        keys = [k.processing, k.leases, k.dead, k.dead_errors, *lists]
        if self.conn.wait_replicas and limit > 0:
            conn = self.conn
            reply, acked = await conn.run(lambda: conn.eval_replicated("claim", keys, args), "claim")
            reply = self._held_back(reply, now)
            if reply and not self._claim_replicated(acked, len(reply) // 3):
                return []
        else:
            reply = self._held_back(await self.conn.call("claim", keys, args), now)
        # A waiter's claim may return jobs leased by an enqueue (another deadline): bury by id only.
        token = deadline if waiter is None else ""
        claimed = await self._accept(reply, now, token)
        if claimed or waiter is None or timeout <= 0:
            return claimed
        inbox, block = k.inbox(waiter), self._wait_bound(min(timeout, MAX_BLOCK))
        if self.conn.wait_replicas:
            conn = self.conn
            entry, acked = await conn.run(lambda: conn.blpop_replicated(inbox, block), "wait for work")
            if entry is not None and not self._claim_replicated(acked, len(unpack_inbox(entry[1])) // 3):
                return []
        else:
            entry = await self.conn.run(lambda: self.conn.client.blpop([inbox], timeout=block), "wait for work")
        if entry is None:
            return []
        return await self._accept(unpack_inbox(entry[1]), self.conn.now(), "")

    def _held_back(self, reply: list[Any], now: float) -> list[Any]:
        """The jobs of claim.lua's reply; its trailing element, when a group held back ready jobs,
        is when one of them may start: remembered so that the next wait ends then."""
        if len(reply) % 3 == 1:
            self._free_in = max(0.0, float(_text(reply[-1])) - now)
            self._free_from = time.monotonic()
            return reply[:-1]
        self._free_in = None
        return reply

    def _wait_bound(self, timeout: float) -> float:
        """``timeout``, cut short to when a group that held back ready jobs at the last claim may
        start one (a lease runs out, a start leaves the rate window): no sleeping past a free slot."""
        if self._free_in is None:
            return timeout
        left = self._free_in - (time.monotonic() - self._free_from)
        return max(0.001, min(timeout, left + 0.001))

    def _claim_replicated(self, acked: int, count: int) -> bool:
        """With ``wait_replicas``: whether the replicas hold a claim of ``count`` jobs. If not, the
        jobs are not run here: a failover could undo the claim, and another worker would run
        them too. They stay leased (the reaper takes them back when the lease runs out) or,
        if the claim is lost with the master, are still waiting on the new one."""
        if acked >= self.conn.wait_replicas:
            return True
        log.warning(
            "Redis at %s: %d claimed job(s) not run: only %d of %d replicas confirmed the claim within %gs "
            "(wait_replicas); they run when their lease runs out (the reaper counts an attempt)",
            self.conn.redacted, count, acked, self.conn.wait_replicas, self.conn.wait_timeout,
        )  # fmt: skip
        return False

    async def _accept(self, reply: list[Any], now: float, token: str) -> list[Job]:
        """Jobs of a claim's reply ``[id, json, flag, ...]``; unreadable ones go to the dead list."""
        claimed: list[Job] = []
        writes: list[tuple[str, bytes, str]] = []  # JSON the script could not edit in place
        for i in range(0, len(reply), 3):
            job_id, raw, flag = _text(reply[i]), reply[i + 1], int(reply[i + 2])
            fence = lease_token(flag >> 1)
            try:  # hostile data: whatever reading or re-encoding one record raises is its problem alone
                data, job = decode(raw, fence)  # the claim's token, set as the job is built
                if job.id != job_id:
                    raise JobDecodeError(f"stored JSON has id {job.id!r}")
                if not flag & 1:  # the script could not mark it processing in place
                    data, text = edit(data, status=JobStatus.PROCESSING.value, updated_at=wire_time(now))
                    writes.append((job_id, raw, text))
                    job = Job.from_dict(data, lease_token=fence)
            except Exception as exc:
                error = f"job record unreadable: {exc}"
                _unreadable(job_id, error)
                await self._bury(job_id, error, token)
                continue
            self._held[job_id] = (fence, data)
            claimed.append(job)  # edited in place: the job already says processing
        if writes:
            await self._set_if_held(writes)
        return claimed

    async def _set_if_held(self, writes: list[tuple[str, bytes, str]]) -> None:
        args: list[Any] = [self.k.job("")]
        for job_id, old, new in writes:
            args += [job_id, old, new]
        await self.conn.call("set_if_held", [self.k.leases], args, "claim")

    async def _bury(self, job_id: str, error: str, token: str) -> None:
        """Send a claimed id with unreadable JSON to the dead list, with a failed result saying why."""
        now = self.conn.now()
        result = JobResult(job_id=job_id, status=JobStatus.FAILED, error=error, completed_at=from_timestamp(now))
        dead = dead_error(error, now)
        await self._finish(job_id, "", "dead", self.k.dead, 0, token=token, dead_error=dead, result=result)

    async def _store_unreadable_result(self, job_id: str, error: str) -> None:
        """A failed result for a job buried unreadable outside a settle, so its waiters wake."""
        result = JobResult(job_id=job_id, status=JobStatus.FAILED, error=error, completed_at=self._now_dt())
        args: list[Any] = [_ms(self.conn.options.result_failure_ttl), self.k.result_notify(job_id)]
        for field, value in result.to_hash().items():
            args += [field, value]
        await self.conn.call("store_result", [self.k.result(job_id)], args)

    def _now_dt(self) -> Any:
        return from_timestamp(self.conn.now())

    async def renew(self, jobs: Sequence[Job], lease: float = DEFAULT_LEASE_SECONDS) -> set[str]:
        if not jobs:
            return set()
        args: list[Any] = [repr(self.conn.now() + lease)]
        for job in jobs:
            args += [job.id, job.lease_token]
        reply = await self.conn.call("renew", [self.k.leases], args)
        held = {_text(x) for x in reply}
        for job in jobs:
            if job.id not in held:
                self._drop_held(job)
        return held

    def _drop_held(self, job: Job) -> None:
        entry = self._held.get(job.id)
        if entry is not None and entry[0] == job.lease_token:
            del self._held[job.id]

    # -- settle -------------------------------------------------------------------------

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
    ) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of finish.lua (see the script for the modes and return codes)."""
        k = self.k
        keys = [k.processing, k.leases, k.job(job_id), target, k.dead_errors]
        args: list[Any] = [job_id, json_text, mode, n, token, dead_error]
        if result is not None:
            keys.append(k.result(job_id))
            args += [_ms(self.conn.options.result_failure_ttl), k.result_notify(job_id)]
            for field, value in result.to_hash().items():
                args += [field, value]
        return keys, args

    async def _finish(self, job_id: str, json_text: str, mode: str, target: str, n: float | int | str,
                      **kw: Any) -> int:  # fmt: skip
        keys, args = self._finish_call(job_id, json_text, mode, target, n, **kw)
        return await self._settler.settle(keys, args)

    def _base(self, job: Job) -> dict[str, Any]:
        """The stored JSON of ``job`` as its claim read it (unknown fields as written); raises
        :class:`LeaseLost` for a copy no claim gave out."""
        if not job.lease_token:
            raise LeaseLost(job.id, "no claim")
        entry = self._held.get(job.id)
        if entry is not None and entry[0] == job.lease_token:
            del self._held[job.id]
            return entry[1]
        return job.to_dict()

    @staticmethod
    def _fenced(job: Job, code: int) -> None:
        """Raise :class:`LeaseLost` for finish.lua's "not held" reply."""
        if code == 0:
            raise LeaseLost(job.id)

    async def complete(self, job: Job) -> Job:
        done = completed(job, self.conn.now())
        _, text = edit(self._base(job), status=JobStatus.COMPLETED.value, updated_at=format_time(done.updated_at))
        ttl = _ms(self.conn.options.completed_job_ttl)
        self._fenced(job, await self._finish(job.id, text, "complete", self.k.dead, ttl, token=job.lease_token))
        await self.group_settled(job)
        return done

    def shares_store_with(self, results: object) -> bool:
        """True if ``results`` keeps its hashes in this queue's Redis, so that
        :meth:`complete_and_store` can write both in one script call."""
        return isinstance(results, RedisResults) and results.conn is self.conn

    async def complete_and_store(self, job: Job, result: JobResult) -> Job:
        """:meth:`complete` and ``results.store(result)`` as one atomic script call
        (only for a ``results`` of :meth:`shares_store_with`); the result hash is written
        only if the completion was applied."""
        done = completed(job, self.conn.now())
        _, text = edit(self._base(job), status=JobStatus.COMPLETED.value, updated_at=format_time(done.updated_at))
        opts = self.conn.options
        keys, args = self._finish_call(
            job.id, text, "complete", self.k.dead, _ms(opts.completed_job_ttl), token=job.lease_token
        )
        keys.append(self.k.result(job.id))
        ttl = opts.result_success_ttl if result.is_success() else opts.result_failure_ttl
        args += [_ms(ttl), self.k.result_notify(job.id)]
        for field, value in result.to_hash().items():
            args += [field, value]
        self._fenced(job, await self._settler.settle(keys, args))
        await self.group_settled(job)
        return done

    async def fail(self, job: Job, error: str, *, retry_at: RetryAt = BY_POLICY) -> Job:
        """Store a failed attempt as the caller decided (see the protocol): one finish.lua call,
        ``retry`` (scheduled for ``retry_at``) or ``dead``."""
        now = self.conn.now()
        when = decide_retry(job, retry_at, now)
        base = self._base(job)
        common = {"attempts": job.attempts + 1, "error": error or "failed", "updated_at": wire_time(now)}
        if when is not None:
            data, text = edit(base, status=JobStatus.PENDING.value, scheduled_for=format_time(when), **common)
            score, where = repr(when.timestamp()), self.k.scheduled_for(job)
            self._fenced(job, await self._finish(job.id, text, "retry", where, score, token=job.lease_token))
        else:
            data, text = edit(base, status=JobStatus.FAILED.value, scheduled_for=None, **common)
            ttl = _ms(self.conn.options.failed_job_ttl)
            self._fenced(job, await self._finish(job.id, text, "dead", self.k.dead, ttl, token=job.lease_token))
        await self.group_settled(job)
        return Job.from_dict(data)

    async def release(self, job: Job) -> None:
        if not job.lease_token:
            return  # no claim gave this copy out: it holds nothing to hand back
        _, text = edit(self._base(job), status=JobStatus.PENDING.value, updated_at=wire_time(self.conn.now()))
        target, join = self.k.ready_for(job), self.k.join_spec(job)
        await self._finish(job.id, text, "release", target, 0, token=job.lease_token, dead_error=join)
        await self.group_settled(job)

    # -- time-driven moves ------------------------------------------------------------

    async def move_scheduled(self) -> int:
        moved = 0
        while True:
            ids, raws, sets = await self._due()
            if not ids:
                return moved
            calls: list[tuple[list[str], list[Any]]] = []
            buried: list[str | None] = []  # per call: the error of an unreadable job, else None
            wake = self._waiter_prefixes(self.conn.now())
            for job_id, raw, source in zip(ids, raws, sets, strict=True):
                old = raw if raw is not None else b""
                try:  # hostile data: whatever one record raises is its problem alone
                    if raw is None:
                        raise JobDecodeError("job record missing")
                    data, job = decode(raw)
                    _, text = edit(data, status=JobStatus.PENDING.value, scheduled_for=None)
                except Exception as exc:
                    err = f"scheduled job unreadable: {exc}"
                    _unreadable(job_id, err)
                    keys = [source, self.k.job(job_id), self.k.dead, self.k.dead_errors]
                    dead = dead_error(err, self.conn.now())
                    calls.append((keys, [job_id, old, "", self.k.wakeup, "", dead, *wake]))
                    buried.append(err)
                    continue
                keys = [source, self.k.job(job_id), self.k.ready_for(job)]
                args = [job_id, old, text, self.k.wakeup, job.routing_key, "", *wake, self.k.join_spec(job)]
                calls.append(([*keys, self.k.dead_errors], args))
                buried.append(None)
            results = await self._pipeline("promote", calls)
            done = 0
            for (_, args), burial, code in zip(calls, buried, results, strict=True):
                if int(code) != 1:
                    continue
                done += 1
                if burial is None:
                    moved += 1
                else:
                    await self._store_unreadable_result(args[0], burial)
            if len(ids) < BATCH or done == 0:
                return moved

    async def _due(self) -> tuple[list[str], list[Any], list[str]]:
        """Up to BATCH due ids (the shared scheduled set first, then the groups'), their JSON and
        the set each waits in."""
        client, now = self.conn.client, self.conn.now()
        ids: list[str] = []
        sets: list[str] = []
        for where in (self.k.scheduled, self.k.group_scheduled):
            if len(ids) >= BATCH:
                break
            found = await self._due_in(where, now, BATCH - len(ids))
            ids += [_text(i) for i in found]
            sets += [where] * len(found)
        if not ids:
            return [], [], []
        raws = await self.conn.run(lambda: client.mget([self.k.job(i) for i in ids]), "mget")
        return ids, list(raws), sets

    async def _due_in(self, where: str, now: float, num: int) -> list[Any]:
        """Up to ``num`` ids of the scheduled set ``where`` due at ``now``."""
        client = self.conn.client
        found = await self.conn.run(lambda: client.zrangebyscore(where, "-inf", repr(now), start=0, num=num), "scan")
        return list(found)

    async def reap_expired(self) -> int:
        reaped = 0
        while True:
            now = self.conn.now()
            token = repr(now + REAPER_GRACE)
            reply = await self.conn.call("reap_take", [self.k.leases], [repr(now), token, BATCH, self.k.job("")])
            if not reply:
                return reaped
            calls = []
            for i in range(0, len(reply), 2):
                job_id, raw = _text(reply[i]), reply[i + 1]
                self._held.pop(job_id, None)
                calls.append(self._reap_call(job_id, raw, now, token))
            steps = [c for c in calls if is_step_call(c)]
            calls = [c for c in calls if not is_step_call(c)]
            replies = list(await self.conn.batch("finish", calls)) if calls else []
            if steps:  # workflow steps made dead: each with its dead link, in its one script call
                replies += await self.conn.batch("workflow_step", steps)
            reaped += sum(1 for r in replies if int(r) == 1)
            if len(reply) < 2 * BATCH:
                return reaped

    def _reap_call(self, job_id: str, raw: bytes | None, now: float, token: str) -> tuple[list[str], list[Any]]:
        """The finish.lua call that takes back one expired claim (a failed attempt)."""
        try:  # hostile data: whatever one record raises is its problem alone
            if raw is None:
                raise JobDecodeError("job record missing")
            data, job = decode(raw)
            common = {
                "attempts": job.attempts + 1, "error": LEASE_EXPIRED_ERROR, "updated_at": wire_time(now),
                "scheduled_for": None,
            }  # fmt: skip
            final = not retries_left(job)  # the core's rule (bananas.policy.lease_expired)
            _, text = edit(data, status=(JobStatus.FAILED if final else JobStatus.PENDING).value, **common)
        except Exception as exc:
            error = f"job record unreadable: {exc}"
            _unreadable(job_id, error)
            result = JobResult(job_id=job_id, status=JobStatus.FAILED, error=error, completed_at=from_timestamp(now))
            dead = dead_error(error, now)
            return self._finish_call(job_id, "", "dead", self.k.dead, 0, token=token, dead_error=dead, result=result)
        if not final:
            join = self.k.join_spec(job)
            return self._finish_call(job.id, text, "ready", self.k.ready_for(job), 0, token=token, dead_error=join)
        result = JobResult(
            job_id=job.id, status=JobStatus.FAILED, error=LEASE_EXPIRED_ERROR, completed_at=from_timestamp(now)
        )
        ttl = _ms(self.conn.options.failed_job_ttl)
        call = self._finish_call(job.id, text, "dead", self.k.dead, ttl, token=token, result=result)
        return self.with_dead_link(job, call)  # a workflow step: workflow_step.lua, its dead link in the same script

    # -- reading ----------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job:
        raw = await self.conn.run(lambda: self.conn.client.get(self.k.job(job_id)), "get_job")
        if raw is None:
            raise JobNotFound(job_id)
        try:
            return Job.from_json(raw)
        except JobDecodeError:
            dead = await self.conn.run(lambda: self.conn.client.hget(self.k.dead_errors, job_id), "get_job")
            if dead is None:
                raise
            return unreadable_stub(job_id, dead)

    # -- wake-up ----------------------------------------------------------------------

    async def wait_for_work(self, routing_keys: Sequence[str], timeout: float) -> None:
        wanted = {r or DEFAULT_ROUTING_KEY for r in routing_keys}
        loop = asyncio.get_running_loop()
        end = loop.time() + max(self._wait_bound(timeout), 0.0)
        try:
            if self._pubsub is None:
                pubsub = self.conn.client.pubsub()
                await pubsub.subscribe(self.k.wakeup)
                self._pubsub = pubsub
            while (left := end - loop.time()) > 0:
                msg = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
                if msg is not None and msg.get("type") == "message" and _text(msg["data"]) in wanted:
                    return
        except RETRYABLE:
            await self._drop_pubsub()
            await asyncio.sleep(max(0.0, min(end - loop.time(), 1.0)))

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def close(self) -> None:
        await self._drop_pubsub()
        await self.conn.close()

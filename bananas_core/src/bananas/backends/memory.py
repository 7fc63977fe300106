"""The in-memory backend, ``memory://``: the executable reference of the storage contracts.

Every ``connect("memory://NAME")`` (or ``memory://`` with ``namespace=...``) in one process
shares one store, so a client and a worker in the same process see the same jobs; a new
name is an empty store. Stores are thread-safe and work from any number of event loops.
Jobs are kept as wire-format JSON, like the other backends keep them, so what you read
back is a fresh decoded copy. Dead jobs stay until requeued or purged.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Collection, Iterable, Sequence
from urllib.parse import urlsplit

from bananas import policy
from bananas.backend import Backend, BackendOptions, validate_namespace
from bananas.backends._memory_cancel import MemoryCancel, forget_cancel
from bananas.backends._memory_checkpoints import MemoryCheckpoints
from bananas.backends._memory_groups import MemoryGroups
from bananas.backends._memory_parts import MemoryResults, MemoryScheduler, MemoryWorkers
from bananas.backends._memory_store import CAPABILITIES, MemoryPart, MemoryStore, check_new, store_for
from bananas.backends._memory_unique import MemoryUnique
from bananas.backends._memory_workflows import MemoryWorkflows
from bananas.capabilities import Capability, require
from bananas.errors import DuplicateJob, JobDecodeError, LeaseLost
from bananas.job import ALL_PRIORITIES, Job, JobPriority, JobResult, JobStatus
from bananas.plugins.hookspecs import hookimpl
from bananas.plugins.types import BackendSpec
from bananas.policy import BY_POLICY, RetryAt
from bananas.protocols import DEFAULT_LEASE_SECONDS, QueueDepths
from bananas.timefmt import from_timestamp

__all__ = [
    "CAPABILITIES",
    "MemoryQueue",
    "MemoryResults",
    "MemoryScheduler",
    "MemoryStore",
    "MemoryWorkers",
    "bananas_backends",
    "connect_memory",
    "memory_backend",
    "store_for",
]

log = logging.getLogger("bananas.memory")


class MemoryQueue(MemoryUnique, MemoryGroups, MemoryWorkflows, MemoryCheckpoints, MemoryCancel, MemoryPart):
    """:class:`~bananas.protocols.Queue` over a :class:`MemoryStore` (and its optional protocols)."""

    def __init__(
        self, store: MemoryStore, options: BackendOptions, capabilities: frozenset[Capability] = CAPABILITIES
    ) -> None:
        super().__init__(store, options)
        self._capabilities = capabilities

    def _require(self, capability: Capability, operation: str) -> None:
        require(self._capabilities, capability, backend="memory", operation=operation)

    async def ping(self) -> None:
        """Always answers."""

    async def enqueue(self, job: Job) -> None:
        """Store ``job`` and make it claimable (see :meth:`bananas.protocols.Queue.enqueue`)."""
        await self.enqueue_many([job])

    async def enqueue_many(self, jobs: Sequence[Job]) -> None:
        """Enqueue every job, all or nothing."""
        encoded = [(check_new(job), job.to_json()) for job in jobs]
        s = self._store
        with s.lock:
            s.expire(self._now())
            seen: set[str] = set()
            for job, _ in encoded:
                if job.id in s.jobs or job.id in seen:
                    raise DuplicateJob(f"a job with id {job.id!r} already exists; nothing was enqueued")
                seen.add(job.id)
            for job, text in encoded:
                s.add(job, text)
        s.work_signal.wake_all()

    async def claim(
        self,
        routing_keys: Sequence[str],
        priorities: Sequence[JobPriority] = ALL_PRIORITIES,
        *,
        limit: int = 1,
        lease: float = DEFAULT_LEASE_SECONDS,
        job_names: Collection[str] | None = None,
    ) -> list[Job]:
        """Claim up to ``limit`` ready jobs in routing-key, priority, FIFO order."""
        if job_names is not None:
            self._require(Capability.JOB_NAME_FILTER, "claim(job_names=...)")
        if isinstance(routing_keys, str):
            raise TypeError("routing_keys must be a sequence of routing keys, not one string")
        names = None if job_names is None else set(job_names)
        order = sorted({JobPriority.parse(p) for p in priorities}, key=lambda p: p.rank)
        s = self._store
        claimed: list[Job] = []
        token = uuid.uuid4().hex
        with s.lock:
            now = self._now()
            s.expire(now)
            for key in dict.fromkeys(routing_keys):
                for priority in order:
                    line = s.ready.get((key, priority))
                    while line and len(claimed) < limit:
                        if s.group_of:  # grouped jobs are ready: groups and limits decide (MemoryGroups)
                            found = self._take_turn((key, priority), names, now)
                        else:
                            found = self._next(line, names, now)
                        if found is None:
                            break
                        job = found.evolve(status=JobStatus.PROCESSING, updated_at=from_timestamp(now))
                        if not self._save_or_bury(job, now, "claimed"):
                            continue
                        s.processing[job.id] = now + lease
                        s.holders[job.id] = token
                        claimed.append(job.evolve(lease_token=token))
        return claimed

    def _next(self, line: deque[str], names: set[str] | None, now: float) -> Job | None:
        """The next readable job of ``line`` (with one of ``names``), taken off it; unreadable ones are buried."""
        for job_id in list(line):
            job = self._load_or_bury(job_id, now, "claimed")
            if job is None:
                continue  # buried, and so taken off the line
            if names is None or job.name in names:
                line.remove(job_id)
                return job
        return None

    # -- unreadable records: each hurts only itself ---------------------------------

    def _load_or_bury(self, job_id: str, now: float, what: str) -> Job | None:
        """The stored job, or ``None`` after burying it if it cannot be read. Holds the lock."""
        try:
            return self._store.load(job_id)
        except Exception as exc:  # hostile data: whatever decoding raises is this record's problem alone
            self._bury_unreadable(job_id, f"{what} job record unreadable: {exc}", now)
            return None

    def _save_or_bury(self, job: Job, now: float, what: str) -> bool:
        """Store ``job``; if it cannot be encoded, bury it instead and return False. Holds the lock."""
        try:
            self._store.save(job)
        except Exception as exc:
            self._bury_unreadable(job.id, f"{what} job record cannot be stored again: {exc}", now)
            return False
        return True

    def _bury_unreadable(self, job_id: str, error: str, now: float) -> None:
        """Dead, with a failed result saying why, and a WARNING; the caller holds the lock."""
        s = self._store
        log.warning("job %r sent to the dead letter queue: %s", job_id, error)
        s.unlink(job_id)
        forget_cancel(s, job_id)
        s.dead[job_id] = None
        s.unreadable[job_id] = (error, now)
        result = JobResult(job_id=job_id, status=JobStatus.FAILED, error=error, completed_at=from_timestamp(now))
        signal = MemoryResults(s, self._options).store_locked(result)
        if signal is not None:
            signal.wake_all()

    def _placeholder(self, job_id: str) -> Job | None:
        """What is known of a dead unreadable job, or ``None`` if ``job_id`` is not one."""
        entry = self._store.unreadable.get(job_id)
        if entry is None:
            return None
        error, when = entry
        at = from_timestamp(when)
        return Job(id=job_id, name="unknown", status=JobStatus.FAILED, error=error, created_at=at, updated_at=at)

    async def renew(self, jobs: Sequence[Job], lease: float = DEFAULT_LEASE_SECONDS) -> set[str]:
        """Extend the leases of the given claimed jobs; return the ids still held by their claims."""
        s = self._store
        with s.lock:
            deadline = self._now() + lease
            held = {job.id for job in jobs if s.holds(job)}
            for job_id in held:
                s.processing[job_id] = deadline
        return held

    async def complete(self, job: Job) -> Job:
        """Mark the job completed; its record expires after ``completed_job_ttl``."""
        with self._store.lock:
            return self._complete_locked(job)

    def _complete_locked(self, job: Job) -> Job:
        """:meth:`complete`; the caller holds the lock."""
        s = self._store
        now = self._now()
        self._fence(job)
        stored = self._load_or_bury(job.id, now, "completed")
        if stored is None:
            raise _buried(job.id)
        stored = policy.completed(stored, now)
        s.unlink(job.id)
        forget_cancel(s, job.id)  # final: a cancel request has nothing left to stop
        if not self._save_or_bury(stored, now, "completed"):
            raise _buried(job.id)
        s.expire_at("job", job.id, now + self._options.completed_job_ttl)
        return stored

    def _fence(self, job: Job) -> None:
        """Raise :class:`LeaseLost` unless ``job``'s claim still holds it. Holds the lock."""
        if not self._store.holds(job):
            raise LeaseLost(job.id, "no claim" if not job.lease_token else "")

    async def fail(self, job: Job, error: str, *, retry_at: RetryAt = BY_POLICY) -> Job:
        """Count a failed attempt: pending until ``retry_at``, or dead for ``None`` (see the protocol)."""
        s = self._store
        with s.lock:
            now = self._now()
            when = policy.decide_retry(job, retry_at, now)
            self._fence(job)
            s.unlink(job.id)
            found = self._load_or_bury(job.id, now, "failed")
            if found is None:
                raise _buried(job.id)
            return self._store_failed(policy.failed_attempt(found, error, now, when), now)

    def _store_failed(self, job: Job, now: float) -> Job:
        """Store a failed attempt's record (already unlinked) where its status says: scheduled
        for its retry, ready at once (no retry time) or dead. Holds the lock."""
        s = self._store
        if job.status is JobStatus.FAILED:
            s.kill(job)
            forget_cancel(s, job.id)
        elif job.scheduled_for is not None:
            s.scheduled[job.id] = job.scheduled_for.timestamp()
        else:
            s.push_ready(job)
        if not self._save_or_bury(job, now, "failed"):
            return self._placeholder(job.id) or job
        return job

    async def release(self, job: Job) -> None:
        """Put a claimed job back at the head of its line; a job no longer held is left alone."""
        s = self._store
        with s.lock:
            if not s.holds(job):
                return
            now = self._now()
            s.unlink(job.id)
            stored = self._load_or_bury(job.id, now, "released")
            if stored is None:
                return
            stored = policy.released(stored, now)
            if not self._save_or_bury(stored, now, "released"):
                return
            s.push_ready(stored, front=True)
        s.work_signal.wake_all()

    async def move_scheduled(self) -> int:
        """Make due scheduled and retrying jobs ready; return how many."""
        s = self._store
        with s.lock:
            now = self._now()
            due = sorted((when, job_id) for job_id, when in s.scheduled.items() if when <= now)
            moved = 0
            for _, job_id in due:
                del s.scheduled[job_id]
                found = self._load_or_bury(job_id, now, "scheduled")
                if found is None:
                    continue
                job = found.evolve(status=JobStatus.PENDING, scheduled_for=None, updated_at=from_timestamp(now))
                if self._save_or_bury(job, now, "scheduled"):
                    s.push_ready(job)
                    moved += 1
        if moved:
            s.work_signal.wake_all()
        return moved

    async def reap_expired(self) -> int:
        """Take back claimed jobs whose lease ran out, counting a failed attempt each."""
        s = self._store
        with s.lock:
            now = self._now()
            expired = [job_id for job_id, deadline in s.processing.items() if deadline <= now]
            reaped = 0
            woken = []
            for job_id in expired:
                s.unlink(job_id)
                found = self._load_or_bury(job_id, now, "expired")
                if found is not None:
                    stored = self._store_failed(policy.lease_expired(found, now), now)
                    await self.follow_reaped(stored)  # a dead workflow step: its dead link, under this lock
                    result = policy.reaped_result(stored, now)  # dead: final, so its failed result
                    if result is not None:
                        woken.append(MemoryResults(s, self._options).store_locked(result))
                    reaped += 1
        for signal in woken:
            if signal is not None:
                signal.wake_all()
        if expired:
            s.work_signal.wake_all()
        return reaped

    async def get_job(self, job_id: str) -> Job:
        """The stored job; raises :class:`~bananas.errors.JobNotFound`."""
        s = self._store
        with s.lock:
            s.expire(self._now())
            return self._placeholder(job_id) or s.load(job_id)

    async def depths(self) -> QueueDepths:
        """Counts of ready (per routing key and priority), processing, scheduled and dead jobs."""
        s = self._store
        with s.lock:
            ready = {key: len(line) for key, line in s.ready.items() if line}
            return QueueDepths(ready=ready, processing=len(s.processing), scheduled=len(s.scheduled), dead=len(s.dead))

    async def dead_letters(self, *, limit: int = 100, offset: int = 0) -> list[Job]:
        """Dead jobs, most recently dead first."""
        self._require(Capability.DEAD_LETTER_ADMIN, "dead_letters")
        s = self._store
        with s.lock:
            ids = list(reversed(s.dead))[offset : offset + limit]
            return [self._placeholder(job_id) or s.load(job_id) for job_id in ids]

    async def requeue_dead(self, job_ids: Sequence[str] | None = None) -> int:
        """Make dead jobs ready again with no attempts and no error."""
        self._require(Capability.DEAD_LETTER_ADMIN, "requeue_dead")
        s = self._store
        with s.lock:
            at = from_timestamp(self._now())
            chosen = [i for i in (list(s.dead) if job_ids is None else dict.fromkeys(job_ids)) if i in s.dead]
            for job_id in chosen:
                del s.dead[job_id]
                s.job_expiry.pop(job_id, None)
                s.unreadable.pop(job_id, None)
                try:
                    job = s.load(job_id).evolve(status=JobStatus.PENDING, attempts=0, error="", updated_at=at)
                    s.save(job)
                except Exception:  # requeued as it is: the next claim buries it again with its error
                    job = Job(id=job_id, name="unknown")
                s.push_ready(job)
        if chosen:
            s.work_signal.wake_all()
        return len(chosen)

    async def purge_dead(self, job_ids: Sequence[str] | None = None) -> int:
        """Delete dead jobs for good."""
        self._require(Capability.DEAD_LETTER_ADMIN, "purge_dead")
        s = self._store
        with s.lock:
            chosen = [i for i in (list(s.dead) if job_ids is None else dict.fromkeys(job_ids)) if i in s.dead]
            for job_id in chosen:
                s.unlink(job_id)
                s.jobs.pop(job_id, None)
                s.unreadable.pop(job_id, None)
        return len(chosen)

    # -- optional protocols: HandOff and CompleteAndStore ------------------------------

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
        """Claim; if nothing is ready, wait up to ``timeout`` real seconds for an enqueue and claim
        what it made ready (see :class:`~bananas.protocols.HandOff`)."""
        jobs = await self.claim(routing_keys, priorities, limit=limit, lease=lease)
        if jobs or timeout <= 0:
            return jobs
        s = self._store
        with s.lock:
            if waiter in s.waiter_wakes:
                s.waiter_wakes.discard(waiter)
                return []
            timeout = self._wait_bound(routing_keys, timeout)
            fut = s.work_signal.register()
        await s.work_signal.wait(fut, timeout)
        with s.lock:
            if waiter in s.waiter_wakes:
                s.waiter_wakes.discard(waiter)
                return []
        return await self.claim(routing_keys, priorities, limit=limit, lease=lease)

    async def wake_waiter(self, waiter: str) -> None:
        """End ``waiter``'s current or next wait."""
        s = self._store
        with s.lock:
            s.waiter_wakes.add(waiter)
        s.work_signal.wake_all()

    async def stop_waiting(self, waiter: str) -> list[Job]:
        """Forget ``waiter``; memory:// hands nothing over ahead of a claim, so nothing is returned."""
        with self._store.lock:
            self._store.waiter_wakes.discard(waiter)
        return []

    def shares_store_with(self, results: object) -> bool:
        """True for the results of this same store."""
        return isinstance(results, MemoryResults) and results._store is self._store

    async def complete_and_store(self, job: Job, result: JobResult) -> Job:
        """:meth:`complete` and storing ``result``, under one lock (fenced like :meth:`complete`)."""
        if result.job_id != job.id:
            raise ValueError(f"the result is for job {result.job_id!r}, not {job.id!r}")
        s = self._store
        with s.lock:
            stored = self._complete_locked(job)
            signal = MemoryResults(s, self._options).store_locked(result)
        if signal is not None:
            signal.wake_all()
        return stored

    async def wait_for_work(self, routing_keys: Sequence[str], timeout: float) -> None:
        """Return at once if work is ready, else when any arrives or after ``timeout`` real seconds."""
        s = self._store
        with s.lock:
            lines = self._lines(routing_keys)
            if lines and (not s.group_of or self._claimable(lines, self._now())):
                return
            timeout = self._wait_bound(routing_keys, timeout)
            fut = s.work_signal.register()
        await s.work_signal.wait(fut, timeout)

    def _wait_bound(self, routing_keys: Sequence[str], timeout: float) -> float:
        """``timeout``, cut short to when a group holding back ready jobs may start one. Holds the lock."""
        if not self._store.group_of:
            return timeout
        now = self._now()
        at = self._next_free(self._lines(routing_keys), now)
        return timeout if at is None else max(0.0, min(timeout, at - now))


def _buried(job_id: str) -> JobDecodeError:
    return JobDecodeError(f"the stored record of job {job_id!r} is unreadable; it was sent to the dead letter queue")


def connect_memory(url: str, options: BackendOptions) -> Backend:
    """The :class:`~bananas.plugins.types.BackendFactory` of ``memory://``; a ``namespace``
    option is checked by :func:`~bananas.backend.validate_namespace` (ConfigError)."""
    parts = urlsplit(url)
    name = (parts.netloc + parts.path).strip("/")
    namespace = options.extra.get("namespace")
    namespace = "" if namespace is None else validate_namespace(namespace)
    return memory_backend(store_for(name, namespace), options, url=url)


def memory_backend(
    store: MemoryStore,
    options: BackendOptions,
    *,
    url: str = "memory://",
    queue_class: type[MemoryQueue] = MemoryQueue,
    capabilities: frozenset[Capability] = CAPABILITIES,
) -> Backend:
    """A backend over ``store`` (also how tests build deliberately altered variants)."""
    queue = queue_class(store, options, capabilities)
    return Backend(
        name="memory",
        url=url,
        queue=queue,
        results=MemoryResults(store, options),
        workers=MemoryWorkers(store, options),
        scheduler=MemoryScheduler(store, options) if Capability.CRON in capabilities else None,
        capabilities=capabilities,
        options=options,
    )


@hookimpl
def bananas_backends() -> Iterable[BackendSpec]:
    """``memory://``: every optional capability except transactional enqueue."""
    return [
        BackendSpec(
            name="memory",
            schemes=("memory",),
            factory=connect_memory,
            capabilities=CAPABILITIES,
            description="in-process store shared by name; the reference backend and a test double",
            options=("namespace",),
        )
    ]

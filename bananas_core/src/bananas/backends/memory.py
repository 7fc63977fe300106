"""The in-memory backend, ``memory://``: the executable reference of the storage contracts.

Every ``connect("memory://NAME")`` (or ``memory://`` with ``namespace=...``) in one process
shares one store, so a client and a worker in the same process see the same jobs; a new
name is an empty store. Stores are thread-safe and work from any number of event loops.
Jobs are kept as wire-format JSON, like the other backends keep them, so what you read
back is a fresh decoded copy. Dead jobs stay until requeued or purged.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Sequence
from urllib.parse import urlsplit

from bananas.backend import Backend, BackendOptions, validate_namespace
from bananas.backends._memory_parts import MemoryResults, MemoryScheduler, MemoryWorkers
from bananas.backends._memory_store import CAPABILITIES, MemoryPart, MemoryStore, check_new, store_for
from bananas.capabilities import Capability, require
from bananas.errors import DuplicateJob
from bananas.job import ALL_PRIORITIES, Job, JobPriority, JobStatus, backoff_seconds
from bananas.plugins.hookspecs import hookimpl
from bananas.plugins.types import BackendSpec
from bananas.protocols import DEFAULT_LEASE_SECONDS, LEASE_EXPIRED_ERROR, QueueDepths
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


class MemoryQueue(MemoryPart):
    """:class:`~bananas.protocols.Queue` over a :class:`MemoryStore`."""

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
        with s.lock:
            now = self._now()
            s.expire(now)
            for key in dict.fromkeys(routing_keys):
                for priority in order:
                    line = s.ready.get((key, priority))
                    while line and len(claimed) < limit:
                        job_id = self._next(line, names, s)
                        if job_id is None:
                            break
                        job = s.load(job_id).evolve(status=JobStatus.PROCESSING, updated_at=from_timestamp(now))
                        s.save(job)
                        s.processing[job.id] = now + lease
                        claimed.append(job)
        return claimed

    @staticmethod
    def _next(line: deque[str], names: set[str] | None, s: MemoryStore) -> str | None:
        if names is None:
            return line.popleft()
        for job_id in line:
            if s.load(job_id).name in names:
                line.remove(job_id)
                return job_id
        return None

    async def renew(self, job_ids: Sequence[str], lease: float = DEFAULT_LEASE_SECONDS) -> set[str]:
        """Extend the leases of the given claimed jobs; return those still held."""
        s = self._store
        with s.lock:
            deadline = self._now() + lease
            held = {job_id for job_id in job_ids if job_id in s.processing}
            for job_id in held:
                s.processing[job_id] = deadline
        return held

    async def complete(self, job: Job) -> Job:
        """Mark the job completed; its record expires after ``completed_job_ttl``."""
        s = self._store
        with s.lock:
            now = self._now()
            stored = s.load(job.id).evolve(status=JobStatus.COMPLETED, updated_at=from_timestamp(now))
            s.unlink(job.id)
            s.save(stored)
            s.expire_at("job", job.id, now + self._options.completed_job_ttl)
        return stored

    async def fail(self, job: Job, error: str) -> Job:
        """Count a failed attempt: retry after 2**attempts seconds, or dead."""
        s = self._store
        with s.lock:
            now = self._now()
            s.unlink(job.id)
            stored = self._failed_locked(s.load(job.id), error, now, retry_delay=True)
        return stored

    def _failed_locked(self, job: Job, error: str, now: float, *, retry_delay: bool) -> Job:
        s = self._store
        attempts = job.attempts + 1
        at = from_timestamp(now)
        if attempts < job.max_retries:
            if retry_delay:
                due = now + backoff_seconds(attempts)
                job = job.evolve(status=JobStatus.PENDING, attempts=attempts, error=error,
                                 updated_at=at, scheduled_for=from_timestamp(due))  # fmt: skip
                s.scheduled[job.id] = due
            else:
                job = job.evolve(status=JobStatus.PENDING, attempts=attempts, error=error, updated_at=at)
                s.push_ready(job)
        else:
            job = job.evolve(status=JobStatus.FAILED, attempts=attempts, error=error, updated_at=at, scheduled_for=None)
            s.kill(job)
        s.save(job)
        return job

    async def release(self, job: Job) -> None:
        """Put a claimed job back at the head of its line; a job no longer held is left alone."""
        s = self._store
        with s.lock:
            if s.processing.pop(job.id, None) is None:
                return
            stored = s.load(job.id).evolve(status=JobStatus.PENDING, updated_at=from_timestamp(self._now()))
            s.save(stored)
            s.push_ready(stored, front=True)
        s.work_signal.wake_all()

    async def move_scheduled(self) -> int:
        """Make due scheduled and retrying jobs ready; return how many."""
        s = self._store
        with s.lock:
            now = self._now()
            due = sorted((when, job_id) for job_id, when in s.scheduled.items() if when <= now)
            for _, job_id in due:
                del s.scheduled[job_id]
                at = from_timestamp(now)
                job = s.load(job_id).evolve(status=JobStatus.PENDING, scheduled_for=None, updated_at=at)
                s.save(job)
                s.push_ready(job)
        if due:
            s.work_signal.wake_all()
        return len(due)

    async def reap_expired(self) -> int:
        """Take back claimed jobs whose lease ran out, counting a failed attempt each."""
        s = self._store
        with s.lock:
            now = self._now()
            expired = [job_id for job_id, deadline in s.processing.items() if deadline <= now]
            for job_id in expired:
                del s.processing[job_id]
                self._failed_locked(s.load(job_id), LEASE_EXPIRED_ERROR, now, retry_delay=False)
        if expired:
            s.work_signal.wake_all()
        return len(expired)

    async def get_job(self, job_id: str) -> Job:
        """The stored job; raises :class:`~bananas.errors.JobNotFound`."""
        s = self._store
        with s.lock:
            s.expire(self._now())
            return s.load(job_id)

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
            return [s.load(job_id) for job_id in ids]

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
                job = s.load(job_id).evolve(status=JobStatus.PENDING, attempts=0, error="", updated_at=at)
                s.save(job)
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
        return len(chosen)

    async def wait_for_work(self, routing_keys: Sequence[str], timeout: float) -> None:
        """Return at once if work is ready, else when any arrives or after ``timeout`` real seconds."""
        s = self._store
        with s.lock:
            keys = set(routing_keys)
            if any(line for (key, _), line in s.ready.items() if key in keys):
                return
            fut = s.work_signal.register()
        await s.work_signal.wait(fut, timeout)


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
            capabilities=CAPABILITIES,  # type: ignore[arg-type]  # attrs' frozenset converter
            description="in-process store shared by name; the reference backend and a test double",
        )
    ]

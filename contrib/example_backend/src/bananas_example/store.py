"""A table of job rows in process memory, for one event loop.

Each job is one row (its wire JSON plus where it is); every operation scans the rows, the
way a tiny SQL backend would query one table. Simple rather than fast.

It decides nothing about retries: the record each settle stores (completed, failed
attempt, released, taken back by the reaper) comes from :mod:`bananas.policy`, and
``fail`` stores the retry time (or dead letter) its caller decided.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from bananas import (
    BackendOptions,
    CapabilityNotSupported,
    DuplicateJob,
    InvalidJob,
    Job,
    JobDecodeError,
    JobNotFound,
    JobPriority,
    JobResult,
    JobStatus,
    LeaseLost,
    QueueDepths,
    Timeout,
    WorkerInfo,
    policy,
)
from bananas.job import ALL_PRIORITIES
from bananas.policy import BY_POLICY, RetryAt
from bananas.protocols import DEFAULT_LEASE_SECONDS

Where = Literal["ready", "scheduled", "processing", "dead", "done"]

log = logging.getLogger("bananas_example")


@dataclass
class Row:
    """One job and where it is."""

    job: str  # wire-format JSON
    where: Where
    routing_key: str
    priority: JobPriority
    order: int  # FIFO position among ready rows (a release takes a negative one)
    until: float = 0.0  # scheduled: due time; processing: lease end; done: record expiry
    holder: str = ""  # processing: the lease token of the claim that holds it
    unreadable: str = ""  # dead because its JSON could not be read: why


@dataclass
class ExampleStore:
    """Rows, results, workers and the futures of whoever waits."""

    rows: dict[str, Row] = field(default_factory=dict)
    results: dict[str, tuple[JobResult, float]] = field(default_factory=dict)
    workers: dict[str, tuple[WorkerInfo, float]] = field(default_factory=dict)
    result_waiters: dict[str, list[asyncio.Future[None]]] = field(default_factory=dict)
    work_waiters: list[asyncio.Future[None]] = field(default_factory=list)
    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def wake(self, waiters: list[asyncio.Future[None]]) -> None:
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        waiters.clear()


_STORES: dict[str, ExampleStore] = {}


def store_named(name: str) -> ExampleStore:
    """The process's store of that name."""
    return _STORES.setdefault(name, ExampleStore())


async def _wait(fut: asyncio.Future[None], timeout: float) -> bool:
    try:
        await asyncio.wait_for(fut, timeout)
        return True
    except TimeoutError:
        return False


class _Part:
    def __init__(self, store: ExampleStore, options: BackendOptions) -> None:
        self.s = store
        self.options = options

    def now(self) -> float:
        return self.options.clock()

    def stamp(self) -> datetime:
        return datetime.fromtimestamp(self.now(), UTC)

    async def close(self) -> None:
        pass


class ExampleQueue(_Part):
    """The queue: every method reads and writes rows."""

    async def ping(self) -> None:
        pass

    async def enqueue(self, job: Job) -> None:
        await self.enqueue_many([job])

    async def enqueue_many(self, jobs: Sequence[Job]) -> None:
        ids = [job.id for job in jobs]
        for job in jobs:
            if job.status not in (JobStatus.PENDING, JobStatus.SCHEDULED):
                raise InvalidJob(f"cannot enqueue job {job.id} with status {job.status.value}")
            if job.status is JobStatus.SCHEDULED and job.scheduled_for is None:
                raise InvalidJob(f"scheduled job {job.id} has no scheduled_for")
        taken = [i for i in ids if i in self.s.rows or ids.count(i) > 1]
        if taken:
            raise DuplicateJob(f"job id {taken[0]} is already used; nothing was enqueued")
        rows = [self._row(job) for job in jobs]  # encode everything before storing anything
        for job, row in zip(jobs, rows, strict=True):
            self.s.rows[job.id] = row
        self.s.wake(self.s.work_waiters)

    def _row(self, job: Job) -> Row:
        if job.status is JobStatus.SCHEDULED and job.scheduled_for is not None:
            return Row(job.to_json(), "scheduled", job.routing_key, job.priority, 0, job.scheduled_for.timestamp())
        return Row(job.to_json(), "ready", job.routing_key, job.priority, next(self.s.counter))

    def _put(self, job_id: str, job: Job, where: Where, until: float = 0.0, order: int | None = None) -> Job:
        row = self.s.rows[job_id]
        row.job, row.where, row.until, row.holder = job.to_json(), where, until, ""
        if order is not None:
            row.order = order
        return job

    def _job(self, job_id: str) -> Job:
        row = self.s.rows.get(job_id)
        if row is None or (row.where == "done" and row.until <= self.now()):
            self.s.rows.pop(job_id, None)
            raise JobNotFound(job_id)
        if row.unreadable:
            at = datetime.fromtimestamp(row.until, UTC)
            return Job(id=job_id, name="unknown", status=JobStatus.FAILED, error=row.unreadable,
                       created_at=at, updated_at=at)  # fmt: skip
        return Job.from_json(row.job)

    def _readable(self, job_id: str, what: str) -> Job | None:
        """The row's job, or None after burying a row nobody can read (it hurts only itself)."""
        try:
            return self._job(job_id)
        except JobNotFound:
            raise
        except Exception as exc:
            row = self.s.rows[job_id]
            row.where, row.holder, row.until, row.order = "dead", "", self.now(), next(self.s.counter)
            row.unreadable = f"{what} job record unreadable: {exc}"
            log.warning("job %r sent to the dead letter queue: %s", job_id, row.unreadable)
            failed = JobResult(job_id=job_id, status=JobStatus.FAILED, error=row.unreadable, completed_at=self.stamp())
            self.s.results[job_id] = (failed, self.now() + self.options.result_failure_ttl)
            self.s.wake(self.s.result_waiters.pop(job_id, []))
            return None

    def _held(self, job: Job) -> Row:
        """The row of ``job`` if its claim still holds it; raises :class:`LeaseLost` otherwise."""
        row = self.s.rows.get(job.id)
        if row is None or row.where != "processing" or not job.lease_token or row.holder != job.lease_token:
            raise LeaseLost(job.id)
        return row

    async def claim(
        self,
        routing_keys: Sequence[str],
        priorities: Sequence[JobPriority] = ALL_PRIORITIES,
        *,
        limit: int = 1,
        lease: float = DEFAULT_LEASE_SECONDS,
        job_names: Collection[str] | None = None,
    ) -> list[Job]:
        if job_names is not None:
            raise CapabilityNotSupported("the example backend cannot filter claims by job name")
        keys = list(dict.fromkeys(routing_keys))
        ranks = {JobPriority.parse(p) for p in priorities}
        candidates = sorted(
            (keys.index(row.routing_key), row.priority.rank, row.order, job_id)
            for job_id, row in self.s.rows.items()
            if row.where == "ready" and row.routing_key in keys and row.priority in ranks
        )
        claimed = []
        token = uuid.uuid4().hex
        for *_, job_id in candidates:
            if len(claimed) == limit:
                break
            found = self._readable(job_id, "claimed")
            if found is None:
                continue
            job = found.evolve(status=JobStatus.PROCESSING, updated_at=self.stamp())
            self._put(job_id, job, "processing", self.now() + lease)
            self.s.rows[job_id].holder = token
            claimed.append(job.evolve(lease_token=token))
        return claimed

    async def renew(self, jobs: Sequence[Job], lease: float = DEFAULT_LEASE_SECONDS) -> set[str]:
        held: set[str] = set()
        for job in jobs:
            try:
                self._held(job).until = self.now() + lease
            except LeaseLost:
                continue
            held.add(job.id)
        return held

    async def complete(self, job: Job) -> Job:
        self._held(job)
        found = self._readable(job.id, "completed")
        if found is None:
            raise JobDecodeError(f"job {job.id!r} is unreadable; it was sent to the dead letter queue")
        done = policy.completed(found, self.now())
        return self._put(job.id, done, "done", self.now() + self.options.completed_job_ttl)

    async def fail(self, job: Job, error: str, *, retry_at: RetryAt = BY_POLICY) -> Job:
        # The core decides (bananas.policy); this backend only stores the record it gives.
        when = policy.decide_retry(job, retry_at, self.now())
        self._held(job)
        found = self._readable(job.id, "failed")
        if found is None:
            raise JobDecodeError(f"job {job.id!r} is unreadable; it was sent to the dead letter queue")
        return self._store_failed(policy.failed_attempt(found, error, self.now(), when))

    def _store_failed(self, job: Job) -> Job:
        """Put a failed attempt's record where its status says: dead, scheduled or ready."""
        if job.status is JobStatus.FAILED:
            return self._put(job.id, job, "dead", order=next(self.s.counter))
        if job.scheduled_for is not None:
            return self._put(job.id, job, "scheduled", job.scheduled_for.timestamp())
        return self._put(job.id, job, "ready", order=next(self.s.counter))

    async def release(self, job: Job) -> None:
        try:
            self._held(job)
        except LeaseLost:
            return  # no longer ours to hand back
        found = self._readable(job.id, "released")
        if found is not None:
            back = policy.released(found, self.now())
            self._put(job.id, back, "ready", order=-next(self.s.counter))
            self.s.wake(self.s.work_waiters)

    async def move_scheduled(self) -> int:
        now = self.now()
        due = sorted((row.until, i) for i, row in self.s.rows.items() if row.where == "scheduled" and row.until <= now)
        moved = 0
        for _, job_id in due:
            found = self._readable(job_id, "scheduled")
            if found is not None:
                job = found.evolve(status=JobStatus.PENDING, scheduled_for=None, updated_at=self.stamp())
                self._put(job_id, job, "ready", order=next(self.s.counter))
                moved += 1
        if moved:
            self.s.wake(self.s.work_waiters)
        return moved

    async def reap_expired(self) -> int:
        expired = [i for i, row in self.s.rows.items() if row.where == "processing" and row.until <= self.now()]
        reaped = 0
        for job_id in expired:
            found = self._readable(job_id, "failed")
            if found is not None:
                stored = self._store_failed(policy.lease_expired(found, self.now()))
                result = policy.reaped_result(stored, self.now())  # dead: final, so its failed result
                if result is not None:
                    self.s.results[job_id] = (result, self.now() + self.options.result_failure_ttl)
                    self.s.wake(self.s.result_waiters.pop(job_id, []))
                reaped += 1
        return reaped

    async def get_job(self, job_id: str) -> Job:
        return self._job(job_id)

    async def depths(self) -> QueueDepths:
        ready: dict[tuple[str, JobPriority], int] = {}
        count = dict.fromkeys(("processing", "scheduled", "dead"), 0)
        for row in self.s.rows.values():
            if row.where == "ready":
                ready[(row.routing_key, row.priority)] = ready.get((row.routing_key, row.priority), 0) + 1
            elif row.where in count:
                count[row.where] += 1
        return QueueDepths(ready=ready, **count)

    def _dead(self, job_ids: Sequence[str] | None) -> list[str]:
        dead = sorted((row.order, i) for i, row in self.s.rows.items() if row.where == "dead")
        return [i for _, i in dead if job_ids is None or i in job_ids]

    async def dead_letters(self, *, limit: int = 100, offset: int = 0) -> list[Job]:
        return [self._job(i) for i in self._dead(None)[::-1][offset : offset + limit]]

    async def requeue_dead(self, job_ids: Sequence[str] | None = None) -> int:
        chosen = self._dead(job_ids)
        for job_id in chosen:
            row = self.s.rows[job_id]
            if row.unreadable:  # back in line as it is: the next claim buries it again
                row.where, row.unreadable, row.order = "ready", "", next(self.s.counter)
                continue
            job = self._job(job_id).evolve(status=JobStatus.PENDING, attempts=0, error="", updated_at=self.stamp())
            self._put(job_id, job, "ready", order=next(self.s.counter))
        return len(chosen)

    async def purge_dead(self, job_ids: Sequence[str] | None = None) -> int:
        chosen = self._dead(job_ids)
        for job_id in chosen:
            del self.s.rows[job_id]
        return len(chosen)

    async def wait_for_work(self, routing_keys: Sequence[str], timeout: float) -> None:
        if any(row.where == "ready" and row.routing_key in routing_keys for row in self.s.rows.values()):
            return
        fut = asyncio.get_running_loop().create_future()
        self.s.work_waiters.append(fut)
        await _wait(fut, timeout)


class ExampleResults(_Part):
    """Results with their expiry time."""

    async def store(self, result: JobResult) -> None:
        ttl = self.options.result_success_ttl if result.is_success() else self.options.result_failure_ttl
        self.s.results[result.job_id] = (result, self.now() + ttl)
        self.s.wake(self.s.result_waiters.pop(result.job_id, []))

    async def get(self, job_id: str) -> JobResult | None:
        result, expires = self.s.results.get(job_id, (None, 0.0))
        return result if expires > self.now() else None

    async def wait(self, job_id: str, timeout: float) -> JobResult:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (result := await self.get(job_id)) is None:
            fut = loop.create_future()
            self.s.result_waiters.setdefault(job_id, []).append(fut)
            if not await _wait(fut, deadline - loop.time()):
                raise Timeout(f"no result for job {job_id} after {timeout} s")
        return result

    async def delete(self, job_id: str) -> None:
        self.s.results.pop(job_id, None)


class ExampleWorkers(_Part):
    """Worker announcements with their expiry time."""

    async def heartbeat(self, info: WorkerInfo, ttl: float) -> None:
        self.s.workers[info.id] = (info, self.now() + ttl)

    async def deregister(self, worker_id: str) -> None:
        self.s.workers.pop(worker_id, None)

    async def workers(self) -> list[WorkerInfo]:
        return [info for _, (info, until) in sorted(self.s.workers.items()) if until > self.now()]

"""The state of one ``memory://`` store, and what every part of the backend shares."""

from __future__ import annotations

import heapq
import threading
from collections import deque

from bananas.backend import BackendOptions
from bananas.backends._signal import Signal
from bananas.capabilities import Capability
from bananas.errors import InvalidJob, JobNotFound
from bananas.groups import GroupLimit
from bananas.job import Job, JobPriority, JobResult, JobStatus
from bananas.protocols import ScheduleState, WorkerInfo

__all__ = ["CAPABILITIES", "MemoryPart", "MemoryStore", "check_new", "store_for"]

CAPABILITIES = frozenset(Capability) - {Capability.TRANSACTIONAL_ENQUEUE}
_Ready = tuple[str, JobPriority]


class MemoryStore:
    """Everything one ``memory://`` name holds. Guard every access with :attr:`lock`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.jobs: dict[str, str] = {}  # id -> wire-format JSON
        self.ready: dict[_Ready, deque[str]] = {}
        self.processing: dict[str, float] = {}  # id -> lease deadline
        self.holders: dict[str, str] = {}  # claimed id -> lease token of the claim holding it
        self.unreadable: dict[str, tuple[str, float]] = {}  # dead unreadable id -> (error, when it died)
        self.scheduled: dict[str, float] = {}  # id -> when it becomes ready
        self.dead: dict[str, None] = {}  # ids in the order they died (oldest first)
        self.job_expiry: dict[str, float] = {}  # finished job id -> when its record goes
        self.results: dict[str, tuple[JobResult, float]] = {}  # id -> (result, expires at)
        self.expiries: list[tuple[float, str, str]] = []  # heap of (when, "job"|"result", id)
        self.schedules: dict[str, ScheduleState] = {}
        self.workers: dict[str, tuple[WorkerInfo, float]] = {}  # id -> (info, expires at)
        self.work_signal = Signal()
        self.waiter_wakes: set[str] = set()  # hand-off waiters asked to end their current or next wait
        self.unique: dict[str, tuple[str, float]] = {}  # unique key -> (id of the job holding it, unique_for)
        self.result_signals: dict[str, Signal] = {}
        self.group_limits: dict[str, GroupLimit] = {}  # group name or "*" -> its stored limit
        self.group_of: dict[str, str] = {}  # ready grouped id -> its group
        self.line_groups: dict[_Ready, dict[str, int]] = {}  # line -> group -> how many of its ids it holds
        self.running: dict[str, str] = {}  # claimed grouped id -> its group (a slot while its lease runs)
        self.slots: dict[str, set[str]] = {}  # group -> its ids in ``running``
        self.starts: dict[str, deque[float]] = {}  # group -> times of its claims, oldest first
        self.served: dict[_Ready, dict[str, int]] = {}  # line -> participant ("" = no group) -> turn last served
        self.turns = 0  # counts every turn served, for ``served``

    # -- helpers; the caller holds the lock ------------------------------------------

    def load(self, job_id: str) -> Job:
        text = self.jobs.get(job_id)
        if text is None:
            raise JobNotFound(job_id)
        return Job.from_json(text)

    def save(self, job: Job) -> None:
        self.jobs[job.id] = job.to_json()

    def add(self, job: Job, text: str) -> None:
        """Store a new job (``text`` is its JSON) as ready or scheduled."""
        self.jobs[job.id] = text
        if job.status is JobStatus.SCHEDULED:
            assert job.scheduled_for is not None
            self.scheduled[job.id] = job.scheduled_for.timestamp()
        else:
            self.push_ready(job)

    def push_ready(self, job: Job, *, front: bool = False) -> None:
        line = self.ready.setdefault((job.routing_key, job.priority), deque())
        line.appendleft(job.id) if front else line.append(job.id)
        if job.group is not None:
            self.group_of[job.id] = job.group
            counts = self.line_groups.setdefault((job.routing_key, job.priority), {})
            counts[job.group] = counts.get(job.group, 0) + 1

    def take_grouped(self, line: _Ready, job_id: str) -> str | None:
        """``job_id`` leaves ``line``'s group counts; its group, or ``None`` for a job without one."""
        group = self.group_of.pop(job_id, None)
        counts = self.line_groups.get(line)
        if group is not None and counts is not None and group in counts:
            counts[group] -= 1
            if not counts[group]:
                del counts[group]
        return group

    def unlink(self, job_id: str) -> None:
        """Take ``job_id`` out of every place it may be waiting (not out of ``jobs``)."""
        self.processing.pop(job_id, None)
        self.holders.pop(job_id, None)
        group = self.running.pop(job_id, None)
        if group is not None:
            self.slots[group].discard(job_id)
            if not self.slots[group]:
                del self.slots[group]
            self.work_signal.wake_all()  # a group's slot is free: its held-back jobs may go
        self.scheduled.pop(job_id, None)
        self.dead.pop(job_id, None)
        self.job_expiry.pop(job_id, None)
        for key, line in self.ready.items():
            if job_id in line:
                line.remove(job_id)
                self.take_grouped(key, job_id)
        self.group_of.pop(job_id, None)

    def expire(self, now: float) -> None:
        """Forget finished jobs and results whose TTL has run out."""
        while self.expiries and self.expiries[0][0] <= now:
            _, kind, key = heapq.heappop(self.expiries)
            if kind == "job" and self.job_expiry.get(key, now + 1) <= now:
                del self.job_expiry[key]
                self.jobs.pop(key, None)
            elif kind == "result" and key in self.results and self.results[key][1] <= now:
                del self.results[key]

    def expire_at(self, kind: str, key: str, when: float) -> None:
        heapq.heappush(self.expiries, (when, kind, key))
        if kind == "job":
            self.job_expiry[key] = when

    def kill(self, job: Job) -> None:
        """Park an already-saved failed job in the dead letter queue (kept until purged)."""
        self.dead[job.id] = None

    def holds(self, job: Job) -> bool:
        """True while ``job``'s claim (its lease token) still holds the job."""
        return bool(job.lease_token) and job.id in self.processing and self.holders.get(job.id) == job.lease_token

    def signal_for(self, job_id: str) -> Signal:
        return self.result_signals.setdefault(job_id, Signal())


_STORES: dict[tuple[str, str], MemoryStore] = {}
_STORES_LOCK = threading.Lock()


def store_for(name: str = "", namespace: str = "") -> MemoryStore:
    """The process-wide store of ``memory://NAME`` with ``namespace`` (created empty on first use)."""
    with _STORES_LOCK:
        return _STORES.setdefault((name, namespace), MemoryStore())


class MemoryPart:
    def __init__(self, store: MemoryStore, options: BackendOptions) -> None:
        self._store = store
        self._options = options

    def _now(self) -> float:
        return float(self._options.clock())

    async def close(self) -> None:
        """Nothing to release; idempotent."""


def check_new(job: Job) -> Job:
    if not isinstance(job, Job):
        raise InvalidJob(f"expected a Job, got {type(job).__name__}")
    if job.status is JobStatus.SCHEDULED and job.scheduled_for is None:
        raise InvalidJob(f"job {job.id!r} is 'scheduled' but has no scheduled_for time")
    if job.status not in (JobStatus.PENDING, JobStatus.SCHEDULED):
        raise InvalidJob(
            f"job {job.id!r} has status {job.status.value!r}; only pending or scheduled jobs can be enqueued"
        )
    return job

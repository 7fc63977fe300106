"""memory://'s :class:`~bananas.protocols.Cancellation`, under the store's lock (a workflow
step's dead link followed under the same lock)."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bananas.backend import BackendOptions
from bananas.backends._memory_store import MemoryStore
from bananas.cancel import CancelOutcome, cancelled_record
from bananas.capabilities import Capability
from bananas.errors import JobNotFound, LeaseLost
from bananas.job import Job, JobStatus

__all__ = ["MemoryCancel", "forget_cancel"]

_REQUESTED: weakref.WeakKeyDictionary[MemoryStore, set[str]] = weakref.WeakKeyDictionary()


class MemoryCancel:
    """Mixed into :class:`~bananas.backends.memory.MemoryQueue`."""

    _store: MemoryStore
    _options: BackendOptions

    if TYPE_CHECKING:  # provided by MemoryQueue

        def _require(self, capability: Capability, operation: str) -> None: ...
        def _now(self) -> float: ...
        async def _settle_step(self, job: Job, state: str, value: str, error: str = "") -> bool: ...

    def _expire_finished(self, job_id: str, now: float) -> None:
        """A cancelled record goes after the completed-job TTL, like a completed one. Holds the lock."""
        self._store.expire_at("job", job_id, now + self._options.completed_job_ttl)

    async def cancel(self, job_id: str) -> CancelOutcome:
        """Cancel a job not started, ask a running one to stop (see the protocol)."""
        self._require(Capability.CANCEL, "cancel")
        s = self._store
        with s.lock:
            now = self._now()
            s.expire(now)
            if job_id in s.unreadable:
                return CancelOutcome.ALREADY_FINISHED  # dead
            if job_id not in s.jobs:
                raise JobNotFound(job_id)
            job = s.load(job_id)
            if job.status.is_final:
                return CancelOutcome.ALREADY_FINISHED
            if job_id in s.processing:
                _REQUESTED.setdefault(s, set()).add(job_id)
                return CancelOutcome.REQUESTED
            s.unlink(job_id)
            stored = cancelled_record(job, now)
            s.save(stored)
            self._expire_finished(job_id, now)
            created = await self._settle_step(stored, "cancelled", "null", stored.error)
        if created:
            s.work_signal.wake_all()
        return CancelOutcome.CANCELLED

    async def cancel_requested(self, jobs: Sequence[Job]) -> set[str]:
        """The ids of ``jobs`` marked cancel-requested."""
        with self._store.lock:
            asked = _REQUESTED.get(self._store, set())
            return {job.id for job in jobs if job.id in asked}

    async def settle_cancelled(self, job: Job, error: str) -> Job:
        """Store claimed ``job`` as cancelled while its claim holds it (a workflow step follows its
        dead link under the same lock); a job already cancelled is returned as stored;
        :class:`LeaseLost` otherwise."""
        self._require(Capability.CANCEL, "cancel")
        s = self._store
        with s.lock:
            if not s.holds(job):
                if job.lease_token and _cancelled(s, job.id):
                    return s.load(job.id)  # settled already: a repeat changes nothing
                raise LeaseLost(job.id, "no claim" if not job.lease_token else "")
            now = self._now()
            stored = cancelled_record(s.load(job.id), now, error)
            s.unlink(job.id)
            s.save(stored)
            self._expire_finished(job.id, now)
            forget_cancel(s, job.id)
            created = await self._settle_step(stored, "cancelled", "null", error)
        if created:
            s.work_signal.wake_all()
        return stored


def _cancelled(store: MemoryStore, job_id: str) -> bool:
    """Whether ``job_id`` is stored cancelled (an unreadable record is not). Holds the lock."""
    try:
        return store.load(job_id).status is JobStatus.CANCELLED
    except Exception:  # hostile data: an unreadable record is no cancelled job
        return False


def forget_cancel(store: MemoryStore, job_id: str) -> None:
    """Drop ``job_id``'s cancel request, if any (the job reached a final state). Holds the lock."""
    asked = _REQUESTED.get(store)
    if asked is not None:
        asked.discard(job_id)

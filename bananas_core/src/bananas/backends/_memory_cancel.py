"""memory://'s :class:`~bananas.protocols.Cancellation`, under the store's lock."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bananas.backend import BackendOptions
from bananas.backends._memory_store import MemoryStore
from bananas.cancel import CancelOutcome, cancelled_record
from bananas.capabilities import Capability
from bananas.errors import JobNotFound, LeaseLost
from bananas.job import Job

__all__ = ["MemoryCancel"]

_REQUESTED: weakref.WeakKeyDictionary[MemoryStore, set[str]] = weakref.WeakKeyDictionary()


class MemoryCancel:
    """Mixed into :class:`~bananas.backends.memory.MemoryQueue`."""

    _store: MemoryStore
    _options: BackendOptions

    if TYPE_CHECKING:  # provided by MemoryQueue

        def _require(self, capability: Capability, operation: str) -> None: ...
        def _now(self) -> float: ...

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
            s.save(cancelled_record(job, now))
            self._expire_finished(job_id, now)
        return CancelOutcome.CANCELLED

    async def cancel_requested(self, jobs: Sequence[Job]) -> set[str]:
        """The ids of ``jobs`` marked cancel-requested."""
        with self._store.lock:
            asked = _REQUESTED.get(self._store, set())
            return {job.id for job in jobs if job.id in asked}

    async def settle_cancelled(self, job: Job, error: str) -> Job:
        """Store claimed ``job`` as cancelled while its claim holds it; :class:`LeaseLost` otherwise."""
        self._require(Capability.CANCEL, "cancel")
        s = self._store
        with s.lock:
            if not s.holds(job):
                raise LeaseLost(job.id, "no claim" if not job.lease_token else "")
            now = self._now()
            stored = cancelled_record(s.load(job.id), now, error)
            s.unlink(job.id)
            s.save(stored)
            self._expire_finished(job.id, now)
            _REQUESTED.get(s, set()).discard(job.id)
            return stored

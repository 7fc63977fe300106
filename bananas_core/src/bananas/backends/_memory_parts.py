"""``memory://`` results, cron storage and worker registry."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import attrs

from bananas.backends._memory_store import MemoryPart, check_new
from bananas.backends._signal import Signal
from bananas.errors import DuplicateJob, Timeout
from bananas.job import Job, JobResult
from bananas.protocols import ScheduleState, WorkerInfo

__all__ = ["MemoryResults", "MemoryScheduler", "MemoryWorkers"]


class MemoryResults(MemoryPart):
    """:class:`~bananas.protocols.ResultBackend` over a :class:`MemoryStore`; TTLs follow the clock."""

    async def store(self, result: JobResult) -> None:
        """Store ``result`` for its TTL and wake its waiters."""
        with self._store.lock:
            signal = self.store_locked(result)
        if signal is not None:
            signal.wake_all()

    def store_locked(self, result: JobResult) -> Signal | None:
        """Store ``result`` (the caller holds the store's lock); return its waiters' signal to wake."""
        s = self._store
        ttl = self._options.result_success_ttl if result.is_success() else self._options.result_failure_ttl
        expires = self._now() + ttl
        s.results[result.job_id] = (result, expires)
        s.expire_at("result", result.job_id, expires)
        return s.result_signals.pop(result.job_id, None)

    async def get(self, job_id: str) -> JobResult | None:
        """The stored result, or ``None``."""
        s = self._store
        with s.lock:
            s.expire(self._now())
            entry = s.results.get(job_id)
        return None if entry is None else entry[0]

    async def wait(self, job_id: str, timeout: float) -> JobResult:
        """The result, waiting up to ``timeout`` real seconds; raises :class:`~bananas.errors.Timeout`."""
        deadline = time.monotonic() + timeout
        s = self._store
        while True:
            with s.lock:
                s.expire(self._now())
                entry = s.results.get(job_id)
                if entry is not None:
                    return entry[0]
                signal = s.signal_for(job_id)
                fut = signal.register()
            left = deadline - time.monotonic()
            if not (left > 0 and await signal.wait(fut, left)):
                signal.discard(fut)
                with s.lock:
                    if not signal and s.result_signals.get(job_id) is signal:
                        del s.result_signals[job_id]
                raise Timeout(f"no result for job {job_id!r} within {timeout:g} seconds")

    async def delete(self, job_id: str) -> None:
        """Forget the result."""
        with self._store.lock:
            self._store.results.pop(job_id, None)


class MemoryScheduler(MemoryPart):
    """:class:`~bananas.protocols.Scheduler` over a :class:`MemoryStore`."""

    async def fire(self, schedule_id: str, tick: datetime, job: Job, next_run: datetime) -> bool:
        """Enqueue ``job`` for ``tick`` unless this or a later tick already fired."""
        text = check_new(job).to_json()
        s = self._store
        with s.lock:
            state = s.schedules.get(schedule_id) or ScheduleState(schedule_id=schedule_id)
            if state.last_run is not None and state.last_run >= tick:
                return False
            if job.id in s.jobs:
                raise DuplicateJob(f"a job with id {job.id!r} already exists; the tick was not fired")
            s.add(job, text)
            s.schedules[schedule_id] = attrs.evolve(
                state, last_run=tick, next_run=next_run, run_count=state.run_count + 1
            )
        s.work_signal.wake_all()
        return True

    async def record(
        self,
        schedule_id: str,
        *,
        next_run: datetime | None = None,
        last_success: datetime | None = None,
        last_error: str | None = None,
    ) -> None:
        """Update the given fields of the schedule's state."""
        changes: dict[str, Any] = {}
        if next_run is not None:
            changes["next_run"] = next_run
        if last_success is not None:
            changes["last_success"] = last_success
        if last_error is not None:
            changes["last_error"] = last_error
        with self._store.lock:
            state = self._store.schedules.get(schedule_id) or ScheduleState(schedule_id=schedule_id)
            self._store.schedules[schedule_id] = attrs.evolve(state, **changes)

    async def state(self, schedule_id: str) -> ScheduleState | None:
        """The schedule's state, or ``None``."""
        with self._store.lock:
            return self._store.schedules.get(schedule_id)

    async def states(self) -> list[ScheduleState]:
        """Every schedule's state, ordered by id."""
        with self._store.lock:
            return [self._store.schedules[k] for k in sorted(self._store.schedules)]


class MemoryWorkers(MemoryPart):
    """:class:`~bananas.protocols.WorkerRegistry` over a :class:`MemoryStore`."""

    async def heartbeat(self, info: WorkerInfo, ttl: float) -> None:
        """Announce ``info`` until ``ttl`` clock seconds from now."""
        now = self._now()
        with self._store.lock:
            self._store.workers[info.id] = (attrs.evolve(info, last_heartbeat=now), now + ttl)

    async def deregister(self, worker_id: str) -> None:
        """Remove the worker's record."""
        with self._store.lock:
            self._store.workers.pop(worker_id, None)

    async def workers(self) -> list[WorkerInfo]:
        """Live workers, ordered by id."""
        now = self._now()
        with self._store.lock:
            for worker_id in [w for w, (_, until) in self._store.workers.items() if until <= now]:
                del self._store.workers[worker_id]
            return [self._store.workers[w][0] for w in sorted(self._store.workers)]

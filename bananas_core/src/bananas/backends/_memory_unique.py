"""Unique jobs on ``memory://``: :class:`~bananas.protocols.UniqueEnqueue` under the store's lock."""

from __future__ import annotations

from collections.abc import Sequence

from bananas.backends._memory_store import MemoryPart, check_new
from bananas.errors import DuplicateJob, JobDecodeError
from bananas.job import Job, JobStatus
from bananas.unique import UniqueKey, key_forgettable, key_held

__all__ = ["MemoryUnique"]


class MemoryUnique(MemoryPart):
    """``enqueue_unique``: keys live in ``store.unique`` (key -> holder id, its ``unique_for``)."""

    async def enqueue_unique(self, entries: Sequence[tuple[Job, UniqueKey | None]]) -> list[str]:
        """Enqueue each job unless its key is held (see :class:`~bananas.protocols.UniqueEnqueue`)."""
        encoded = [(check_new(job), job.to_json(), unique) for job, unique in entries]
        s = self._store
        with s.lock:
            now = self._now()
            s.expire(now)
            answers: list[str] = []
            writes: list[tuple[Job, str, UniqueKey | None]] = []
            taken: dict[str, str] = {}  # keys this batch takes -> the id that takes it
            for job, text, unique in encoded:
                holder = None if unique is None else taken.get(unique.key) or self._holder(unique.key, now)
                if holder is not None:
                    answers.append(holder)
                    continue
                if job.id in s.jobs or any(job.id == w[0].id for w in writes):
                    raise DuplicateJob(f"a job with id {job.id!r} already exists; nothing was enqueued")
                if unique is not None:
                    taken[unique.key] = job.id
                writes.append((job, text, unique))
                answers.append(job.id)
            for job, text, unique in writes:
                s.add(job, text)
                if unique is not None:
                    s.unique.pop(unique.key, None)  # to the end: the oldest come first
                    s.unique[unique.key] = (job.id, unique.unique_for)
            self._sweep(set(taken), now)
        if writes:
            s.work_signal.wake_all()
        return answers

    def _sweep(self, taken: set[str], now: float) -> None:
        """Forget the two longest-unseen keys that :func:`~bananas.unique.key_forgettable` lets
        go (move the others to the end), as the other backends do, so keys of finished jobs do
        not pile up. Holds the lock."""
        for key in [k for k in list(self._store.unique)[:2] if k not in taken]:
            entry = self._store.unique.pop(key)
            status, finished_at = self._state(entry[0])
            if not key_forgettable(status, finished_at, entry[1], now):
                self._store.unique[key] = entry

    def _holder(self, key: str, now: float) -> str | None:
        """The id of the job holding ``key`` at ``now``, or ``None``. Holds the lock."""
        entry = self._store.unique.get(key)
        if entry is None:
            return None
        status, finished_at = self._state(entry[0])
        return entry[0] if key_held(status, finished_at, entry[1], now) else None

    def _state(self, job_id: str) -> tuple[JobStatus | None, float | None]:
        """The status of ``job_id`` (``None`` if it is gone or unreadable) and its last update. Holds the lock."""
        s = self._store
        if job_id not in s.jobs or job_id in s.unreadable:
            return None, None
        try:
            job = s.load(job_id)
        except JobDecodeError:
            return None, None  # unreadable: it goes to the dead letter queue, so it holds nothing
        return job.status, job.updated_at.timestamp()

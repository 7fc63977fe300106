"""memory://'s :class:`~bananas.protocols.Checkpoints`: the last state saved per job, kept next
to the store and written under its lock, fenced by the claim."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from bananas.backends._memory_store import MemoryStore
from bananas.capabilities import Capability
from bananas.errors import LeaseLost
from bananas.job import Job

__all__ = ["MemoryCheckpoints"]

_CHECKPOINTS: weakref.WeakKeyDictionary[MemoryStore, dict[str, str]] = weakref.WeakKeyDictionary()


class MemoryCheckpoints:
    """Mixed into :class:`~bananas.backends.memory.MemoryQueue`."""

    _store: MemoryStore

    if TYPE_CHECKING:  # provided by MemoryQueue

        def _require(self, capability: Capability, operation: str) -> None: ...

    async def save_checkpoint(self, job: Job, state: str) -> None:
        """Keep ``state`` for ``job`` while its claim holds it; :class:`LeaseLost` otherwise."""
        self._require(Capability.CHECKPOINTS, "checkpoints (ctx.checkpoint)")
        s = self._store
        with s.lock:
            if not s.holds(job):
                raise LeaseLost(job.id, "no claim" if not job.lease_token else "")
            _CHECKPOINTS.setdefault(s, {})[job.id] = state

    async def load_checkpoint(self, job_id: str) -> str | None:
        """The last state saved for ``job_id``, or ``None``."""
        with self._store.lock:
            return _CHECKPOINTS.get(self._store, {}).get(job_id)

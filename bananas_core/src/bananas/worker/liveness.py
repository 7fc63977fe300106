"""Worker liveness, runtime side: who this worker is, announced to ``backend.workers``."""

from __future__ import annotations

import os
import socket
import uuid

from bananas.clock import Clock
from bananas.config import WorkerConfig
from bananas.protocols import WorkerInfo, WorkerRegistry

__all__ = ["Heartbeat", "new_worker_id"]


def new_worker_id() -> str:
    """A fleet-unique id: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Heartbeat:
    """Announces one worker: :meth:`beat` renews its record, :meth:`stop` removes it.

    The record lives ``ttl`` clock seconds after the last beat, so a worker that dies
    without stopping disappears on its own.
    """

    def __init__(
        self, registry: WorkerRegistry, config: WorkerConfig, *, clock: Clock, worker_id: str, ttl: float
    ) -> None:
        self.registry = registry
        self.config = config
        self.clock = clock
        self.worker_id = worker_id
        self.ttl = ttl
        self.started_at = clock()

    def info(self, in_flight: int) -> WorkerInfo:
        """This worker's record as of now."""
        return WorkerInfo(
            id=self.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            routing_keys=self.config.routing_keys,
            priorities=self.config.priorities,
            concurrency=self.config.concurrency,
            in_flight=in_flight,
            mode=self.config.mode.value,
            started_at=self.started_at,
            last_heartbeat=self.clock(),
        )

    async def beat(self, in_flight: int) -> None:
        """Announce or renew this worker's record."""
        await self.registry.heartbeat(self.info(in_flight), self.ttl)

    async def stop(self) -> None:
        """Remove this worker's record."""
        await self.registry.deregister(self.worker_id)

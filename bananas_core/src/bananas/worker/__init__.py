"""The worker runtime: :class:`Registry` of handlers, :class:`Executor` (one job at a time,
with timeout and outcome recording), :class:`Pool` (claiming, leases, side tasks, graceful
stop) and the ``bananas worker`` command."""

from bananas.worker.context import JobContext
from bananas.worker.executor import Executor, Outcome
from bananas.worker.liveness import Heartbeat, new_worker_id
from bananas.worker.pool import Pool
from bananas.worker.registry import Handler, Registry

__all__ = ["Executor", "Handler", "Heartbeat", "JobContext", "Outcome", "Pool", "Registry", "new_worker_id"]

"""Building a :class:`bananas.Backend` on one Redis connection."""

from __future__ import annotations

from bananas.backend import Backend, BackendOptions

from bananas_redis.connection import Connection
from bananas_redis.plugin import CAPABILITIES
from bananas_redis.queue import RedisQueue
from bananas_redis.results import RedisResults
from bananas_redis.scheduler import RedisScheduler
from bananas_redis.workers import RedisWorkers

__all__ = ["CAPABILITIES", "connect_redis"]


def connect_redis(url: str, options: BackendOptions) -> Backend:
    """A Backend whose parts share one lazily opened Redis client (closed once, by the queue)."""
    conn = Connection(url, options)
    return Backend(
        name="redis",
        url=url,
        queue=RedisQueue(conn),
        results=RedisResults(conn),
        workers=RedisWorkers(conn),
        scheduler=RedisScheduler(conn),
        capabilities=CAPABILITIES,
        options=options,
    )

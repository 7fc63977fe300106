"""RQ (Redis). Synchronous; the worker runs one job at a time (RQ has no in-process concurrency
knob), so we use SimpleWorker: one process, no fork per job (RQ's default Worker forks a child
for every job, which is several times slower)."""

from __future__ import annotations

import os
import sys
from typing import Any

from adapters import _common

STORE = "redis"
STYLE = "sync"
NOTES = "SimpleWorker (no fork per job), 1 job at a time (no concurrency knob), --quiet"
QUEUE = "bench"


def count(i: int, t: float | None = None) -> None:
    _common.count_sync(i, t)


def worker_argv(concurrency: int) -> list[str]:
    return [os.path.join(sys.prefix, "bin", "rq"), "worker", "-u", _common.redis_url(),
            "-w", "rq.worker.SimpleWorker", "--quiet", QUEUE]  # fmt: skip


class Producer:
    def open(self) -> None:
        import redis
        from rq import Queue

        self.q = Queue(QUEUE, connection=redis.Redis.from_url(_common.redis_url()))

    def close(self) -> None:
        pass

    def submit(self, i: int, t: float | None = None) -> Any:
        return self.q.enqueue(count, i, t)

    def submit_many(self, items: list[int]) -> Any:
        from rq import Queue

        return self.q.enqueue_many([Queue.prepare_data(count, args=(i,)) for i in items])

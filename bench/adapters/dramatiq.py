"""Dramatiq with the Redis broker. Synchronous actors; ONE worker process with 10 threads
(--processes 1 --threads 10; Dramatiq's default is 2 processes x 8 threads). No bulk API
(group() enqueues one message per job)."""

from __future__ import annotations

import os
import sys
from typing import Any

from adapters import _common

STORE = "redis"
STYLE = "sync"
NOTES = "--processes 1 --threads 10 (default middleware)"
NO_BULK = "Dramatiq has no bulk enqueue API (group() enqueues one message per job)"


def _broker() -> Any:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    b = RedisBroker(url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0"))
    dramatiq.set_broker(b)
    return b


broker = _broker()


def _actor() -> Any:
    import dramatiq

    @dramatiq.actor(actor_name="count", queue_name="bench")  # type: ignore[untyped-decorator]  # peer not in the repo venv
    def count(i: int, t: float | None = None) -> None:
        _common.count_sync(i, t)

    return count


count = _actor()


def worker_argv(concurrency: int) -> list[str]:
    return [os.path.join(sys.prefix, "bin", "dramatiq"), "adapters.dramatiq", "--processes", "1",
            "--threads", str(concurrency)]  # fmt: skip


class Producer:
    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def submit(self, i: int, t: float | None = None) -> Any:
        return count.send(i, t)

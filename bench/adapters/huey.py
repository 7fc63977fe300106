"""Huey on Redis (RedisHuey: BRPOP, no processing list, so a killed worker loses its job).
Synchronous; one consumer process with 10 worker threads (-w 10 -k thread). No bulk API."""

from __future__ import annotations

import os
import sys
from typing import Any

from adapters import _common

STORE = "redis"
STYLE = "sync"
NOTES = "huey_consumer -w 10 -k thread (one process), results stored (default), -q"
NO_BULK = "Huey has no bulk enqueue API"


def _huey() -> Any:
    from huey import RedisHuey

    return RedisHuey("bench", url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0"))


huey = _huey()


@huey.task(name="count")  # type: ignore[untyped-decorator]  # peer not in the repo venv
def count(i: int, t: float | None = None) -> None:
    _common.count_sync(i, t)


def worker_argv(concurrency: int) -> list[str]:
    return [os.path.join(sys.prefix, "bin", "huey_consumer"), "adapters.huey.huey", "-w", str(concurrency),
            "-k", "thread", "-q"]  # fmt: skip


class Producer:
    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def submit(self, i: int, t: float | None = None) -> Any:
        return count(i, t)

"""SAQ on Redis (system "saq") or on PostgreSQL (system "saq-pg"): asynchronous, concurrency=10
(its knob), one worker process (--workers 1). SAQ has no bulk submit API (Queue.map enqueues
one by one and waits for results)."""

from __future__ import annotations

import os
import sys
from typing import Any

from adapters import _common

STORE = "redis or postgres"
STYLE = "async"
NOTES = "concurrency=10, --workers 1"
NO_BULK = "SAQ has no bulk enqueue API"


async def count(ctx: dict[str, Any], *, i: int, t: float | None = None) -> None:
    await _common.count_async(i, t)


def _url() -> str:
    if _common.store() == "postgres":
        return _common.pg_url()
    return os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0")


def _queue() -> Any:
    from saq import Queue

    return Queue.from_url(_url(), name="bench")


settings: dict[str, Any] = {
    "queue": _queue(),
    "functions": [count],
    "concurrency": int(os.environ.get("BENCH_CONCURRENCY", "10")),
}


def worker_argv(concurrency: int) -> list[str]:
    os.environ["BENCH_CONCURRENCY"] = str(concurrency)
    return [os.path.join(sys.prefix, "bin", "saq"), "adapters.saq.settings", "--workers", "1"]


class Producer:
    async def open(self) -> None:
        self.queue = _queue()
        await self.queue.connect()

    async def close(self) -> None:
        await self.queue.disconnect()

    async def submit(self, i: int, t: float | None = None) -> Any:
        return await self.queue.enqueue("count", i=i, t=t)


async def setup() -> None:
    queue = _queue()
    await queue.connect()  # SAQ's PostgreSQL queue migrates its tables on connect
    await queue.disconnect()

"""arq (Redis). Asynchronous; max_jobs=10 (its concurrency knob), poll_delay=10 ms (the default
is 500 ms, which would only measure the poll). arq has no bulk submit API."""

from __future__ import annotations

import os
import sys
from typing import Any, ClassVar

from adapters import _common

STORE = "redis"
STYLE = "async"
NOTES = "max_jobs=10, poll_delay=0.01 s (default 0.5 s), results kept (default)"
NO_BULK = "arq has no bulk enqueue API"


async def count(ctx: dict[str, Any], i: int, t: float | None = None) -> None:
    await _common.count_async(i, t)


def _redis_settings() -> Any:
    from arq.connections import RedisSettings

    return RedisSettings.from_dsn(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0"))


class WorkerSettings:
    functions: ClassVar[list[Any]] = [count]
    max_jobs = int(os.environ.get("BENCH_CONCURRENCY", "10"))
    poll_delay = 0.01
    redis_settings = _redis_settings()


def worker_argv(concurrency: int) -> list[str]:
    os.environ["BENCH_CONCURRENCY"] = str(concurrency)
    return [os.path.join(sys.prefix, "bin", "arq"), "adapters.arq.WorkerSettings"]


class Producer:
    async def open(self) -> None:
        from arq import create_pool

        self.pool = await create_pool(_redis_settings())

    async def close(self) -> None:
        await self.pool.aclose()

    async def submit(self, i: int, t: float | None = None) -> Any:
        return await self.pool.enqueue_job("count", i, t)

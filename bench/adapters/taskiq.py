"""taskiq + taskiq-redis ListQueueBroker (a plain Redis list; BRPOP; no processing list, so a
killed worker loses its jobs). Asynchronous; --workers 1 --max-async-tasks 10. No bulk API."""

from __future__ import annotations

import os
import sys
from typing import Any

from adapters import _common

STORE = "redis"
STYLE = "async"
NOTES = "ListQueueBroker, --workers 1, --max-async-tasks 10, log level WARNING"
NO_BULK = "taskiq has no bulk kick API"


def _broker() -> Any:
    from taskiq_redis import ListQueueBroker

    return ListQueueBroker(url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0"), queue_name="bench")


broker = _broker()


@broker.task(task_name="count")  # type: ignore[untyped-decorator]  # peer not in the repo venv
async def count(i: int, t: float | None = None) -> None:
    await _common.count_async(i, t)


def worker_argv(concurrency: int) -> list[str]:
    return [os.path.join(sys.prefix, "bin", "taskiq"), "worker", "adapters.taskiq:broker", "--workers", "1",
            "--max-async-tasks", str(concurrency), "--log-level", "WARNING"]  # fmt: skip


class Producer:
    async def open(self) -> None:
        await broker.startup()

    async def close(self) -> None:
        await broker.shutdown()

    async def submit(self, i: int, t: float | None = None) -> Any:
        return await count.kiq(i, t)

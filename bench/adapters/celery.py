"""Celery with the Redis broker. Synchronous tasks; ONE worker process: the threads pool with 10
threads (-P threads -c 10; the default prefork pool would be 10 processes). No result backend.
No bulk API (group() publishes one message per job)."""

from __future__ import annotations

import os
import sys
from typing import Any

from adapters import _common

STORE = "redis"
STYLE = "sync"
NOTES = "-P threads -c 10 (one process), no result backend, -l WARNING, other settings default"
NO_BULK = "Celery has no bulk publish API (group() sends one message per job)"


def _app() -> Any:
    from celery import Celery

    a = Celery("bench", broker=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0"))
    a.conf.task_default_queue = "bench"
    a.conf.worker_hijack_root_logger = False
    return a


app = _app()


@app.task(name="count", ignore_result=True)  # type: ignore[untyped-decorator]  # peer not in the repo venv
def count(i: int, t: float | None = None) -> None:
    _common.count_sync(i, t)


def worker_argv(concurrency: int) -> list[str]:
    return [os.path.join(sys.prefix, "bin", "celery"), "-A", "adapters.celery:app", "worker", "-P", "threads",
            "-c", str(concurrency), "-l", "WARNING", "-Q", "bench"]  # fmt: skip


class Producer:
    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def submit(self, i: int, t: float | None = None) -> Any:
        return count.delay(i, t)

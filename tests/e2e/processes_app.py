"""The application the ``--processes`` tests run under the supervisor:
``python -m bananas.worker tests.e2e.processes_app:registry --processes N``.

With ``PROCESSES_APP_CRASH=1`` in the environment, importing it ends the process at once
with exit code 3, as a crashing native extension would: a worker that cannot start.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from bananas import Job, Registry
from bananas.worker import JobContext

if os.environ.get("PROCESSES_APP_CRASH") == "1":
    os._exit(3)

registry = Registry()
_hoard: list[bytes] = []


@registry.handler("whoami")
def whoami(ctx: JobContext, job: Job) -> int:
    """The pid of the worker process that ran the job."""
    return os.getpid()


def _log(path: str, **fields: Any) -> None:
    line = json.dumps({"pid": os.getpid(), "at": time.time(), **fields})
    with open(path, "a", encoding="utf-8") as f:  # one short append per line: atomic enough for tests
        f.write(line + "\n")


@registry.handler("record")
async def record(ctx: JobContext, job: Job) -> int:
    """Log a start line to ``payload["log"]``, sleep ``payload.get("sleep", 0)`` s, log a done line; return the pid."""
    path = job.payload["log"]
    _log(path, event="start", id=job.id, attempts=job.attempts)
    await asyncio.sleep(float(job.payload.get("sleep", 0)))
    _log(path, event="done", id=job.id)
    return os.getpid()


@registry.handler("metrics_port")
async def metrics_port(ctx: JobContext, job: Job) -> list[Any]:
    """``[pid, $BANANAS_METRICS_PORT]`` of the worker process, after ``payload`` seconds."""
    await asyncio.sleep(float(job.payload or 0))
    return [os.getpid(), os.environ.get("BANANAS_METRICS_PORT")]


@registry.handler("hoard")
def hoard(ctx: JobContext, job: Job) -> int:
    """Keep ``payload`` MB of memory for the life of the process (a leaking handler); return the pid."""
    _hoard.append(os.urandom(int(job.payload) * 1024 * 1024))
    return os.getpid()

"""The application the end-to-end tests run in real worker processes:
``python -m bananas.worker tests.e2e.app:registry``."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from bananas import Job, Registry
from bananas.worker import JobContext

registry = Registry()


@registry.handler("echo")
async def echo(ctx: JobContext, job: Job) -> Any:
    """Return the payload unchanged."""
    return job.payload


@registry.handler("echo_sync")
def echo_sync(ctx: JobContext, job: Job) -> Any:
    """Return the payload unchanged, from a plain function (run in a thread)."""
    return {"sync": job.payload}


@registry.handler("fail")
async def fail(ctx: JobContext, job: Job) -> None:
    """Always fail."""
    raise RuntimeError(f"failing on purpose (attempt {job.attempts + 1})")


def _log(path: str, **fields: Any) -> None:
    line = json.dumps({"pid": os.getpid(), "at": time.time(), **fields})
    with open(path, "a", encoding="utf-8") as f:  # one short append per line: atomic enough for tests
        f.write(line + "\n")


@registry.handler("record")
async def record(ctx: JobContext, job: Job) -> dict[str, Any]:
    """Log a start line to ``payload["log"]``, sleep ``payload.get("sleep", 0)`` seconds, log a done line.

    With ``payload["hang_first"]``, the first start (no earlier start logged) sleeps an hour:
    a worker killed then must not lose the job.
    """
    path = job.payload["log"]
    first = not os.path.exists(path)  # noqa: ASYNC240  (a test app: one tiny local check)
    _log(path, event="start", id=job.id, attempts=job.attempts)
    if job.payload.get("hang_first") and first:
        await asyncio.sleep(3600)
    await asyncio.sleep(float(job.payload.get("sleep", 0)))
    _log(path, event="done", id=job.id)
    return {"pid": os.getpid()}


@registry.handler("wait_forever")
async def wait_forever(ctx: JobContext, job: Job) -> None:
    """Log a start line to ``payload["log"]`` and wait forever; log ``cancelled`` when cancelled."""
    path = job.payload["log"]
    _log(path, event="start", id=job.id, attempts=job.attempts)
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        _log(path, event="cancelled", id=job.id)
        raise


@registry.handler("poll_cancelled")
def poll_cancelled(ctx: JobContext, job: Job) -> str:
    """From a thread: log a start line, poll ``ctx.cancelled`` until it is true, log ``stopped``, return."""
    path = job.payload["log"]
    _log(path, event="start", id=job.id, attempts=job.attempts)
    while not ctx.wait_cancelled_sync(0.05):
        pass
    _log(path, event="stopped", id=job.id)
    return "stopped"

"""The application the observability tests run in real worker processes:
``python -m bananas.worker tests.observability.metrics_app:registry``."""

from __future__ import annotations

import time
from typing import Any

from bananas import Job, Registry
from bananas.worker import JobContext

registry = Registry()


@registry.handler("ok")
async def ok(ctx: JobContext, job: Job) -> Any:
    """Succeed at once."""
    return job.payload


@registry.handler("flaky")
def flaky(ctx: JobContext, job: Job) -> str:
    """Fail the first attempt, succeed the next (a plain def: runs on a handler thread)."""
    if job.attempts == 0:
        raise RuntimeError("first attempt fails on purpose")
    return "second time lucky"


@registry.handler("doomed")
async def doomed(ctx: JobContext, job: Job) -> None:
    """Fail every attempt."""
    raise ValueError(f"failing on purpose (attempt {job.attempts + 1})")


@registry.handler("block_loop")
async def block_loop(ctx: JobContext, job: Job) -> None:
    """Block the event loop for ``payload`` seconds (what a wrong async handler does)."""
    time.sleep(float(job.payload))  # noqa: ASYNC251  (on purpose: the probe must notice)

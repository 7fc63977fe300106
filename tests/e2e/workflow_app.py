"""The application of the workflow crash tests, run by real worker processes:
``python -m bananas.worker tests.e2e.workflow_app:registry``. Every handler appends what it
started to the file named by ``$WORKFLOW_RUN_LOG`` (one short line per append)."""

from __future__ import annotations

import asyncio
import json
import os
import random
from typing import Any

from bananas import Job, Registry
from bananas.worker import JobContext

registry = Registry()


def _started(job: Job) -> None:
    line = json.dumps({"id": job.id, "name": job.name, "attempts": job.attempts, "pid": os.getpid()})
    with open(os.environ["WORKFLOW_RUN_LOG"], "a", encoding="utf-8") as f:
        f.write(line + "\n")


async def _work() -> None:
    await asyncio.sleep(random.uniform(0.0, 0.08))  # long enough for a SIGKILL to land mid-run


@registry.handler("wf_member")
async def member(ctx: JobContext, job: Job) -> Any:
    _started(job)
    await _work()
    return job.payload["n"]


@registry.handler("wf_callback")
async def callback(ctx: JobContext, job: Job) -> Any:
    _started(job)
    await _work()
    assert ctx.group_results is not None
    return sum(ctx.group_results)


@registry.handler("wf_step")
async def step(ctx: JobContext, job: Job) -> Any:
    _started(job)
    await _work()
    return (ctx.previous_result or 0) * 10 + job.payload["n"]


def _note(**fields: Any) -> None:
    with open(os.environ["WORKFLOW_RUN_LOG"], "a", encoding="utf-8") as f:
        f.write(json.dumps({"pid": os.getpid(), **fields}) + "\n")


@registry.handler("wf_count")
async def count(ctx: JobContext, job: Job) -> Any:
    """Count to 1,000 from the last checkpoint, saving one every 10 items."""
    start = ctx.checkpoint_state or 0
    for i in range(start, 1000):
        _note(item=i, attempts=job.attempts)
        await asyncio.sleep(0.003)
        if (i + 1) % 10 == 0:
            await ctx.checkpoint(i + 1)
            _note(checkpoint=i + 1, attempts=job.attempts)
    return 1000

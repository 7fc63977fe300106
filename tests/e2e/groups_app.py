"""The application the group tests run in real worker processes:
``python -m bananas.worker tests.e2e.groups_app:registry``."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from bananas import Job, Registry
from bananas.worker import JobContext

registry = Registry()


@registry.handler("span")
def span(ctx: JobContext, job: Job) -> dict[str, Any]:
    """Sleep ``payload["sleep"]`` seconds (in the worker's thread pool); the result (kept in the
    store) is when it started and ended and in which process. With ``payload["log"]``, a start
    line is also appended there at once (so a test knows which process to kill mid-job)."""
    start = time.time()
    if job.payload.get("log"):
        line = json.dumps({"id": job.id, "pid": os.getpid(), "at": start})
        with open(job.payload["log"], "a", encoding="utf-8") as f:
            f.write(line + "\n")
    time.sleep(float(job.payload.get("sleep", 0)))
    return {"start": start, "end": time.time(), "pid": os.getpid()}


@registry.handler("tick")
def tick(ctx: JobContext, job: Job) -> None:
    """Nothing at all (the fairness test drains many of these)."""

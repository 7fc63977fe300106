"""The application the dashboard's browser tests run in a real worker process:
``python -m bananas.worker tests.dashboard.app:registry``."""

from __future__ import annotations

import os
from typing import Any

from bananas import Job, Registry
from bananas.worker import JobContext

registry = Registry()
# Fires on a routing key no test worker serves, so its jobs only add to that key's depth.
registry.schedule("nightly-report", "0 3 * * *", "report", timezone="Europe/Paris", routing_key="cron")
registry.schedule("minutely-ping", "* * * * *", "report", routing_key="cron")


@registry.handler("flaky")
async def flaky(ctx: JobContext, job: Job) -> Any:
    """Fail with ``payload["message"]`` until the file ``payload["ok_file"]`` exists, then succeed."""
    if not os.path.exists(job.payload["ok_file"]):  # noqa: ASYNC240  (a test app: one tiny local check)
        raise RuntimeError(f"failing on purpose: {job.payload['message']}")
    return {"ran": True}


@registry.handler("report")
async def report(ctx: JobContext, job: Job) -> None:
    """Do nothing (the schedules' job)."""

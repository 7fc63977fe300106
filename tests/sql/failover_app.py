"""The handlers of the failover test's ``bananas worker`` processes.

``track`` appends the job's id to the file named by ``BANANAS_FAILOVER_LOG`` each time it runs
(one short ``O_APPEND`` write, so lines of concurrent workers never mix), then works for
``payload["work"]`` seconds.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from bananas.worker import Registry

registry = Registry()


@registry.handler("track")
async def track(ctx: Any, job: Any) -> None:
    fd = os.open(os.environ["BANANAS_FAILOVER_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (job.id + "\n").encode())
    finally:
        os.close(fd)
    await asyncio.sleep(float((job.payload or {}).get("work", 0.0)))

"""The app the failover tests run under ``bananas worker ha_app:registry``.

Every run of the ``ha`` handler is recorded on a separate tracking server
(``$BANANAS_HA_TRACK_URL``): ``RPUSH ran <job id>``, so the test counts executions per job.
Each run then takes 50 ms, so that a failover finds jobs running (claimed, not yet settled).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import redis.asyncio as aioredis
from bananas import Job, Registry
from bananas.worker import JobContext

registry = Registry()
_track: Any = None


@registry.handler("ha")
async def ha(ctx: JobContext, job: Job) -> str:
    """Record this run on the tracking server, work for 50 ms, then succeed."""
    global _track
    if _track is None:
        _track = aioredis.Redis.from_url(os.environ["BANANAS_HA_TRACK_URL"])
    await _track.rpush("ran", job.id)
    await asyncio.sleep(0.05)
    return job.id

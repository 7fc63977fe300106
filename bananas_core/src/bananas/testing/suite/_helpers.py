"""Small helpers shared by the suite's test classes."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.job import ALL_PRIORITIES, Job, JobPriority, JobStatus

_counter = itertools.count()


_AUTO: Any = object()


def new_job(clock: ManualClock, name: str = "task", *, payload: Any = _AUTO, **fields: Any) -> Job:
    """A pending job created at the clock's time (``delay=`` seconds makes it scheduled)."""
    delay = fields.pop("delay", None)
    payload = {"n": next(_counter)} if payload is _AUTO else payload
    job = Job.create(name, payload, now=clock.now(), **fields)
    if delay is not None:
        job = job.evolve(status=JobStatus.SCHEDULED, scheduled_for=clock.now() + timedelta(seconds=delay))
    return job


async def claim_ids(
    backend: Backend,
    routing_keys: Sequence[str] = ("default",),
    priorities: Sequence[JobPriority] = ALL_PRIORITIES,
    **kwargs: Any,
) -> list[str]:
    """Ids of the jobs one claim returns."""
    return [job.id for job in await backend.queue.claim(list(routing_keys), list(priorities), **kwargs)]


async def drain(backend: Backend, routing_keys: Sequence[str] = ("default",)) -> list[str]:
    """Claim one at a time until nothing is ready; the ids in claim order."""
    ids: list[str] = []
    while claimed := await claim_ids(backend, routing_keys):
        for job_id in claimed:
            assert job_id not in ids, f"job {job_id} was claimed twice while its lease ran"
        ids.extend(claimed)
    return ids

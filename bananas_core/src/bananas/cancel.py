"""Cancellation: ``client.cancel(job_id)`` and what every backend and the worker do with it.

A job that has not started (pending, scheduled, waiting for a retry) is cancelled at once: it
leaves the line it waits in and ends ``cancelled``, in one atomic write, and never runs. A
running job is marked *cancel-requested*; its worker learns it with its next lease renewal
(every ``lease / 3`` seconds), cancels the handler (an ``async def`` is cancelled, a plain
``def`` sees ``ctx.cancelled`` turn true and should return) and settles the attempt as
``cancelled``: no retry, no dead letter. A finished job (completed, dead or cancelled) is
left as it is. The rules of the records are here (:func:`cancelled_record`,
:func:`cancelled_result`), so every backend writes the same thing.
"""

from __future__ import annotations

import enum
from datetime import timedelta
from typing import TYPE_CHECKING

from bananas.capabilities import Capability
from bananas.job import Job, JobResult, JobStatus
from bananas.timefmt import from_timestamp

if TYPE_CHECKING:
    from bananas.backend import Backend

__all__ = [
    "CANCELLED_BEFORE_START",
    "CANCELLED_WHILE_RUNNING",
    "CancelOutcome",
    "cancel_job",
    "cancelled_record",
    "cancelled_result",
]

CANCELLED_BEFORE_START = "Cancelled: the job was cancelled before it ran"
"""The ``error`` of a job (and its result) cancelled before it started."""

CANCELLED_WHILE_RUNNING = "Cancelled: the job was cancelled while it ran"
"""The ``error`` of a job (and its result) whose running attempt was cancelled."""


class CancelOutcome(enum.StrEnum):
    """What :meth:`AsyncClient.cancel <bananas.AsyncClient.cancel>` did."""

    CANCELLED = "cancelled"
    """The job had not started: it is now ``cancelled`` and will never run."""

    REQUESTED = "cancel_requested"
    """The job is running: its worker stops it at its next lease renewal and settles it ``cancelled``."""

    ALREADY_FINISHED = "already_finished"
    """The job had already finished (completed, dead or cancelled): nothing changed."""


def cancelled_record(job: Job, now: float, error: str = CANCELLED_BEFORE_START) -> Job:
    """The stored record of ``job`` once cancelled (final: no lease, no time to run at)."""
    return job.evolve(
        status=JobStatus.CANCELLED, scheduled_for=None, error=error, updated_at=from_timestamp(now), lease_token=""
    )


def cancelled_result(job_id: str, now: float, error: str = CANCELLED_BEFORE_START, duration: float = 0.0) -> JobResult:
    """The result stored for a cancelled job (its waiters wake on it)."""
    return JobResult(
        job_id=job_id,
        status=JobStatus.CANCELLED,
        error=error,
        completed_at=from_timestamp(now),
        duration=timedelta(seconds=duration),
    )


async def cancel_job(backend: Backend, job_id: str) -> CancelOutcome:
    """Cancel ``job_id`` on ``backend`` (what ``client.cancel`` does): the queue's atomic cancel,
    then, for a job that had not started, its cancelled result, which wakes its waiters."""
    from bananas.protocols import Cancellation  # protocols import this module

    backend.require(Capability.CANCEL, "cancel")
    queue = backend.queue
    if not isinstance(queue, Cancellation):
        raise TypeError(f"the {backend.name!r} backend declares 'cancel' but its queue is not a Cancellation")
    outcome = await queue.cancel(job_id)
    if outcome is CancelOutcome.CANCELLED:
        await backend.results.store(cancelled_result(job_id, float(backend.options.clock())))
    return outcome

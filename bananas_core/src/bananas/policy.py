"""What an attempt leads to, decided once for every backend.

The retry rule lives here and nowhere else. The worker asks :func:`next_retry` what a
failed attempt leads to and tells the queue with
:meth:`Queue.fail(job, error, retry_at=...) <bananas.protocols.Queue.fail>`: a backend
stores that decision (in one atomic write) and makes none of its own. The worker stores a
failed result only when that answer was ``None``: a result only on a final state.

The lease reaper applies :func:`lease_expired` (ready again at once while
``attempts + 1 < max_retries``, otherwise dead): it runs inside the store, batch by batch,
so a backend calls the helper on each job it takes back. A job the reaper sends to the dead
letter queue is final like any other, so the backend also stores the failed result
:func:`reaped_result` gives (in the same write where it can): whoever waits for the result
gets an answer instead of a timeout.

For backend authors, the record helpers give the stored job each settle writes, so a
backend only stores what they return: :func:`completed`, :func:`failed_attempt`,
:func:`released` and :func:`lease_expired`. They are pure functions of the job and the
clock (Unix seconds, as :class:`~bananas.clock.Clock` reads it); the returned job carries
no lease token.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Final, TypeAlias

from bananas.errors import InvalidJob
from bananas.job import Job, JobResult, JobStatus, backoff_seconds, check_time, unchecked_copy
from bananas.timefmt import from_timestamp

__all__ = [
    "BY_POLICY",
    "LEASE_EXPIRED_ERROR",
    "ByPolicy",
    "RetryAt",
    "completed",
    "decide_retry",
    "failed_attempt",
    "lease_expired",
    "next_retry",
    "reaped_result",
    "released",
    "retries_left",
]

LEASE_EXPIRED_ERROR = (
    "lease expired: the worker running this job stopped renewing it "
    "(it crashed, was killed, or stalled) before finishing"
)
"""The error a job taken back by the lease reaper records."""


class ByPolicy(enum.Enum):
    """The type of :data:`BY_POLICY` (one value)."""

    BY_POLICY = "by policy"


BY_POLICY: Final = ByPolicy.BY_POLICY
"""The default ``retry_at`` of :meth:`Queue.fail <bananas.protocols.Queue.fail>`: the
retry time :func:`next_retry` gives (for callers with no decision of their own)."""

RetryAt: TypeAlias = datetime | ByPolicy | None
"""What :meth:`Queue.fail <bananas.protocols.Queue.fail>` is told: a retry time, ``None``
for the dead letter queue, or :data:`BY_POLICY`."""


def retries_left(job: Job) -> bool:
    """True if a failed attempt of ``job`` (not yet counted in ``attempts``) leaves it a retry:
    ``attempts + 1 < max_retries``. False: that attempt was its last, and the job is dead."""
    return job.attempts + 1 < job.max_retries


def next_retry(job: Job, now: float) -> datetime | None:
    """When a failed attempt of claimed ``job`` is tried again, or ``None``: dead.

    The attempt counts: while :func:`retries_left` the job is retried
    :func:`~bananas.job.backoff_seconds` ``(attempts + 1)`` seconds (2**attempts, capped)
    after ``now``; otherwise it goes to the dead letter queue.
    """
    if not retries_left(job):
        return None
    return from_timestamp(now + backoff_seconds(job.attempts + 1))


def decide_retry(job: Job, retry_at: RetryAt, now: float) -> datetime | None:
    """The retry time ``fail`` stores: ``retry_at`` itself (checked), or :func:`next_retry`
    for :data:`BY_POLICY`. Raises :class:`~bananas.errors.InvalidJob` for a ``retry_at`` that
    is not an aware datetime from :data:`~bananas.job.MIN_TIME` to :data:`~bananas.job.MAX_TIME`."""
    if retry_at is BY_POLICY:
        return next_retry(job, now)
    if retry_at is None:
        return None
    if not isinstance(retry_at, datetime):
        raise InvalidJob(f"retry_at must be an aware datetime or None, got {type(retry_at).__name__}")
    return check_time(retry_at, "retry_at")


def completed(job: Job, now: float) -> Job:
    """The stored record of claimed ``job`` once completed (a copy of a valid job with valid
    changes: not checked again, as it is built once per job)."""
    return unchecked_copy(
        job, status=JobStatus.COMPLETED, updated_at=from_timestamp(now), scheduled_for=None, lease_token=""
    )


def failed_attempt(job: Job, error: str, now: float, retry_at: RetryAt = BY_POLICY) -> Job:
    """The stored record of claimed ``job`` after a failed attempt: ``attempts`` one more,
    ``error`` set, and either ``pending`` until ``retry_at`` or ``failed`` (dead) for ``None``.

    ``retry_at`` goes through :func:`decide_retry` (so :data:`BY_POLICY` is allowed, and a bad
    value raises :class:`~bananas.errors.InvalidJob`).
    """
    when = decide_retry(job, retry_at, now)
    status = JobStatus.FAILED if when is None else JobStatus.PENDING
    return job.evolve(
        status=status,
        attempts=job.attempts + 1,
        error=error,
        updated_at=from_timestamp(now),
        scheduled_for=when,
        lease_token="",
    )


def released(job: Job, now: float) -> Job:
    """The stored record of claimed ``job`` handed back unfinished (``attempts`` unchanged)."""
    return job.evolve(status=JobStatus.PENDING, updated_at=from_timestamp(now), lease_token="")


def lease_expired(job: Job, now: float) -> Job:
    """The stored record of ``job`` taken back by the lease reaper: a failed attempt with
    :data:`LEASE_EXPIRED_ERROR`, ``pending`` (ready at once, no backoff) while
    :func:`retries_left`, otherwise ``failed`` (dead)."""
    status = JobStatus.PENDING if retries_left(job) else JobStatus.FAILED
    return job.evolve(
        status=status,
        attempts=job.attempts + 1,
        error=LEASE_EXPIRED_ERROR,
        updated_at=from_timestamp(now),
        scheduled_for=None,
        lease_token="",
    )


def reaped_result(job: Job, now: float) -> JobResult | None:
    """The result the reaper stores for ``job`` as :func:`lease_expired` returned it: a failed
    result with the job's error when it went to the dead letter queue, ``None`` when it will
    run again (a result only on a final state)."""
    if job.status is not JobStatus.FAILED:
        return None
    return JobResult(job_id=job.id, status=JobStatus.FAILED, error=job.error, completed_at=from_timestamp(now))

"""Per-job timeouts: a job may carry its own handler timeout, which overrides the worker's
``--job-timeout`` for that job.

On the wire it is the job JSON's optional ``timeout`` field (seconds, a number); jobs without
it run with the worker's timeout, as they always did, and implementations that do not know
the field keep it as it is.
"""

from __future__ import annotations

import logging
import math
from datetime import timedelta

from bananas.errors import InvalidJob
from bananas.job import Job

__all__ = ["MAX_JOB_TIMEOUT", "TIMEOUT_FIELD", "check_timeout", "job_timeout", "with_timeout"]

log = logging.getLogger("bananas.worker")

TIMEOUT_FIELD = "timeout"
"""The job JSON field holding a job's own timeout, in seconds."""

MAX_JOB_TIMEOUT = 7 * 24 * 3600.0
"""The longest per-job timeout: a week, in seconds."""


def check_timeout(value: float | timedelta | None) -> float | None:
    """``value`` in seconds if it is a usable per-job timeout (``None``: none); raises
    :class:`~bananas.errors.InvalidJob` naming ``timeout`` and what is allowed otherwise."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidJob(f"timeout must be a number of seconds or a timedelta, got {value!r}")
    if not math.isfinite(value) or not 0 < value <= MAX_JOB_TIMEOUT:
        raise InvalidJob(f"timeout must be more than 0 and at most {MAX_JOB_TIMEOUT:g} seconds (a week), got {value!r}")
    return float(value)


def with_timeout(job: Job, seconds: float | None) -> Job:
    """``job`` carrying its own timeout (unchanged for ``None``)."""
    return job if seconds is None else job.evolve(extra={**job.extra, TIMEOUT_FIELD: seconds})


def job_timeout(job: Job) -> float | None:
    """The job's own timeout in seconds, or ``None`` (none, or one no worker can use: logged)."""
    value = job.extra.get(TIMEOUT_FIELD)
    if value is None:
        return None
    try:
        return check_timeout(value)
    except InvalidJob as exc:
        log.warning("job %r: its own timeout is ignored (%s); the worker's applies", job.id, exc)
        return None

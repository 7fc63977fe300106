"""Jobs as rows: the column values of a submitted job, the job a row holds (whatever the
row holds: stored data is hostile), lease tokens, and the arguments of a claim."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Collection, Sequence
from typing import Any

from bananas.errors import InvalidJob, JobDecodeError
from bananas.job import Job, JobPriority, JobStatus, validate_routing_key
from bananas.timefmt import from_timestamp

from bananas_sql import tables as t

log = logging.getLogger("bananas.sql")


def new_lease_token() -> str:
    """A fresh opaque lease token, unique to one claim (the fence of every settle of its jobs)."""
    return secrets.token_hex(16)


def describe(exc: BaseException) -> str:
    """A readable, bounded, storable one-line description of ``exc`` (whatever its ``str`` does)."""
    try:
        text = f"{type(exc).__name__}: {exc}"
    except Exception:  # a hostile __str__
        text = type(exc).__name__
    text = text.replace("\x00", "\\x00")  # PostgreSQL text cannot hold NUL
    return text if len(text) <= 500 else text[:497] + "..."


def warn_unreadable(job_id: str, what: str, detail: str) -> None:
    """One WARNING line naming an unreadable job (the id and detail escaped: no forged lines)."""
    log.warning("job %r is unreadable and was %s: %s", job_id, what, repr(detail)[1:-1])


def job_params(job: Job, now: float) -> dict[str, Any]:
    """Column values of a newly submitted ``job``; raises :class:`InvalidJob` for a status other
    than pending/scheduled."""
    if job.status is JobStatus.PENDING:
        state, run_at = t.READY, 0.0
    elif job.status is JobStatus.SCHEDULED:
        if job.scheduled_for is None:
            raise InvalidJob(f"job {job.id} is 'scheduled' but has no scheduled_for time; give it one")
        state, run_at = t.SCHEDULED, job.scheduled_for.timestamp()
    else:
        raise InvalidJob(f"only pending or scheduled jobs can be submitted; job {job.id} is {job.status.value!r}")
    return {
        "id": job.id,
        "name": job.name,
        "state": state,
        "routing_key": job.routing_key,
        "priority": job.priority.rank,
        "run_at": run_at,
        "data": job.to_json(),
        "group_name": job.group,
        "now": now,
    }


def row_to_job(row: Any) -> Job:
    """The job a row holds; the ``state`` column decides status where moves did not rewrite ``data``.

    A row buried as unreadable (its ``error`` column set) shows as failed with that error; a
    dead one that cannot be decoded at all (any exception) gives a failed placeholder with what
    the columns know: its error, and ``finished_at`` (when it was buried) as its time. Any
    other row that cannot be decoded raises :class:`JobDecodeError` (it waits where it is
    until a claim, the mover or the reaper buries it). ``row`` has the columns ``state, data,
    error, name, id, finished_at``.
    """
    state, data, error, name, job_id, finished_at = (
        row.state, row.data, row.error, row.name, row.id, row.finished_at
    )  # fmt: skip
    try:
        job = Job.from_json(data)
        if state == t.READY and (job.status is not JobStatus.PENDING or job.scheduled_for is not None):
            job = job.evolve(status=JobStatus.PENDING, scheduled_for=None)
        elif state == t.PROCESSING and job.status is not JobStatus.PROCESSING:
            job = job.evolve(status=JobStatus.PROCESSING, scheduled_for=None)
        elif state == t.DEAD and error:  # buried as unreadable (it could not be re-encoded)
            job = job.evolve(status=JobStatus.FAILED, scheduled_for=None, error=error)
        return job
    except Exception as exc:  # deliberately broad: stored data is hostile
        if state != t.DEAD:
            raise JobDecodeError(f"the stored record of job {job_id!r} is unreadable: {describe(exc)}") from None
        times: dict[str, Any] = {}
        if isinstance(finished_at, int | float):
            times["created_at"] = times["updated_at"] = from_timestamp(finished_at)
        error = error or f"stored job is unreadable: {describe(exc)}"
        try:
            return Job(id=job_id, name=name or "unknown", status=JobStatus.FAILED, error=error, **times)
        except Exception:  # the name column is no job name either
            return Job(id=job_id, name="unknown", status=JobStatus.FAILED, error=error, **times)


def claim_arguments(
    routing_keys: Sequence[str], priorities: Sequence[JobPriority], limit: int, job_names: Collection[str] | None
) -> tuple[list[str], list[JobPriority], list[str] | None]:
    """A claim's routing keys (validated, without repeats), priorities and sorted job names;
    raises for a bare string of keys or a ``limit`` that is not a whole number >= 1."""
    if isinstance(routing_keys, str):
        raise TypeError("routing_keys must be a sequence of routing keys, not one string")
    keys = list(dict.fromkeys(validate_routing_key(k) for k in routing_keys))
    prios = [JobPriority.parse(p) for p in priorities]
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a whole number >= 1, got {limit!r}")
    return keys, prios, sorted(job_names) if job_names is not None else None

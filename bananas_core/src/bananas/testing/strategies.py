"""Hypothesis strategies for jobs, payloads and results (used by the suite and the core tests).

Text leaves out NUL and lone surrogates: they are valid in Python strings but not in
UTF-8 or PostgreSQL ``jsonb``, so no backend can be asked to store them. Integers stay
within +-2**53 and floats within +-1e15, the range every JSON implementation round-trips.
"""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from bananas.job import ALL_PRIORITIES, JSON, Job, JobPriority, JobResult, JobStatus

__all__ = [
    "job_names",
    "job_results",
    "jobs",
    "json_values",
    "priorities",
    "routing_keys",
    "texts",
    "utc_datetimes",
]

MAX_SAFE_INT = 2**53 - 1
MAX_PORTABLE_FLOAT = 1e15
"""Larger floats print with an exponent (``1e+16``), which PostgreSQL ``jsonb`` turns into a
long exact integer that no longer equals the float it came from."""


def texts(*, min_size: int = 0, max_size: int = 40) -> st.SearchStrategy[str]:
    """Unicode text any backend can store (no NUL, no surrogates)."""
    alphabet = st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")
    return st.text(alphabet, min_size=min_size, max_size=max_size)


def json_values(*, max_leaves: int = 12) -> st.SearchStrategy[JSON]:
    """Every JSON shape: null, booleans, integers (within +-2**53), finite floats, text, lists, objects."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-MAX_SAFE_INT, max_value=MAX_SAFE_INT)
        | st.floats(min_value=-MAX_PORTABLE_FLOAT, max_value=MAX_PORTABLE_FLOAT, allow_subnormal=False)
        | texts()
    )
    return st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=5) | st.dictionaries(texts(max_size=12), children, max_size=5),
        max_leaves=max_leaves,
    )


def routing_keys() -> st.SearchStrategy[str]:
    """Valid routing keys: 1-64 letters, digits, ``_`` and ``-``."""
    return st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=64)


def job_names() -> st.SearchStrategy[str]:
    """Valid job names (handler names)."""
    return st.text(string.ascii_letters + string.digits + "._:-", min_size=1, max_size=60)


def priorities() -> st.SearchStrategy[JobPriority]:
    """Any priority."""
    return st.sampled_from(ALL_PRIORITIES)


def utc_datetimes() -> st.SearchStrategy[datetime]:
    """Aware UTC datetimes with microseconds, years 1971-2200."""
    return st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))


def jobs(
    *, payloads: st.SearchStrategy[JSON] | None = None, status: JobStatus = JobStatus.PENDING, **fixed: Any
) -> st.SearchStrategy[Job]:
    """Valid jobs ready to enqueue (``pending`` by default; ``scheduled`` ones get a ``scheduled_for``).

    Keyword arguments fix fields (``routing_key="gpu"``); ``extra`` holds unknown fields.
    """
    fields: dict[str, st.SearchStrategy[Any]] = {
        "name": job_names(),
        "payload": payloads if payloads is not None else json_values(),
        "id": st.uuids().map(str),
        "description": texts(max_size=20),
        "priority": priorities(),
        "routing_key": routing_keys(),
        "created_at": utc_datetimes(),
        "max_retries": st.integers(min_value=0, max_value=10),
        "extra": st.dictionaries(st.text(string.ascii_lowercase, min_size=1, max_size=8).map("x_".__add__),
                                 json_values(max_leaves=4), max_size=3),
    }  # fmt: skip
    if status is JobStatus.SCHEDULED:
        fields["scheduled_for"] = utc_datetimes()
    fields.update({k: st.just(v) for k, v in fixed.items()})

    def build(values: dict[str, Any]) -> Job:
        values.setdefault("updated_at", values["created_at"])
        return Job(status=status, **values)

    return st.fixed_dictionaries(fields).map(build)


def job_results(*, job_id: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[JobResult]:
    """Results as a worker stores them: successes with a JSON value, failures and cancellations with an error."""
    ids = job_id if job_id is not None else st.uuids().map(str)
    durations = st.integers(min_value=0, max_value=10**9).map(lambda ms: timedelta(milliseconds=ms))
    success = st.builds(
        JobResult, job_id=ids, status=st.just(JobStatus.COMPLETED), result=json_values(),
        completed_at=utc_datetimes(), duration=durations,
    )  # fmt: skip
    failure = st.builds(
        JobResult, job_id=ids, status=st.sampled_from([JobStatus.FAILED, JobStatus.CANCELLED]),
        error=texts(min_size=1), completed_at=utc_datetimes(), duration=durations,
    )  # fmt: skip
    return success | failure

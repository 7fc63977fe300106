"""Unique jobs: the key a submission names, and the one rule that says whether a key is taken.

A submission with a unique key writes nothing while another job holds the key: while that
job is pending, scheduled, running or waiting for a retry, and for ``unique_for`` seconds
after it completed. A job that ended any other way (dead, or cancelled) releases the key at
once, and so does a job whose record is gone. Backends store the key and the job together,
atomically; the decision is :func:`key_held`, here, so every backend applies the same rule.
"""

from __future__ import annotations

import math
from datetime import timedelta

import attrs

from bananas.errors import InvalidJob
from bananas.job import JobStatus

__all__ = ["MAX_UNIQUE_FOR", "MAX_UNIQUE_KEY_LENGTH", "JobId", "UniqueKey", "key_forgettable", "key_held", "unique_key"]

MAX_UNIQUE_KEY_LENGTH = 512
"""The longest unique key, in characters."""

MAX_UNIQUE_FOR = 10 * 365 * 24 * 3600.0
"""The longest ``unique_for`` window: ten years, in seconds."""


@attrs.frozen
class UniqueKey:
    """A submission's unique key and the seconds it stays taken after its job completed."""

    key: str
    unique_for: float = 0.0


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key.strip():
        raise InvalidJob(f"unique_key must be a non-empty string, got {key!r}")
    if len(key) > MAX_UNIQUE_KEY_LENGTH:
        raise InvalidJob(f"unique_key is {len(key)} characters long; at most {MAX_UNIQUE_KEY_LENGTH} are allowed")
    if not key.isprintable():
        raise InvalidJob(f"unique_key {key!r} contains a control character; use printable characters")
    return key


def _check_for(value: object) -> float:
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidJob(f"unique_for must be a number of seconds or a timedelta, got {value!r}")
    if not math.isfinite(value) or not 0 <= value <= MAX_UNIQUE_FOR:
        raise InvalidJob(f"unique_for must be from 0 to {MAX_UNIQUE_FOR:g} seconds (ten years), got {value!r}")
    return float(value)


def unique_key(key: str | None, unique_for: float | timedelta | None = None) -> UniqueKey | None:
    """The checked :class:`UniqueKey` of a submit's ``unique_key`` and ``unique_for`` (``None``
    without a key); raises :class:`~bananas.errors.InvalidJob` naming the parameter and what
    is allowed."""
    if key is None:
        if unique_for is not None:
            raise InvalidJob(
                "unique_for needs a unique_key: it is how long that key stays taken after its job completed"
            )
        return None
    return UniqueKey(_check_key(key), 0.0 if unique_for is None else _check_for(unique_for))


def key_held(status: JobStatus | None, finished_at: float | None, unique_for: float, now: float) -> bool:
    """Whether the job holding a key (its ``status``, ``None`` if its record is gone, and when it
    finished, for a completed one) still keeps the key taken at ``now``."""
    if status is None:
        return False
    if status is JobStatus.COMPLETED:
        return finished_at is not None and now < finished_at + unique_for
    return status in _LIVE


_LIVE = frozenset({JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.PROCESSING})


def key_forgettable(status: JobStatus | None, finished_at: float | None, unique_for: float, now: float) -> bool:
    """Whether a store may forget a key (to keep keys from piling up): its holder's record is
    gone, or the holder completed and its window has passed. A dead holder's key is free for
    a new job but kept until the dead record goes: requeued, that job holds the key again
    unless another job took it meanwhile."""
    return status is None or (status is JobStatus.COMPLETED and not key_held(status, finished_at, unique_for, now))


class JobId(str):
    """The id a submit returns: a ``str``, with :attr:`duplicate` True when a unique key was
    taken, nothing was written and this is the id of the job holding the key."""

    __slots__ = ("duplicate",)
    duplicate: bool

    def __new__(cls, value: str, duplicate: bool = False) -> JobId:
        self = super().__new__(cls, value)
        self.duplicate = duplicate
        return self

"""Editing stored job JSON without re-encoding what we do not change.

A claimed job's JSON is parsed into a dict (Python keeps field order, big integers exactly
and floats to the last bit), only the fields a state change names are replaced, and the
dict is written back compactly. Unknown fields and the other implementations' time
strings (nanoseconds, offsets) therefore survive every read-modify-write untouched.
"""

from __future__ import annotations

import json
from typing import Any

from bananas.errors import JobDecodeError
from bananas.job import JSON, Job, JobStatus, dumps, loads
from bananas.timefmt import format_time, from_timestamp

__all__ = ["decode", "edit", "wire_time"]

_DROP = object()


def wire_time(seconds: float) -> str:
    """Unix seconds as a wire-format RFC 3339 time."""
    return format_time(from_timestamp(seconds))


def decode(raw: bytes | str, lease_token: str = "") -> tuple[dict[str, JSON], Job]:
    """The stored JSON as a dict and as a :class:`Job` (holding ``lease_token``, for a job just
    claimed); raises JobDecodeError (only) if it is not a job."""
    data = loads(raw)  # the limits every reader enforces; raises JobDecodeError only
    if not isinstance(data, dict):
        raise JobDecodeError(f"a job must be a JSON object, got {type(data).__name__}")
    return data, Job.from_dict(data, lease_token=lease_token)  # validates (JobDecodeError for anything not a job)


def dead_error(error: str, seconds: float) -> str:
    """What the dead-errors hash keeps for a job buried unreadable: the reason and when it died."""
    return json.dumps({"error": error, "died_at": seconds})


def unreadable_stub(job_id: str, stored: bytes | str | None) -> Job:
    """A stand-in for a dead job whose JSON is missing or unreadable, from its dead-errors entry
    (:func:`dead_error`, or a plain reason written by older versions)."""
    text = stored.decode("utf-8", "replace") if isinstance(stored, bytes) else stored
    reason, died = text or "job record missing or unreadable", None
    if reason.startswith("{"):
        try:
            entry = json.loads(reason)
            reason, died = str(entry["error"]), float(entry["died_at"])
        except (ValueError, KeyError, TypeError):
            pass
    at = from_timestamp(died if died is not None else 0.0)
    return Job(id=job_id, name="<unreadable>", status=JobStatus.FAILED, error=reason, created_at=at, updated_at=at)


def edit(data: dict[str, JSON], **changes: Any) -> tuple[dict[str, JSON], str]:
    """A copy of ``data`` with ``changes`` applied (``None`` removes a field), and its JSON text."""
    out = dict(data)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out, dumps(out)

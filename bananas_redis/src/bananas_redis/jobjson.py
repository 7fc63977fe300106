"""Editing stored job JSON without re-encoding what we do not change.

A claimed job's JSON is parsed into a dict (Python keeps field order, big integers exactly
and floats to the last bit), only the fields a state change names are replaced, and the
dict is written back compactly. Unknown fields and the other implementations' time
strings (nanoseconds, offsets) therefore survive every read-modify-write untouched.
"""

from __future__ import annotations

import json
from typing import Any

from bananas.job import JSON, Job, dumps
from bananas.timefmt import format_time, from_timestamp

__all__ = ["decode", "edit", "wire_time"]

_DROP = object()


def wire_time(seconds: float) -> str:
    """Unix seconds as a wire-format RFC 3339 time."""
    return format_time(from_timestamp(seconds))


def decode(raw: bytes | str) -> tuple[dict[str, JSON], Job]:
    """The stored JSON as a dict and as a :class:`Job`; raises JobDecodeError if it is not a job."""
    job = Job.from_json(raw)  # validates (and raises JobDecodeError for anything not a job)
    data = json.loads(raw)
    return data, job


def edit(data: dict[str, JSON], **changes: Any) -> tuple[dict[str, JSON], str]:
    """A copy of ``data`` with ``changes`` applied (``None`` removes a field), and its JSON text."""
    out = dict(data)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out, dumps(out)

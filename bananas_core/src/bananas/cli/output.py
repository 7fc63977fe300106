"""How the ``bananas`` command prints: aligned tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TextIO

from bananas.job import Job, JobResult
from bananas.protocols import ScheduleState, WorkerInfo
from bananas.timefmt import format_time, from_timestamp

__all__ = [
    "emit_json",
    "job_dict",
    "print_pairs",
    "print_table",
    "relative",
    "result_dict",
    "schedule_state_dict",
    "shorten",
    "stamp",
    "worker_dict",
]


def emit_json(value: Any, out: TextIO | None = None) -> None:
    """Print ``value`` as indented JSON (times already converted to strings)."""
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str), file=out or sys.stdout)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], out: TextIO | None = None) -> None:
    """Print rows under headers in aligned columns; numbers are right-aligned."""
    out = out or sys.stdout
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    numeric = [all(_is_number(row[i]) for row in rows) and bool(rows) for i in range(len(headers))]
    for row in cells:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)]
        print("  ".join(parts).rstrip(), file=out)


def print_pairs(pairs: Sequence[tuple[str, object]], out: TextIO | None = None) -> None:
    """Print ``label  value`` lines with the labels aligned."""
    out = out or sys.stdout
    width = max((len(label) for label, _ in pairs), default=0)
    for label, value in pairs:
        print(f"{label.ljust(width)}  {'' if value is None else value}", file=out)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def shorten(text: str, width: int = 60) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def stamp(value: datetime | None) -> str | None:
    """An aware datetime as RFC 3339 UTC (``None`` stays ``None``)."""
    return None if value is None else format_time(value)


def relative(value: datetime | None, now: datetime) -> str:
    """``2026-01-01 09:00:00Z (in 5m)`` / ``(3s ago)``; ``-`` for ``None``."""
    if value is None:
        return "-"
    delta = (value - now).total_seconds()
    span = _span(abs(delta))
    when = value.strftime("%Y-%m-%d %H:%M:%SZ")
    return f"{when} (in {span})" if delta > 0 else f"{when} ({span} ago)"


def _span(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def job_dict(job: Job) -> dict[str, Any]:
    """A job as its wire-format JSON object."""
    return job.to_dict()


def result_dict(result: JobResult) -> dict[str, Any]:
    """A result as a JSON object."""
    return {
        "job_id": result.job_id,
        "status": result.status.value,
        "result": result.result,
        "error": result.error,
        "completed_at": format_time(result.completed_at),
        "duration_ms": int(result.duration.total_seconds() * 1000),
    }


def schedule_state_dict(state: ScheduleState, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A schedule's state as a JSON object (``extra`` adds definition fields)."""
    return {
        "id": state.schedule_id,
        **(extra or {}),
        "last_run": stamp(state.last_run),
        "next_run": stamp(state.next_run),
        "last_success": stamp(state.last_success),
        "last_error": state.last_error,
        "run_count": state.run_count,
    }


def worker_dict(info: WorkerInfo) -> dict[str, Any]:
    """A live worker as a JSON object; ``started_at`` and ``last_heartbeat`` as RFC 3339 UTC
    times like every other time the command prints."""
    d = info.to_dict()
    for key in ("started_at", "last_heartbeat"):
        d[key] = format_time(from_timestamp(float(d[key]))) if d.get(key) else None  # type: ignore[arg-type]
    return d

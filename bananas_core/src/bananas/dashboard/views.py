"""What each dashboard page shows, read from the store through the protocols only.

Every function returns plain JSON-ready data: the ``/api/...`` endpoints send it as it is
and the HTML pages render the same data, so a page and its JSON twin never disagree. What
a backend cannot do (no ``dead_letter_admin``, no ``cron``) is reported as
``{"supported": false, "reason": ...}`` instead of an error.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bananas.backend import Backend, redact_url
from bananas.capabilities import Capability
from bananas.cli.admin import STALE_HEARTBEAT_SECONDS, stale, unserved
from bananas.cli.output import job_dict, result_dict, schedule_state_dict, stamp, worker_dict
from bananas.dashboard.throughput import Throughput
from bananas.errors import JobDecodeError, JobNotFound
from bananas.job import ALL_PRIORITIES, Job, JobResult
from bananas.protocols import QueueDepths
from bananas.timefmt import from_timestamp

__all__ = [
    "DLQ_PAGE_SIZE",
    "DLQ_SCAN_LIMIT",
    "History",
    "SeenWorkers",
    "dead_letters",
    "job_detail",
    "overview",
    "schedules",
    "unsupported",
    "workers",
]

DLQ_PAGE_SIZE = 25
"""Dead jobs shown per page of ``/dlq``."""
DLQ_SCAN_LIMIT = 10_000
"""A name filter reads at most this many dead jobs (newest first) to find its matches."""
HISTORY_SECONDS = 15 * 60.0
"""How far back the overview's charts reach."""
GONE_SECONDS = 10 * 60.0
"""A worker that left the registry stays on ``/workers`` (as gone) this long after its last heartbeat."""
SAMPLE_SECONDS = 1.5
"""The overview records one depth sample per this many seconds while someone watches it."""


def unsupported(backend: Backend, capability: Capability, what: str) -> dict[str, Any]:
    """The answer of a page whose data the backend does not offer."""
    return {
        "supported": False,
        "reason": f"the {backend.name} backend does not offer {what} (it does not declare the "
        f"{capability.value!r} capability)",
    }


def depths_dict(depths: QueueDepths) -> dict[str, Any]:
    """Queue depths as ``bananas stats --json`` prints them: ready per routing key and priority, and totals."""
    keys = sorted({key for key, _ in depths.ready})
    by_key = {key: {p.value: depths.ready.get((key, p), 0) for p in ALL_PRIORITIES} for key in keys}
    return {
        "ready": by_key,
        "ready_total": depths.total_ready,
        "processing": depths.processing,
        "scheduled": depths.scheduled,
        "dead": depths.dead,
    }


class History:
    """Depth samples the dashboard took itself (the store keeps no history): the overview's
    charts of the last :data:`HISTORY_SECONDS`, and how many jobs died in that time."""

    def __init__(self) -> None:
        self.samples: deque[dict[str, Any]] = deque(maxlen=int(HISTORY_SECONDS / SAMPLE_SECONDS) + 1)
        self.throughput = Throughput()
        """Completed and failed attempts per minute, from the counts workers publish."""

    def add(self, depths: dict[str, Any], now: float | None = None) -> None:
        """Record ``depths`` unless the last sample is younger than :data:`SAMPLE_SECONDS`."""
        now = time.time() if now is None else now
        if self.samples and now - self.samples[-1]["at"] < SAMPLE_SECONDS:
            return
        self.samples.append(
            {
                "at": now,
                "ready": depths["ready_total"],
                "processing": depths["processing"],
                "scheduled": depths["scheduled"],
                "dead": depths["dead"],
            }
        )
        while self.samples and now - self.samples[0]["at"] > HISTORY_SECONDS:
            self.samples.popleft()

    def summary(self) -> dict[str, Any]:
        """The samples (oldest first) and the growth of the dead letter queue over them."""
        samples = list(self.samples)
        died = 0
        for before, after in itertools.pairwise(samples):
            died += max(after["dead"] - before["dead"], 0)
        span = samples[-1]["at"] - samples[0]["at"] if len(samples) > 1 else 0.0
        return {
            "seconds": round(span),
            "died": died,
            "samples": [{**s, "at": stamp(from_timestamp(s["at"]))} for s in samples],
        }


async def overview(backend: Backend, history: History | None = None) -> dict[str, Any]:
    """Depths per routing key and priority, the live workers and the routing keys none serves."""
    depths = await backend.queue.depths()
    live = await backend.workers.workers()
    data = depths_dict(depths)
    if history is not None:
        history.add(data)
        data["history"] = history.summary()
    if history is not None:
        history.throughput.add(live)
        data["throughput"] = history.throughput.summary()
    data["workers"] = len(live)
    data["in_flight"] = sum(w.in_flight for w in live)
    data["unserved"] = unserved(dict(depths.ready), live)
    data["backend"] = {"name": backend.name, "url": redact_url(backend.url)}
    data["capabilities"] = sorted(c.value for c in backend.capabilities)
    data["at"] = stamp(from_timestamp(backend.clock()))
    return data


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str)


def _timeline(job: Job, result: JobResult | None) -> list[dict[str, Any]]:
    """What is known of the job's life, oldest first: the store keeps times, not an event log."""
    events: list[tuple[datetime, str]] = [(job.created_at, "submitted")]
    if job.scheduled_for is not None:
        events.append((job.scheduled_for, "due (scheduled or retry time)"))
    if job.attempts:
        plural = "s" if job.attempts != 1 else ""
        events.append((job.updated_at, f"{job.attempts} attempt{plural} made; last change: {job.status.value}"))
    elif job.updated_at != job.created_at:
        events.append((job.updated_at, f"last change: {job.status.value}"))
    if result is not None:
        events.append((result.completed_at, f"finished: {result.status.value}"))
    events.sort(key=lambda e: e[0])
    return [{"at": stamp(at), "event": what} for at, what in events]


async def job_detail(backend: Backend, job_id: str) -> dict[str, Any] | None:
    """The job, its result (if kept) and its timeline; ``None`` if the store has no such job.

    An unreadable stored record is reported as ``{"unreadable": reason}``, not raised.
    """
    try:
        job = await backend.queue.get_job(job_id)
    except JobNotFound:
        return None
    except JobDecodeError as exc:
        return {"id": job_id, "unreadable": str(exc)}
    try:
        result = await backend.results.get(job_id)
    except JobDecodeError as exc:
        result, result_problem = None, str(exc)
    else:
        result_problem = ""
    data = job_dict(job)
    data["payload_pretty"] = _pretty(job.payload)
    data["result"] = result_dict(result) if result is not None else None
    if result is not None and result.is_success():
        data["result"]["result_pretty"] = _pretty(result.result)
    data["result_problem"] = result_problem
    data["timeline"] = _timeline(job, result)
    data["dead"] = job.status.value == "failed"
    return data


async def dead_letters(backend: Backend, *, page: int = 1, name: str = "") -> dict[str, Any]:
    """One page of dead jobs, newest first, optionally only those named ``name``."""
    if not backend.supports(Capability.DEAD_LETTER_ADMIN):
        return unsupported(backend, Capability.DEAD_LETTER_ADMIN, "a dead letter queue listing")
    page = max(page, 1)
    offset = (page - 1) * DLQ_PAGE_SIZE
    scanned_all = True
    if name:
        matches: list[Job] = []
        scanned, batch = 0, 500
        while scanned < DLQ_SCAN_LIMIT:
            jobs = await backend.queue.dead_letters(limit=batch, offset=scanned)
            matches.extend(j for j in jobs if j.name == name)
            scanned += len(jobs)
            if len(jobs) < batch:
                break
        else:
            scanned_all = False
        total = len(matches)
        shown = matches[offset : offset + DLQ_PAGE_SIZE]
        more = offset + DLQ_PAGE_SIZE < total
    else:
        total = (await backend.queue.depths()).dead
        shown = await backend.queue.dead_letters(limit=DLQ_PAGE_SIZE + 1, offset=offset)
        more = len(shown) > DLQ_PAGE_SIZE
        shown = shown[:DLQ_PAGE_SIZE]
    return {
        "supported": True,
        "page": page,
        "page_size": DLQ_PAGE_SIZE,
        "name": name,
        "total": total,
        "complete": scanned_all,
        "more": more,
        "jobs": [job_dict(j) for j in shown],
    }


class SeenWorkers:
    """Workers this dashboard has seen, so that one gone from the registry (stopped, or its
    heartbeat stopped long enough ago) is still listed as ``gone`` for :data:`GONE_SECONDS`."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    def update(self, live: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
        """Remember ``live``; return the remembered workers that are not in it any more."""
        for row in live:
            self.rows[row["id"]] = row
        ids = {row["id"] for row in live}
        gone = []
        for worker_id, row in list(self.rows.items()):
            if worker_id in ids:
                continue
            if now - row["_beat"] > GONE_SECONDS:
                del self.rows[worker_id]
                continue
            gone.append({**row, "state": "gone", "lost": True, "heartbeat_age": round(now - row["_beat"], 1)})
        return gone


async def workers(backend: Backend, seen: SeenWorkers | None = None) -> dict[str, Any]:
    """The live workers, each ``live``, or ``lost`` when its heartbeat stopped; with ``seen``,
    also the workers that left the registry while this dashboard watched (``gone``)."""
    live = await backend.workers.workers()
    now = backend.clock()
    lost = {w.id for w in stale(live, now)}
    rows = []
    for w in live:
        row = worker_dict(w)
        row["state"] = "lost" if w.id in lost else "live"
        row["lost"] = w.id in lost
        row["heartbeat_age"] = round(max(now - w.last_heartbeat, 0.0), 1)
        rows.append(row)
    gone: list[dict[str, Any]] = []
    if seen is not None:
        gone = seen.update([{**r, "_beat": w.last_heartbeat} for r, w in zip(rows, live, strict=True)], now)
        for row in gone:
            del row["_beat"]
    return {
        "workers": rows,
        "gone": gone,
        "lost_after_seconds": STALE_HEARTBEAT_SECONDS,
        "gone_kept_seconds": GONE_SECONDS,
    }


def _in_zone(value: datetime | None, zone: str) -> str | None:
    if value is None:
        return None
    from bananas.scheduler import resolve_zone

    return value.astimezone(resolve_zone(zone)).strftime("%Y-%m-%d %H:%M:%S %Z")


async def schedules(backend: Backend, defined: Sequence[Any] = ()) -> dict[str, Any]:
    """Cron schedules: the stored state, with the app's definitions (cron, zone, enabled) when given."""
    from bananas.scheduler import CronScheduler

    if not defined and not backend.supports(Capability.CRON):
        return unsupported(backend, Capability.CRON, "cron schedule storage")
    if defined:
        states = await CronScheduler(backend, list(defined)).states()
    else:
        states = await backend.scheduler.states()
    by_id = {s.id: s for s in defined}
    rows = []
    for state in states:
        schedule = by_id.get(state.schedule_id)
        extra: dict[str, Any] = {}
        if schedule is not None:
            zone = schedule.timezone or "UTC"
            extra = {"cron": schedule.cron, "job": schedule.job, "timezone": zone, "enabled": schedule.enabled}
        row = schedule_state_dict(state, extra)
        zone = extra.get("timezone", "UTC")
        row["next_run_local"] = _in_zone(state.next_run, zone)
        row["last_run_local"] = _in_zone(state.last_run, zone)
        rows.append(row)
    return {"supported": True, "schedules": rows, "definitions": bool(defined), "now": stamp(datetime.now(UTC))}

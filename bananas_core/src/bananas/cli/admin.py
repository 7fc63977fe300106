"""Fleet and storage commands: ``schedules``, ``workers``, ``check``, ``backends``, ``db upgrade``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bananas.backend import redact_url
from bananas.capabilities import Capability
from bananas.cli.common import add_common, load_app, open_from_args, schedules_of
from bananas.cli.output import emit_json, print_table, relative, schedule_state_dict, shorten, worker_dict
from bananas.errors import BackendUnavailable, SchemaError
from bananas.job import JobPriority
from bananas.protocols import WorkerInfo
from bananas.timefmt import from_timestamp

__all__ = ["CHECK_RETRY_SECONDS", "SCHEDULER_MODES", "STALE_HEARTBEAT_SECONDS", "register", "stale", "unserved"]

CHECK_RETRY_SECONDS = 2.0
"""A health check answers quickly: an unreachable backend is retried this long, then reported."""
STALE_HEARTBEAT_SECONDS = 12.0
"""A listed worker whose last heartbeat is older than this (workers beat every 5 s, and are
listed for 15 s after their last beat) has stopped beating: hung, or killed moments ago."""
SCHEDULER_MODES = frozenset({"thin", "default", "scheduler-only"})
"""Worker modes that run the scheduler unless told not to (``--no-scheduler``)."""


def register(sub: Any) -> None:
    """Add the fleet and storage commands to the ``bananas`` subparsers."""
    p = sub.add_parser(
        "schedules",
        help="state of the cron schedules",
        description="Last run, next run, run count and last error of each cron schedule. With APP "
        "(module:attribute naming a Registry) every schedule of the app is listed, fired or not.",
    )
    p.add_argument("app", nargs="?", metavar="APP", help="module:attribute naming a Registry")
    add_common(p)
    p.set_defaults(run=schedules)

    p = sub.add_parser("workers", help="live workers", description="The workers whose heartbeats are current.")
    add_common(p)
    p.set_defaults(run=workers)

    p = sub.add_parser(
        "check",
        help="health check for containers and alerts",
        description="Exit 0 printing 'ok ...' when the backend answers, every routing key with waiting "
        "jobs has a live worker, scheduled or retrying jobs have a worker that runs the scheduler "
        "(mode thin, default or scheduler-only), and every live worker's heartbeat is current; otherwise "
        "exit 1 with a one-line reason.",
    )
    add_common(p)
    p.set_defaults(run=check)

    p = sub.add_parser("backends", help="installed storage backends", description="Installed backend plugins.")
    add_common(p)
    p.set_defaults(run=backends)

    p = sub.add_parser("db", help="storage schema", description="Manage the storage schema.")
    add_common(p, group=True)
    db = p.add_subparsers(dest="db_command", metavar="ACTION", parser_class=type(p))
    db.required = True
    q = db.add_parser("upgrade", help="create or upgrade the backend's schema")
    add_common(q)
    q.set_defaults(run=db_upgrade)


async def schedules(args: argparse.Namespace) -> int:
    """``bananas schedules [APP]``: stored schedule state, merged with APP's definitions."""
    from bananas.scheduler import CronScheduler, Schedule

    defined: list[Schedule] = list(schedules_of(load_app(args.app), args.app)) if args.app else []
    async with open_from_args(args, read_only=True) as backend:
        now = from_timestamp(backend.clock())
        if defined:
            states = await CronScheduler(backend, defined).states()
        else:
            backend.require(Capability.CRON, "cron schedules")
            states = await backend.scheduler.states()
    by_id = {s.id: s for s in defined}

    def definition(schedule_id: str) -> dict[str, Any]:
        s = by_id.get(schedule_id)
        if s is None:
            return {}
        return {"cron": s.cron, "job": s.job, "timezone": s.timezone or "UTC", "enabled": s.enabled}

    if args.json:
        emit_json([schedule_state_dict(state, definition(state.schedule_id)) for state in states])
        return 0
    if not states:
        print("no schedule has run yet" + ("" if args.app else " (pass APP to list the app's schedules)"))
        return 0
    stored = [
        [
            relative(state.last_run, now),
            relative(state.next_run, now),
            state.run_count,
            shorten(state.last_error, 40) or "-",
        ]
        for state in states
    ]
    tail = ["LAST RUN", "NEXT RUN", "RUNS", "LAST ERROR"]
    if not args.app:  # the store keeps run state only; the definitions live in the app
        print_table(["ID", *tail], [[state.schedule_id, *row] for state, row in zip(states, stored, strict=True)])
        print("(cron, job, zone and enabled are defined by the app: pass APP, e.g. myapp.tasks:registry, to show them)")
        return 0
    rows = []
    for state, row in zip(states, stored, strict=True):
        d = definition(state.schedule_id)
        known = bool(d)  # a stored schedule the app no longer defines
        rows.append(
            [
                state.schedule_id,
                d.get("cron", "-"),
                d.get("job", "-"),
                d.get("timezone", "-"),
                _yes_no(d.get("enabled")) if known else "not in APP",
                *row,
            ]
        )
    print_table(["ID", "CRON", "JOB", "ZONE", "ENABLED", *tail], rows)
    return 0


def _yes_no(value: object) -> str:
    return "yes" if value is True else "no" if value is False else "?"


async def workers(args: argparse.Namespace) -> int:
    """``bananas workers``: the live workers."""
    async with open_from_args(args, read_only=True) as backend:
        live = await backend.workers.workers()
        now = backend.clock()
    if args.json:
        emit_json([worker_dict(w) for w in live])
        return 0
    if not live:
        print("no live workers")
        return 0
    print_table(
        ["ID", "HOST", "PID", "MODE", "ROUTING KEYS", "PRIORITIES", "CONCURRENCY", "IN FLIGHT", "HEARTBEAT"],
        [
            [
                w.id,
                w.host,
                w.pid,
                w.mode,
                ",".join(w.routing_keys),
                ",".join(p.value for p in w.priorities),
                w.concurrency,
                w.in_flight,
                f"{max(now - w.last_heartbeat, 0):.0f}s ago",
            ]
            for w in live
        ],
    )
    return 0


def stale(live: list[WorkerInfo], now: float, limit: float = STALE_HEARTBEAT_SECONDS) -> list[WorkerInfo]:
    """Listed workers whose last heartbeat is more than ``limit`` seconds old."""
    return [w for w in live if now - w.last_heartbeat > limit]


def unserved(ready: dict[tuple[str, JobPriority], int], live: list[WorkerInfo]) -> dict[str, int]:
    """Routing keys with ready jobs that no live, claiming worker takes (key -> waiting jobs)."""
    waiting: dict[str, int] = {}
    for (key, priority), count in sorted(ready.items()):
        if count <= 0:
            continue
        served = any(
            key in w.routing_keys and priority in w.priorities and w.concurrency > 0 and w.mode != "scheduler-only"
            for w in live
        )
        if not served:
            waiting[key] = waiting.get(key, 0) + count
    return waiting


async def check(args: argparse.Namespace) -> int:
    """``bananas check``: 0 and ``ok ...`` when healthy, else 1 and the reason on one line."""
    try:
        async with open_from_args(args, retry=CHECK_RETRY_SECONDS, read_only=True) as backend:
            await backend.queue.ping()
            depths = await backend.queue.depths()
            live = await backend.workers.workers()
            now = backend.clock()
    except BackendUnavailable as exc:
        return _verdict(args, False, f"backend unreachable: {exc}")
    problems: list[str] = []
    waiting = unserved(dict(depths.ready), live)
    if waiting:
        keys = ", ".join(f"{key!r} ({n} job{'s' if n != 1 else ''})" for key, n in waiting.items())
        problems.append(f"jobs wait on routing keys no live worker serves: {keys}")
    if depths.scheduled and not any(w.mode in SCHEDULER_MODES for w in live):
        problems.append(
            f"{depths.scheduled} scheduled or retrying job{'s' if depths.scheduled != 1 else ''} will never become "
            "ready: no live worker runs the scheduler (start one in mode thin, default or scheduler-only)"
        )
    hung = stale(live, now)
    if hung:
        shown = ", ".join(f"{w.id} ({now - w.last_heartbeat:.0f}s ago)" for w in hung[:5])
        problems.append(f"worker heartbeat stopped: {shown}")
    if problems:
        return _verdict(args, False, "; ".join(problems), live, depths.total_ready)
    summary = f"ok: {len(live)} live worker{'s' if len(live) != 1 else ''}, {depths.total_ready} jobs ready"
    return _verdict(args, True, summary, live, depths.total_ready)


def _verdict(
    args: argparse.Namespace, ok: bool, message: str, live: list[WorkerInfo] | None = None, ready: int = 0
) -> int:
    if args.json:
        emit_json({"ok": ok, "message": message, "workers": len(live or []), "ready": ready})
    elif ok:
        print(message)
    else:
        print(f"bananas check: {' '.join(message.split())}", file=sys.stderr)
    return 0 if ok else 1


async def backends(args: argparse.Namespace) -> int:
    """``bananas backends``: installed backend plugins (with ``--url``: the one serving it)."""
    from bananas.plugins import backend_specs, resolve

    specs = [resolve(args.url)] if args.url else backend_specs()
    if args.json:
        emit_json(
            [
                {
                    "name": s.name,
                    "schemes": list(s.schemes),
                    "distribution": s.distribution,
                    "capabilities": sorted(c.value for c in s.capabilities),
                    "schema": s.migrate is not None,
                    "description": s.description,
                }
                for s in specs
            ]
        )
        return 0
    print_table(
        ["NAME", "SCHEMES", "DISTRIBUTION", "CAPABILITIES"],
        [
            [s.name, ", ".join(f"{x}://" for x in s.schemes), s.distribution, ", ".join(sorted(s.capabilities))]
            for s in specs
        ],
    )
    return 0


async def db_upgrade(args: argparse.Namespace) -> int:
    """``bananas db upgrade``: create or upgrade the schema through the backend's migrator."""
    from bananas.config import resolve_url
    from bananas.plugins import connect, resolve

    url = resolve_url(args.url)
    spec = resolve(url)
    backend = connect(url)
    action = "none"
    try:
        if spec.migrate is None:
            message = f"the {spec.name} backend has no schema to create or upgrade; nothing to do"
        else:
            action = await _schema_before(backend)
            done = await spec.migrate(url, backend.options)
            shown = redact_url(backend.url)
            message = {
                "created": f"created the schema of {shown}",
                "upgraded": f"upgraded the schema of {shown}",
            }.get(action, f"the schema of {shown} was already up to date")
            if done:  # the migrator's own account, e.g. which steps it applied
                message += f" ({done})"
    finally:
        await backend.close()
    if args.json:
        emit_json(
            {
                "backend": spec.name,
                "url": redact_url(backend.url),
                "migrated": spec.migrate is not None,
                "action": action,
                "message": message,
            }
        )
    else:
        print(message)
    return 0


async def _schema_before(backend: Any) -> str:
    """What ``db upgrade`` is about to do: ``created`` (no schema), ``upgraded`` (an older
    one) or ``unchanged``, judged by whether the backend can count its queue."""
    try:
        await backend.queue.depths()
    except SchemaError as exc:
        return "created" if "do not exist" in str(exc) else "upgraded"
    return "unchanged"

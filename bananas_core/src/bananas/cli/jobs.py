"""Job commands: ``submit``, ``job``, ``result``, ``stats`` and ``dlq``."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from bananas.cli.common import (
    UsageError,
    add_common,
    backend_label,
    count_arg,
    open_from_args,
    refuse_memory,
    seconds_arg,
)
from bananas.cli.output import (
    emit_json,
    job_dict,
    print_pairs,
    print_table,
    relative,
    result_dict,
    shorten,
)
from bananas.errors import ConfigError, InvalidJob, JobDecodeError, JobNotFound, Timeout
from bananas.job import (
    ALL_PRIORITIES,
    MAX_DEPTH,
    Job,
    JobResult,
    JobStatus,
    check_time,
    loads,
    time_after,
)
from bananas.timefmt import format_time, from_timestamp

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the job commands to the ``bananas`` subparsers."""
    p = sub.add_parser("submit", help="submit a job", description="Submit a job and print its id.")
    p.add_argument("name", help="job name (the handler that runs it)")
    p.add_argument("--payload", default="null", help="the payload as JSON text (default: null)")
    p.add_argument("--priority", default="normal", help="high, normal or low (default: normal)")
    p.add_argument("--route", default="default", help="routing key (default: default)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--at", help="run at this time, ISO 8601 with a zone, e.g. 2030-01-01T09:00:00Z")
    when.add_argument("--in", dest="delay", help="run after a delay: seconds, or 90s, 5m, 2h, 1h30m")
    p.add_argument(
        "--max-retries",
        type=count_arg(0, 100),
        default=None,
        help="attempts before dead, 0-100 (default: $MAX_RETRIES, else 3)",
    )
    p.add_argument("--description", default="", help="a note shown with the job")
    p.add_argument(
        "--timeout",
        type=seconds_arg,
        metavar="SECONDS",
        help="this job's handler timeout, over the worker's --job-timeout (at most a week)",
    )
    p.add_argument(
        "--unique-key",
        metavar="KEY",
        help="submit nothing while a job with this key is pending, scheduled, running or retrying "
        "(then its id is printed, with a note on stderr)",
    )
    p.add_argument(
        "--unique-for",
        type=seconds_arg,
        metavar="SECONDS",
        help="with --unique-key: the key also stays taken this long after its job completed (default 0)",
    )
    p.add_argument(
        "--group",
        metavar="NAME",
        help="put the job in this group: it runs within the group's limits (see 'bananas groups')",
    )
    p.add_argument("--wait", type=seconds_arg, metavar="SECONDS", help="wait up to SECONDS for the result and print it")
    add_common(p)
    p.set_defaults(run=submit)

    p = sub.add_parser("job", help="show a job", description="Show a stored job.")
    p.add_argument("id", help="job id")
    add_common(p)
    p.set_defaults(run=show_job)

    p = sub.add_parser(
        "result",
        help="show a job's result",
        description="Show the result of a finished job. Exits 1 when the job failed or has no result (yet).",
    )
    p.add_argument("id", help="job id")
    p.add_argument("--wait", type=seconds_arg, metavar="SECONDS", help="wait up to SECONDS for the result")
    add_common(p)
    p.set_defaults(run=show_result)

    p = sub.add_parser(
        "stats",
        help="queue depths",
        description="Ready jobs per routing key and priority; processing, scheduled, dead.",
    )
    add_common(p)
    p.set_defaults(run=stats)

    p = sub.add_parser("dlq", help="the dead letter queue", description="List, requeue or purge dead jobs.")
    add_common(p, group=True)
    dlq = p.add_subparsers(dest="dlq_command", metavar="ACTION", parser_class=type(p))
    dlq.required = True
    q = dlq.add_parser("list", help="list dead jobs, most recently dead first")
    q.add_argument("--limit", type=count_arg(1), default=100, help="at most this many (default 100)")
    q.add_argument("--offset", type=count_arg(0), default=0, help="skip this many first")
    add_common(q)
    q.set_defaults(run=dlq_list)
    q = dlq.add_parser("requeue", help="make dead jobs ready again (IDS, or --all)")
    q.add_argument("ids", nargs="*", metavar="ID")
    q.add_argument("--all", action="store_true", help="requeue every dead job")
    add_common(q)
    q.set_defaults(run=dlq_requeue)
    q = dlq.add_parser("purge", help="delete dead jobs for good (IDS, or --all)")
    q.add_argument("ids", nargs="*", metavar="ID")
    q.add_argument("--all", action="store_true", help="purge every dead job")
    add_common(q)
    q.set_defaults(run=dlq_purge)


def _payload(text: str) -> Any:
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"--payload is not valid JSON ({exc.msg} at column {exc.colno}): "
            'quote it for the shell, for example --payload \'{"to": "a@example.com"}\''
        ) from None
    except (ValueError, RecursionError):
        pass  # valid JSON the limits refuse: loads says how
    try:
        return loads(text, max_depth=MAX_DEPTH)
    except JobDecodeError as exc:
        reason = str(exc).removeprefix("stored data is unreadable: ")
        raise UsageError(f"--payload is not acceptable: {reason}") from None


def _when(args: argparse.Namespace, now: datetime) -> datetime | None:
    """The time of ``--at`` or ``--in``, checked against the range a job may be scheduled in."""
    if args.at:
        try:
            at = datetime.fromisoformat(args.at)
        except ValueError:
            raise UsageError(f"--at {args.at!r} is not an ISO 8601 time such as 2030-01-01T09:00:00Z") from None
        if at.tzinfo is None:
            raise UsageError(f"--at {args.at!r} has no time zone: add Z (UTC) or an offset such as +02:00")
        try:
            return check_time(at, "--at")
        except InvalidJob as exc:
            raise UsageError(str(exc)) from None
    if args.delay:
        from bananas.config import parse_duration

        try:
            seconds = parse_duration(args.delay, name="--in")
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
        if seconds < 0:
            raise UsageError(f"--in {args.delay!r} is negative; give a delay of 0 or more")
        try:
            shown = args.delay if len(args.delay) <= 40 else args.delay[:39] + "…"
            return time_after(now, seconds, what=f"--in {shown!r}")
        except InvalidJob as exc:
            raise UsageError(str(exc)) from None
    return None


def _unreadable(exc: JobDecodeError, what: str) -> JobDecodeError:
    """``exc`` as one line that says which stored record could not be read, and why."""
    reason = str(exc)
    for prefix in ("stored job is unreadable: ", "stored data is unreadable: "):
        reason = reason.removeprefix(prefix)
    if " is unreadable: " in reason:
        reason = reason.split(" is unreadable: ", 1)[1]
    return JobDecodeError(f"the stored record of {what} is unreadable: {reason}")


async def submit(args: argparse.Namespace) -> int:
    """``bananas submit NAME``: enqueue one job; print its id (and its result with ``--wait``)."""
    from bananas._unique_submit import enqueue_one
    from bananas.config import default_max_retries
    from bananas.timeouts import with_timeout
    from bananas.tracing import configure_from_environment
    from bananas.unique import unique_key

    payload = _payload(args.payload)
    max_retries = default_max_retries() if args.max_retries is None else args.max_retries
    try:
        unique = unique_key(args.unique_key, args.unique_for)
    except InvalidJob as exc:
        raise UsageError(str(exc).replace("unique_key", "--unique-key").replace("unique_for", "--unique-for")) from None
    async with open_from_args(args) as backend:
        now = from_timestamp(backend.clock())
        job = Job.create(
            args.name,
            payload,
            priority=args.priority,
            routing_key=args.route,
            description=args.description or None,
            scheduled_for=_when(args, now),
            max_retries=max_retries,
            now=now,
            group=args.group,
        )
        job = with_timeout(job, _job_timeout(args.timeout))
        refuse_memory(args, "submits")  # after the job is validated: its mistakes come first
        configure_from_environment()  # OTEL_TRACES_EXPORTER & co: the submit's span, as the worker's
        job_id = await enqueue_one(backend, job, unique)
        if job_id.duplicate and unique is not None:
            print(f"nothing submitted: job {job_id} holds the unique key {unique.key!r}", file=sys.stderr)
        try:
            result = await backend.results.wait(job_id, args.wait) if args.wait is not None else None
        except JobDecodeError as exc:
            raise _unreadable(exc, f"the result of job {job_id!r}") from None
    if job_id.duplicate:
        if args.json:
            emit_json({"id": job_id, "duplicate": True, **({"result": result_dict(result)} if result else {})})
        elif result is not None:
            _print_result(result)
        else:
            print(job_id)
        return 1 if result is not None and result.is_failed() else 0
    if args.json:
        # The job's status now: what it was stored with, or the final one of its result.
        out: dict[str, Any] = {"id": job.id, "status": (result.status if result is not None else job.status).value}
        if job.scheduled_for is not None:
            out["scheduled_for"] = format_time(job.scheduled_for)
        if result is not None:
            out["result"] = result_dict(result)
        emit_json(out)
    elif result is not None:
        _print_result(result)
    else:
        print(job.id)
    return 1 if result is not None and result.is_failed() else 0


def _job_timeout(seconds: float | None) -> float | None:
    from bananas.timeouts import check_timeout

    try:
        return check_timeout(seconds)
    except InvalidJob as exc:
        raise UsageError("--" + str(exc)) from None


async def show_job(args: argparse.Namespace) -> int:
    """``bananas job ID``: the stored job."""
    async with open_from_args(args, read_only=True) as backend:
        try:
            job = await backend.queue.get_job(args.id)
        except JobDecodeError as exc:
            raise _unreadable(exc, f"job {args.id!r}") from None
        now = from_timestamp(backend.clock())
    if args.json:
        emit_json(job_dict(job))
        return 0
    print_pairs(
        [
            ("id", job.id),
            ("name", job.name),
            ("status", job.status.value),
            ("priority", job.priority.value),
            ("routing key", job.routing_key),
            *([("group", job.group)] if job.group is not None else []),
            ("attempts", f"{job.attempts} of {job.max_retries}"),
            ("created", relative(job.created_at, now)),
            ("updated", relative(job.updated_at, now)),
            ("scheduled for", relative(job.scheduled_for, now)),
            ("description", job.description or "-"),
            ("payload", shorten(json.dumps(job.payload), 200)),
            ("error", job.error or "-"),
        ]
    )
    return 0


async def show_result(args: argparse.Namespace) -> int:
    """``bananas result ID``: the result (exit 1 if the job failed), or exit 1 when it has none (yet)."""
    async with open_from_args(args, read_only=True) as backend:
        try:
            if args.wait is not None:
                try:
                    result: JobResult | None = await backend.results.wait(args.id, args.wait)
                except Timeout:
                    result = None
            else:
                result = await backend.results.get(args.id)
        except JobDecodeError as exc:
            raise _unreadable(exc, f"the result of job {args.id!r}") from None
        status = ""
        if result is None:
            try:
                status = (await backend.queue.get_job(args.id)).status.value
            except JobNotFound:
                raise JobNotFound(args.id) from None
            except JobDecodeError as exc:
                raise _unreadable(exc, f"job {args.id!r}") from None
    if result is None:
        if status in (JobStatus.COMPLETED.value, JobStatus.FAILED.value):
            message = f"job {args.id!r} finished ({status}) but its result has expired (results are kept for their TTL)"
        else:
            waited = f" after waiting {args.wait:g}s" if args.wait is not None else ""
            message = f"job {args.id!r} has no result yet{waited} (status: {status})"
        print(f"bananas: {message}", file=sys.stderr)
        return 1
    if args.json:
        emit_json(result_dict(result))
    else:
        _print_result(result)
    return 1 if result.is_failed() else 0


def _print_result(result: JobResult) -> None:
    print_pairs(
        [
            ("job", result.job_id),
            ("status", result.status.value),
            ("result", shorten(json.dumps(result.result), 200) if result.is_success() else "-"),
            ("error", result.error or "-"),
            ("completed", format_time(result.completed_at)),
            ("duration", f"{result.duration.total_seconds() * 1000:.0f} ms"),
        ]
    )


async def stats(args: argparse.Namespace) -> int:
    """``bananas stats``: queue depths, and which backend they are of."""
    async with open_from_args(args, read_only=True) as backend:
        depths = await backend.queue.depths()
    keys = sorted({key for key, _ in depths.ready})
    by_key = {key: {p.value: depths.ready.get((key, p), 0) for p in ALL_PRIORITIES} for key in keys}
    if args.json:
        emit_json(
            {
                "ready": by_key,
                "ready_total": depths.total_ready,
                "processing": depths.processing,
                "scheduled": depths.scheduled,
                "dead": depths.dead,
                "backend": backend_label(args.url),
            }
        )
        return 0
    rows = [[key, *by_key[key].values(), sum(by_key[key].values())] for key in keys]
    if rows:
        print_table(["ROUTING KEY", "HIGH", "NORMAL", "LOW", "READY"], rows)
    else:
        print("no jobs ready")
    print()
    print_pairs(
        [
            ("ready", depths.total_ready),
            ("processing", depths.processing),
            ("scheduled", depths.scheduled),
            ("dead", depths.dead),
            ("backend", backend_label(args.url)),
        ]
    )
    return 0


async def dlq_list(args: argparse.Namespace) -> int:
    """``bananas dlq list``: dead jobs, most recently dead first."""
    if args.limit < 1 or args.offset < 0:
        raise UsageError("--limit must be >= 1 and --offset >= 0")
    async with open_from_args(args, read_only=True) as backend:
        jobs = await backend.queue.dead_letters(limit=args.limit, offset=args.offset)
        now = from_timestamp(backend.clock())
    if args.json:
        emit_json([job_dict(job) for job in jobs])
        return 0
    if not jobs:
        print("the dead letter queue is empty")
        return 0
    print_table(
        ["ID", "NAME", "ROUTE", "PRIORITY", "ATTEMPTS", "DIED", "ERROR"],
        [
            [j.id, j.name, j.routing_key, j.priority.value, j.attempts, relative(j.updated_at, now), shorten(j.error)]
            for j in jobs
        ],
    )
    return 0


async def _not_dead(backend: Any, ids: list[str]) -> list[str]:
    """The ``ids`` that are not in the dead letter queue (paging through it until all are found)."""
    wanted = set(ids)
    offset, page = 0, 1000
    while wanted:
        jobs = await backend.queue.dead_letters(limit=page, offset=offset)
        wanted -= {job.id for job in jobs}
        if len(jobs) < page:
            break
        offset += page
    return [job_id for job_id in dict.fromkeys(ids) if job_id in wanted]


def _ids_or_all(args: argparse.Namespace, verb: str) -> None:
    if not args.ids and not args.all:
        raise UsageError(f"name the dead jobs to {verb}, or pass --all to {verb} every dead job")
    if args.ids and args.all:
        raise UsageError("give job ids or --all, not both")


async def _dead_only(backend: Any, args: argparse.Namespace, verb: str) -> list[str] | None:
    """The ids to act on (``None``: all); :class:`JobNotFound`-like failure naming the ids
    that are not dead, before anything is changed."""
    if args.all:
        return None
    missing = await _not_dead(backend, args.ids)
    if missing:
        raise NotInDeadLetters(missing, verb)
    return list(dict.fromkeys(args.ids))


class NotInDeadLetters(JobNotFound):
    """Some ids given to ``dlq requeue``/``purge`` are not dead jobs; nothing was changed."""

    def __init__(self, ids: list[str], verb: str) -> None:
        super().__init__(ids[0])
        self.ids, self.verb = ids, verb

    def __str__(self) -> str:
        shown = ", ".join(repr(i) for i in self.ids[:10]) + (
            f" and {len(self.ids) - 10} more" if len(self.ids) > 10 else ""
        )
        return f"not in the dead letter queue: {shown}; nothing was {self.verb}d"


async def dlq_requeue(args: argparse.Namespace) -> int:
    """``bananas dlq requeue IDS|--all``: dead jobs ready again; ids that are not dead are an error."""
    _ids_or_all(args, "requeue")
    async with open_from_args(args, lasting="requeues") as backend:
        ids = await _dead_only(backend, args, "requeue")
        count = await backend.queue.requeue_dead(ids)
    _report_count(args, "requeued", count)
    return 0


async def dlq_purge(args: argparse.Namespace) -> int:
    """``bananas dlq purge IDS|--all``: delete dead jobs for good; ids that are not dead are an error."""
    _ids_or_all(args, "purge")
    async with open_from_args(args, lasting="purges") as backend:
        ids = await _dead_only(backend, args, "purge")
        count = await backend.queue.purge_dead(ids)
    _report_count(args, "purged", count)
    return 0


def _report_count(args: argparse.Namespace, verb: str, count: int) -> None:
    if args.json:
        emit_json({verb: count})
    else:
        print(f"{verb} {count} dead job{'s' if count != 1 else ''}")

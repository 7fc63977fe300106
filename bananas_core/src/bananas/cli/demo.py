"""``bananas demo``: an in-process worker and a burst of sample jobs, with live progress.

Some jobs succeed at once, some fail on their first attempt and succeed on the retry, and
a few always fail and end in the dead letter queue. Retries use the real clock and the
normal backoff (2 s after a first failure), so the demo takes a few seconds.

On a terminal the progress is a live view: jobs done per priority, retries waiting, the dead
letter queue and the latest events, drawn with ``rich`` when it is installed (the core's
``demo`` extra; it is imported only here, only then) and with plain ANSI otherwise. When
stdout is not a terminal it is a plain line a second.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, TextIO

from bananas import policy
from bananas.cli.common import UsageError, add_common, count_arg, open_from_args, seconds_arg
from bananas.cli.output import emit_json, print_pairs
from bananas.job import Job, JobPriority, JobStatus, backoff_seconds

__all__ = ["register", "run_demo"]

DEMO_ROUTE = "demo"
MAX_RETRIES = 2


def register(sub: Any) -> None:
    """Add ``demo`` to the ``bananas`` subparsers."""
    p = sub.add_parser(
        "demo",
        help="run a worker and a burst of sample jobs",
        description="Run an in-process worker and a burst of sample jobs (some retry, a few end dead) "
        "on the embedded default backend, with live progress and a summary.",
    )
    p.add_argument(
        "--jobs", type=count_arg(1, 100_000), default=200, help="how many jobs to submit, 1-100000 (default 200)"
    )
    p.add_argument(
        "--concurrency", type=count_arg(1, 1000), default=20, help="jobs the worker runs at once, 1-1000 (default 20)"
    )
    p.add_argument("--timeout", type=seconds_arg, default=60.0, help="give up after this many seconds (default 60)")
    add_common(p)
    p.set_defaults(run=run_demo)


class _Tally:
    """What the demo's handlers did to this run's jobs, as they did it (the summary is checked
    against storage). Jobs left by an interrupted earlier demo also run, but are not counted."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.ours: set[str] = set()
        self.succeeded = 0
        self.retried = 0
        self.dead = 0
        self.submitted_by_priority = dict.fromkeys(JobPriority, 0)
        self.done_by_priority = dict.fromkeys(JobPriority, 0)
        self.waiting_retry: set[str] = set()
        self.events: deque[tuple[str, str]] = deque(maxlen=8)  # (kind: ok|retry|dead, text)
        self.a_dead_job = ""  # one job that ended dead, for the "what next" hints

    @property
    def finished(self) -> int:
        return self.succeeded + self.dead

    def submitted(self, jobs: list[Job]) -> None:
        self.ours = {job.id for job in jobs}
        for job in jobs:
            self.submitted_by_priority[job.priority] += 1

    def succeeded_once(self, job: Job) -> None:
        if job.id in self.ours:
            self.succeeded += 1
            self.done_by_priority[job.priority] += 1
            if job.id in self.waiting_retry:
                self.waiting_retry.discard(job.id)
                self.events.append(("ok", f"{job.name} #{_number(job)} ({job.priority.value}) ok on attempt 2"))

    def failed_attempt(self, job: Job) -> None:
        if job.id not in self.ours:
            return
        where = f"{job.name} #{_number(job)} ({job.priority.value})"
        if not policy.retries_left(job):
            self.dead += 1
            self.done_by_priority[job.priority] += 1
            self.a_dead_job = self.a_dead_job or job.id
            self.waiting_retry.discard(job.id)
            self.events.append(("dead", f"{where} failed attempt {job.attempts + 1}: to the dead letter queue"))
        else:
            self.retried += 1
            self.waiting_retry.add(job.id)
            wait = int(backoff_seconds(job.attempts + 1))
            self.events.append(("retry", f"{where} failed attempt {job.attempts + 1}: retry in {wait} s"))


def _number(job: Job) -> str:
    payload = job.payload
    if isinstance(payload, dict):
        n = payload.get("n", payload.get("a"))
        if isinstance(n, int):
            return str(n)
    return job.id[:8]


def _registry(tally: _Tally) -> Any:
    from bananas.worker.registry import Registry

    registry = Registry()

    @registry.handler("demo.add")
    async def add(_ctx: Any, job: Job) -> int:
        await asyncio.sleep(0.005)
        tally.succeeded_once(job)
        return int(job.payload["a"]) + int(job.payload["b"])

    @registry.handler("demo.flaky")
    async def flaky(_ctx: Any, job: Job) -> str:
        if job.attempts == 0:
            tally.failed_attempt(job)
            raise ConnectionError("flaky: the first attempt always fails")
        tally.succeeded_once(job)
        return f"ok on attempt {job.attempts + 1}"

    @registry.handler("demo.broken")
    async def broken(_ctx: Any, job: Job) -> None:
        tally.failed_attempt(job)
        raise ValueError(f"broken: attempt {job.attempts + 1} of {job.max_retries} fails, as every one does")

    return registry


def _sample_jobs(count: int, now: Any) -> list[Job]:
    priorities = (JobPriority.HIGH, JobPriority.NORMAL, JobPriority.NORMAL, JobPriority.LOW)
    jobs = []
    for i in range(count):
        if i % 20 == 7:
            name, payload = "demo.broken", {"n": i}
        elif i % 10 == 3:
            name, payload = "demo.flaky", {"n": i}
        else:
            name, payload = "demo.add", {"a": i, "b": i * 2}
        jobs.append(
            Job.create(
                name,
                payload,
                priority=priorities[i % len(priorities)],
                routing_key=DEMO_ROUTE,
                max_retries=MAX_RETRIES,
                now=now,
            )
        )
    return jobs


class _Progress:
    """A live bar on a terminal (redrawn with \\r), a line a second otherwise, nothing for --json."""

    def __init__(self, out: TextIO, *, enabled: bool) -> None:
        self.out = out
        self.enabled = enabled
        self.tty = out.isatty()
        self.last_line = 0.0

    def start(self) -> None:
        """Called once the jobs are submitted (the live views take the screen from here)."""

    def stop(self) -> None:
        """Called when the run is over, before the summary."""

    def show(self, tally: _Tally, elapsed: float, *, final: bool = False) -> None:
        if not self.enabled:
            return
        rate = tally.finished / elapsed if elapsed > 0 else 0.0
        counts = (
            f"{tally.finished}/{tally.total} done  ok {tally.succeeded}  retried {tally.retried}  "
            f"dead {tally.dead}  {rate:.0f} jobs/s"
        )
        if self.tty:
            width = 30
            filled = int(width * tally.finished / max(tally.total, 1))
            self.out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {counts}\x1b[K")  # \x1b[K: clear the rest
            if final:
                self.out.write("\n")
            self.out.flush()
        elif final or time.monotonic() - self.last_line >= 1.0:
            self.last_line = time.monotonic()
            print(counts, file=self.out, flush=True)


_PRIORITY_STYLE = {JobPriority.HIGH: "bold red", JobPriority.NORMAL: "yellow", JobPriority.LOW: "cyan"}
_EVENT_STYLE = {"ok": ("green", "ok  "), "retry": ("yellow", "retry"), "dead": ("red", "dead")}


class _RichProgress(_Progress):
    """The live view on a terminal, drawn with rich: a bar per priority, retries waiting, the
    dead letter queue and the latest events."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out, enabled=True)
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=out)
        self.live = Live(console=self.console, refresh_per_second=12, transient=False)
        self.tally: _Tally | None = None
        self.elapsed = 0.0

    def start(self) -> None:
        self.live.start()

    def stop(self) -> None:
        self.live.stop()

    def show(self, tally: _Tally, elapsed: float, *, final: bool = False) -> None:
        self.live.update(self._render(tally, elapsed), refresh=final)

    def _render(self, tally: _Tally, elapsed: float) -> Any:
        from rich.console import Group
        from rich.panel import Panel
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        table = Table.grid(padding=(0, 2))
        table.add_column(justify="right")
        table.add_column(width=40)
        table.add_column(justify="right")
        for priority in JobPriority:
            total = tally.submitted_by_priority[priority]
            done = tally.done_by_priority[priority]
            bar = ProgressBar(total=max(total, 1), completed=done, width=40, complete_style=_PRIORITY_STYLE[priority])
            table.add_row(Text(priority.value, style=_PRIORITY_STYLE[priority]), bar, f"{done}/{total}")
        rate = tally.finished / elapsed if elapsed > 0 else 0.0
        counts = Text.assemble(
            ("ok ", "green"), (str(tally.succeeded), "bold green"), "   ",
            ("retry waiting ", "yellow"), (str(len(tally.waiting_retry)), "bold yellow"), "   ",
            ("dead letter queue ", "red"), (str(tally.dead), "bold red"), "   ",
            f"{rate:.0f} jobs/s   {elapsed:.1f} s",
        )  # fmt: skip
        events = Text()
        for i, (kind, text) in enumerate(tally.events):
            style, label = _EVENT_STYLE[kind]
            events.append(("\n" if i else "") + f"{label} ", style=f"bold {style}")
            events.append(text)
        if not tally.events:
            events.append("waiting for the first retry...", style="dim")
        body = Group(table, Text(""), counts, Text(""), Text("latest retries and dead jobs", style="bold"), events)
        title = f"bananas demo: {tally.finished}/{tally.total} done"
        return Panel(body, title=title, border_style="bright_black", width=80)


class _AnsiProgress(_Progress):
    """The live view on a terminal without rich: the same picture in plain ANSI, redrawn in place."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out, enabled=True)
        self.drawn = 0

    def show(self, tally: _Tally, elapsed: float, *, final: bool = False) -> None:
        colour = {JobPriority.HIGH: "31", JobPriority.NORMAL: "33", JobPriority.LOW: "36"}
        lines = []
        for priority in JobPriority:
            total = tally.submitted_by_priority[priority]
            done = tally.done_by_priority[priority]
            filled = int(30 * done / max(total, 1))
            bar = f"\x1b[{colour[priority]}m{'#' * filled}\x1b[2m{'.' * (30 - filled)}\x1b[0m"
            lines.append(f"{priority.value:>6}  [{bar}] {done}/{total}")
        rate = tally.finished / elapsed if elapsed > 0 else 0.0
        lines.append(
            f"\x1b[32mok {tally.succeeded}\x1b[0m   \x1b[33mretry waiting {len(tally.waiting_retry)}\x1b[0m   "
            f"\x1b[31mdead letter queue {tally.dead}\x1b[0m   {rate:.0f} jobs/s   {elapsed:.1f} s"
        )
        marks = {"ok": "\x1b[32mok   \x1b[0m", "retry": "\x1b[33mretry\x1b[0m", "dead": "\x1b[31mdead \x1b[0m"}
        events = [f"  {marks[kind]} {text}" for kind, text in tally.events]
        lines += events + [""] * ((tally.events.maxlen or 0) - len(events))
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}F")  # back to the first line drawn
        self.out.write("".join(f"{line}\x1b[K\n" for line in lines))
        self.out.flush()
        self.drawn = len(lines)


def _progress_for(out: TextIO, *, enabled: bool) -> _Progress:
    """The live view on a terminal (rich if installed, else ANSI), plain lines otherwise."""
    if not enabled or not out.isatty() or os.environ.get("TERM") == "dumb":
        return _Progress(out, enabled=enabled)
    try:
        import rich  # noqa: F401  -- optional: the core's `demo` extra
    except ImportError:
        return _AnsiProgress(out)
    return _RichProgress(out)


async def run_demo(args: argparse.Namespace) -> int:
    """``bananas demo``: submit a burst, run it on an in-process worker, print a summary."""
    if not 1 <= args.jobs <= 100_000:
        raise UsageError("--jobs must be between 1 and 100000")
    if not 1 <= args.concurrency <= 1000:
        raise UsageError("--concurrency must be between 1 and 1000")
    from bananas.config import load_worker_config
    from bananas.worker.executor import Executor
    from bananas.worker.pool import Pool

    quiet = logging.getLogger("bananas")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the failures are the point of the demo, not news
    tally = _Tally(args.jobs)
    progress = _progress_for(sys.stdout, enabled=not args.json)
    try:
        async with open_from_args(args) as backend:
            if not args.json:
                print(f"bananas demo on {backend.url}: {args.jobs} jobs, concurrency {args.concurrency}")
            config = load_worker_config(
                env={},
                concurrency=args.concurrency,
                routing_keys=(DEMO_ROUTE,),
                scheduler_interval=0.2,
                enable_scheduler=True,
            )
            executor = Executor(_registry(tally), backend.queue, args.concurrency, clock=backend.clock)
            executor.set_result_backend(backend.results)
            pool = Pool(executor, backend, config, poll_interval=0.2, grace_period=5.0)
            started = time.monotonic()
            jobs = _sample_jobs(args.jobs, _now(backend))
            tally.submitted(jobs)
            url = backend.url
            await pool.start()
            progress.start()
            try:
                await backend.queue.enqueue_many(jobs)
                stored = await _until_finished(backend, jobs, tally, progress, started, args.timeout)
            finally:
                elapsed = time.monotonic() - started
                progress.show(tally, elapsed, final=True)
                progress.stop()
                await pool.stop()
    finally:
        quiet.setLevel(level)
    return _summary(args, tally, stored, elapsed, url)


def _now(backend: Any) -> Any:
    from bananas.timefmt import from_timestamp

    return from_timestamp(backend.clock())


async def _until_finished(
    backend: Any, jobs: list[Job], tally: _Tally, progress: _Progress, started: float, timeout: float
) -> dict[str, int]:
    """Wait until every job has a final result in storage (or ``timeout``); count them by status."""
    deadline = started + timeout
    pending = [job.id for job in jobs]
    counts = {JobStatus.COMPLETED.value: 0, JobStatus.FAILED.value: 0}
    while pending and time.monotonic() < deadline:
        progress.show(tally, time.monotonic() - started)
        await asyncio.sleep(0.1)
        if tally.finished < tally.total:
            continue
        results = await asyncio.gather(*(backend.results.get(job_id) for job_id in pending))
        still = []
        for job_id, result in zip(pending, results, strict=True):
            if result is None:
                still.append(job_id)
            else:
                counts[result.status.value] += 1
        pending = still
    counts["unfinished"] = len(pending)
    return counts


def _command() -> str:
    """How to run ``bananas`` again from here: plain ``bananas`` when that is on PATH and is this
    one, else the console script next to this Python (e.g. ``.venv/bin/bananas``)."""
    own = Path(sys.executable).with_name("bananas")
    found = shutil.which("bananas")
    if found and (not own.exists() or Path(found).resolve() == own.resolve()):
        return "bananas"
    if not own.exists():
        return f"{Path(sys.executable).name} -m bananas.cli"
    try:
        return str(own.relative_to(Path.cwd()))
    except ValueError:
        return str(own)


def _next_steps(url: str, dead_job: str) -> list[str]:
    """What to try next, as commands that work when pasted (the same store, this ``bananas``)."""
    if url.startswith("memory:"):
        return [
            "next: memory:// ended with this process; keep the jobs to look at with a file:",
            f"  {_command()} demo --url sqlite:///demo.db",
        ]
    bananas = _command()
    target = f" --url {url}" if "***" not in url else ""
    steps = [
        "next, look inside the store the demo used:",
        f"  {bananas} stats{target}",
        f"  {bananas} dlq list{target}",
    ]
    if dead_job:
        steps.append(f"  {bananas} job {dead_job}{target}")
    steps += [
        f"  {bananas} dlq requeue{target}",
        f"  {bananas} --help",
    ]
    return steps


def _summary(args: argparse.Namespace, tally: _Tally, stored: dict[str, int], elapsed: float, url: str) -> int:
    processed = stored["completed"] + stored["failed"]
    summary = {
        "submitted": tally.total,
        "processed": processed,
        "succeeded": stored["completed"],
        "retried": tally.retried,
        "dead": stored["failed"],
        "unfinished": stored["unfinished"],
        "elapsed_seconds": round(elapsed, 3),
        "jobs_per_second": round(processed / elapsed, 1) if elapsed > 0 else 0.0,
    }
    if args.json:
        emit_json(summary)
    else:
        print()
        print_pairs(
            [
                ("processed", processed),
                ("succeeded", summary["succeeded"]),
                ("retried", summary["retried"]),
                ("dead", summary["dead"]),
                ("elapsed", f"{elapsed:.2f} s"),
                ("jobs/s", f"{summary['jobs_per_second']:.1f}"),
            ]
        )
        if stored["unfinished"]:
            print(f"\n{stored['unfinished']} jobs did not finish within {args.timeout:g}s", file=sys.stderr)
        else:
            print()
            print("\n".join(_next_steps(url, tally.a_dead_job)))
    return 1 if stored["unfinished"] else 0

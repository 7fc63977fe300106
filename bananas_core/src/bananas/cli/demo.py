"""``bananas demo``: an in-process worker and a burst of sample jobs, with live progress.

Some jobs succeed at once, some fail on their first attempt and succeed on the retry, and
a few always fail and end in the dead letter queue. Retries use the real clock and the
normal backoff (2 s after a first failure), so the demo takes a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from typing import Any, TextIO

from bananas.cli.common import UsageError, add_common, count_arg, open_from_args, seconds_arg
from bananas.cli.output import emit_json, print_pairs
from bananas.job import Job, JobPriority, JobStatus

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

    @property
    def finished(self) -> int:
        return self.succeeded + self.dead

    def succeeded_once(self, job: Job) -> None:
        if job.id in self.ours:
            self.succeeded += 1

    def failed_attempt(self, job: Job) -> None:
        if job.id not in self.ours:
            return
        if job.attempts + 1 >= job.max_retries:
            self.dead += 1
        else:
            self.retried += 1


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
    progress = _Progress(sys.stdout, enabled=not args.json)
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
            tally.ours = {job.id for job in jobs}
            await pool.start()
            try:
                await backend.queue.enqueue_many(jobs)
                stored = await _until_finished(backend, jobs, tally, progress, started, args.timeout)
            finally:
                await pool.stop()
            elapsed = time.monotonic() - started
    finally:
        quiet.setLevel(level)
    progress.show(tally, elapsed, final=True)
    return _summary(args, tally, stored, elapsed)


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


def _summary(args: argparse.Namespace, tally: _Tally, stored: dict[str, int], elapsed: float) -> int:
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
            print("\nnext: bananas stats, bananas dlq list, bananas job ID, bananas --help")
    return 1 if stored["unfinished"] else 0

"""Adapter launcher, run by the driver inside one system's venv with cwd=bench/:

    python -m adapters SYSTEM ROLE [N] [--sync] [--batch B] [--concurrency C]

Roles print one JSON line on stdout:
  info              what the adapter uses (store, handler style, worker command, notes)
  setup             install the system's schema in the (fresh) store, if it has one
  history N         add N finished jobs to the store directly (PostgreSQL, W5)
  claimprobe N      W5: time N claims of up to 10 jobs through the system's queue API
  submit N          W1: N single submits of {"i": n}, one call at a time -> seconds
  bulk N            W1b: N jobs through the bulk API in batches of B -> seconds (or unsupported)
  fill N            untimed: put N jobs in the queue the fastest way the system offers
                    (--budget S: stop after S seconds; prints how many it put)
  groups N          W6: set a limit for every group and put N jobs spread over --groups G groups
  latency N         W3: N jobs in sequence carrying the submit time; -> the recorded latencies
  worker            exec the system's own worker command (concurrency C)

A module in this package (e.g. adapters/rq.py) is imported by its package name so job
functions have stable import paths for the workers.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.metadata
import inspect
import json
import os
import sqlite3
import sys
import time
from typing import Any

from adapters import _common

DISTS = {
    "bananas": ["bananas-core", "bananas-redis", "bananas-sql", "redis", "hiredis", "psycopg", "sqlalchemy"],
    "rq": ["rq", "redis", "hiredis"], "arq": ["arq", "redis", "hiredis"], "saq": ["saq", "redis", "psycopg"],
    "celery": ["celery", "kombu", "redis"], "dramatiq": ["dramatiq", "redis"],
    "taskiq": ["taskiq", "taskiq-redis", "redis"], "huey": ["huey", "redis"],
    "procrastinate": ["procrastinate", "psycopg"], "pgqueuer": ["pgqueuer", "asyncpg", "psycopg"],
}  # fmt: skip
LATENCY_GAP = 0.01  # seconds between W3 jobs, so the worker is back to idle when one arrives
WARMUP_JOBS = 5


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class _LatencyWaiter:
    """Blocks until the next latency record appears in the store and returns it (seconds)."""

    conn: Any

    def __init__(self) -> None:
        self.kind = _common.store()
        if self.kind == "redis":
            import redis

            self.r = redis.Redis.from_url(_common.redis_url())
            self.r.delete(_common.LATENCY_KEY)
        elif self.kind == "postgres":
            import psycopg

            self.conn = psycopg.connect(_common.pg_url(), autocommit=True)
            self.conn.execute("DELETE FROM bench_latency")
        else:
            self.conn = sqlite3.connect(
                _common.sqlite_path(), timeout=60, isolation_level=None, check_same_thread=False
            )
            self.conn.execute("DELETE FROM bench_latency")

    def wait(self, timeout: float) -> float:
        if self.kind == "redis":
            got = self.r.blpop([_common.LATENCY_KEY], timeout=timeout)
            if got is None:
                raise TimeoutError(f"no job ran within {timeout}s")
            return float(got[1])
        deadline = time.monotonic() + timeout
        pause = 0.0002
        while time.monotonic() < deadline:
            row = self.conn.execute("DELETE FROM bench_latency RETURNING s").fetchone()
            if row is not None:
                return float(row[0])
            time.sleep(pause)
            pause = min(pause * 2, 0.005)
        raise TimeoutError(f"no job ran within {timeout}s")


async def _maybe(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def _role(mod: Any, args: argparse.Namespace) -> dict[str, Any]:
    if args.role == "setup":
        await _maybe(getattr(mod, "setup", lambda: None)())
        return {"ok": True}
    if args.role == "claimprobe":
        if not hasattr(mod, "claim_probe"):
            return {"unsupported": "no claim probe for this system"}
        return {"claims_ms": await mod.claim_probe(args.n)}
    if args.role == "groups":
        if not hasattr(mod, "fill_groups"):
            return {"unsupported": "no groups with limits"}
        start = time.perf_counter()
        missing = await mod.fill_groups(args.n, args.groups, args.batch)
        if missing:
            return {"unsupported": missing}
        return {"seconds": time.perf_counter() - start, "n": args.n, "groups": args.groups}
    if args.role == "history":
        if not hasattr(mod, "add_history"):
            return {"unsupported": "no way to add finished rows for this system"}
        start = time.perf_counter()
        await _maybe(mod.add_history(args.n))
        return {"seconds": time.perf_counter() - start, "n": args.n}
    make = getattr(mod, "SyncProducer", None) if args.sync else None
    producer = (make or mod.Producer)()
    await _maybe(producer.open())
    try:
        return await _run(mod, producer, args)
    finally:
        await _maybe(producer.close())


async def _run(mod: Any, p: Any, args: argparse.Namespace) -> dict[str, Any]:
    n = args.n
    if args.role == "submit":
        start = time.perf_counter()
        if inspect.iscoroutinefunction(p.submit):
            for i in range(n):
                await p.submit(i)
        else:
            for i in range(n):
                p.submit(i)
        return {"seconds": time.perf_counter() - start, "n": n}
    if args.role in ("bulk", "fill"):
        bulk = getattr(p, "submit_many", None)
        if bulk is None:
            if args.role == "bulk":
                return {"unsupported": getattr(mod, "NO_BULK", "no bulk submit API")}
            return await _fill_single(p, n, args.budget)
        start = time.perf_counter()
        done = 0
        for lo in range(0, n, args.batch):
            await _maybe(bulk(list(range(lo, min(n, lo + args.batch)))))
            done = min(n, lo + args.batch)
            if args.role == "fill" and time.perf_counter() - start > args.budget:
                break
        return {"seconds": time.perf_counter() - start, "n": done, "batch": args.batch}
    if args.role == "latency":
        waiter = _LatencyWaiter()
        lat: list[float] = []
        for i in range(WARMUP_JOBS + n):
            await _maybe(p.submit(i, time.time()))
            value = await asyncio.to_thread(waiter.wait, 120.0 if i == 0 else 30.0)
            if i >= WARMUP_JOBS:
                lat.append(value * 1000.0)
            await asyncio.sleep(LATENCY_GAP)
        return {"latencies_ms": lat}
    raise SystemExit(f"unknown role {args.role!r}")


async def _fill_single(p: Any, n: int, budget: float) -> dict[str, Any]:
    """Fill with single submits (100 in flight for async clients), stopping after `budget` s."""
    start = time.perf_counter()
    done = 0
    for lo in range(0, n, 100):
        hi = min(n, lo + 100)
        if inspect.iscoroutinefunction(p.submit):
            await asyncio.gather(*(p.submit(i) for i in range(lo, hi)))
        else:
            for i in range(lo, hi):
                p.submit(i)
        done = hi
        if time.perf_counter() - start > budget:
            break
    return {"seconds": time.perf_counter() - start, "n": done}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m adapters")
    parser.add_argument("system")
    parser.add_argument(
        "role",
        choices=["info", "setup", "history", "claimprobe", "submit", "bulk", "fill", "groups", "latency", "worker"],
    )
    parser.add_argument("n", type=int, nargs="?", default=0)
    parser.add_argument("--sync", action="store_true", help="use the synchronous client (Bananas)")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--budget", type=float, default=1e9, help="fill: stop after this many seconds")
    parser.add_argument("--groups", type=int, default=100, help="groups: how many groups the jobs are spread over")
    args = parser.parse_args()
    mod = importlib.import_module(f"adapters.{args.system}")
    if args.role == "info":
        versions = {}
        for dist in DISTS.get(args.system, []):
            try:
                versions[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                versions[dist] = "missing"
        _emit({
            "versions": versions, "history": hasattr(mod, "add_history"), "claimprobe": hasattr(mod, "claim_probe"),
            "setup": getattr(mod, "needs_setup", lambda: hasattr(mod, "setup"))(),
            "store": mod.STORE, "style": mod.STYLE, "notes": mod.NOTES,
            "worker": mod.worker_argv(args.concurrency), "bulk": getattr(mod, "NO_BULK", None) is None,
            "sync_client": hasattr(mod, "SyncProducer"), "groups": hasattr(mod, "fill_groups"),
        })  # fmt: skip
        return
    if args.role == "worker":
        argv = mod.worker_argv(args.concurrency)
        sys.stdout.flush()
        os.execvp(argv[0], argv)
    _emit(asyncio.run(_role(mod, args)))


if __name__ == "__main__":
    main()

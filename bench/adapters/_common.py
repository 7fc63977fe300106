"""What every adapter shares: the store the job body touches and the identical job body.

Runs inside each system's own virtual environment (bench/.venvs/<system>), which holds
redis-py and psycopg besides the system itself. The driver (bench/run.py) passes the store
through the environment:

- ``BENCH_STORE``: ``redis``, ``postgres`` or ``sqlite`` (the store the queue uses);
- ``BENCH_REDIS_URL`` / ``BENCH_PG_URL`` / ``BENCH_SQLITE_PATH``.

Job body (identical in every system): one counter increment in that store (Redis ``INCR
bench:counter`` or ``UPDATE bench_counter SET n = n + 1 WHERE id = 1``). A job carrying a
submit time ``t`` (W3) also records ``now - t`` in seconds (Redis ``RPUSH bench:latency``,
SQL ``INSERT INTO bench_latency``), stamped when the handler starts.

W7 (CPU-bound jobs) sets ``BENCH_BURN_ROUNDS``: the body first computes that many rounds of a
pure-Python loop (:func:`burn`, holding the interpreter lock throughout), then counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

COUNTER_KEY = "bench:counter"
LATENCY_KEY = "bench:latency"
INCR_SQL = "UPDATE bench_counter SET n = n + 1 WHERE id = 1"
LATENCY_SQL = "INSERT INTO bench_latency (s) VALUES (%s)"


BURN_ROUNDS = int(os.environ.get("BENCH_BURN_ROUNDS", "0"))


def burn(rounds: int) -> int:
    """W7's CPU-bound work: a pure-Python loop holding the interpreter lock (``bench/cpu_processes.py`` runs it too)."""
    total = 0
    for i in range(rounds):
        total = (total + i * i) % 1_000_003
    return total


def calibrate(job_ms: float) -> int:
    """Rounds of :func:`burn` that take ``job_ms`` milliseconds here (best of five timings)."""
    rounds = 10_000
    best = min(_timed(rounds) for _ in range(5))
    return max(1, int(rounds * job_ms / 1000 / best))


def _timed(rounds: int) -> float:
    start = time.perf_counter()
    burn(rounds)
    return time.perf_counter() - start


def store() -> str:
    return os.environ.get("BENCH_STORE", "redis")


def redis_url() -> str:
    return os.environ["BENCH_REDIS_URL"]


def pg_url() -> str:
    return os.environ["BENCH_PG_URL"]


def sqlite_path() -> str:
    return os.environ["BENCH_SQLITE_PATH"]


# ---- synchronous job body (thread pools, forked children) ------------------------------

_sync_redis: Any = None
_sync_redis_pid = 0


def _redis_sync() -> Any:
    global _sync_redis, _sync_redis_pid
    if _sync_redis is None or _sync_redis_pid != os.getpid():
        import redis

        _sync_redis = redis.Redis.from_url(redis_url())
        _sync_redis_pid = os.getpid()
    return _sync_redis


_idle: dict[tuple[str, int], queue.SimpleQueue[Any]] = {}
_idle_lock = threading.Lock()
_sqlite_lock = threading.Lock()


@contextlib.contextmanager
def _pooled(kind: str) -> Iterator[Any]:
    """A store connection reused across jobs and threads (some workers start a thread per
    job, so a thread-local connection would mean a new connection per job)."""
    key = (kind, os.getpid())
    with _idle_lock:
        idle = _idle.setdefault(key, queue.SimpleQueue())
    try:
        conn = idle.get_nowait()
    except queue.Empty:
        if kind == "postgres":
            import psycopg

            conn = psycopg.connect(pg_url(), autocommit=True)
        else:
            conn = sqlite3.connect(sqlite_path(), timeout=60, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 60000")
    try:
        yield conn
    finally:
        idle.put(conn)


def count_sync(i: int, t: float | None = None) -> None:
    """The job body, synchronous client."""
    started = time.time()
    if BURN_ROUNDS:
        burn(BURN_ROUNDS)
    kind = store()
    if kind == "redis":
        r = _redis_sync()
        if t is not None:
            r.rpush(LATENCY_KEY, repr(started - t))
        r.incr(COUNTER_KEY)
    elif kind == "postgres":
        with _pooled("postgres") as conn:
            if t is not None:
                conn.execute(LATENCY_SQL, (started - t,))
            conn.execute(INCR_SQL)
    else:
        # One connection per process, writes serialised in-process: SQLite has one writer at a
        # time, and connections colliding on its lock sleep in its busy handler (1 ms and up).
        with _sqlite_lock, _pooled("sqlite") as conn:
            if t is not None:
                conn.execute(LATENCY_SQL.replace("%s", "?"), (started - t,))
            conn.execute(INCR_SQL)


# ---- asynchronous job body -------------------------------------------------------------

_async_redis: dict[int, Any] = {}
_async_pg_idle: dict[int, list[Any]] = {}


def _loop_key() -> int:
    return id(asyncio.get_running_loop()) ^ os.getpid()


async def count_async(i: int, t: float | None = None) -> None:
    """The job body, asynchronous client (redis.asyncio / psycopg AsyncConnection)."""
    started = time.time()
    if BURN_ROUNDS:
        burn(BURN_ROUNDS)  # blocks the event loop, as CPU-bound work in an async handler does
    kind = store()
    key = _loop_key()
    if kind == "redis":
        r = _async_redis.get(key)
        if r is None:
            import redis.asyncio

            r = _async_redis[key] = redis.asyncio.Redis.from_url(redis_url())
        if t is not None:
            await r.rpush(LATENCY_KEY, repr(started - t))
        await r.incr(COUNTER_KEY)
    elif kind == "postgres":
        import psycopg

        idle = _async_pg_idle.setdefault(key, [])
        conn = idle.pop() if idle else await psycopg.AsyncConnection.connect(pg_url(), autocommit=True)
        try:
            if t is not None:
                await conn.execute(LATENCY_SQL, (started - t,))
            await conn.execute(INCR_SQL)
        finally:
            idle.append(conn)
    else:
        await asyncio.to_thread(count_sync, i, t)


# ---- W5: finished history on PostgreSQL ----------------------------------------------


async def clone_finished_rows(table: str, where: str, n: int, overrides: dict[str, str], skip: set[str]) -> None:
    """Insert ``n`` copies of the one row of ``table`` matching ``where`` (a job the system
    itself just wrote, so every column is as the system writes it), with ``overrides`` (column ->
    SQL expression over the series value ``g``) making them finished jobs; ``skip`` columns
    take their defaults (serial keys). The template row is deleted afterwards."""
    import psycopg

    conn = await psycopg.AsyncConnection.connect(pg_url(), autocommit=True)
    try:
        cur = await conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s AND table_schema = 'public' "
            "ORDER BY ordinal_position",
            (table,),
        )
        cols = [r[0] for r in await cur.fetchall() if r[0] not in skip]
        select = ", ".join(overrides.get(c, f'"{c}"') for c in cols)
        names = ", ".join(f'"{c}"' for c in cols)
        step = 100_000
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            await conn.execute(
                f"INSERT INTO {table} ({names}) SELECT {select} FROM {table}, "
                f"generate_series({lo + 1}, {hi}) AS g WHERE {where}"
            )
        await conn.execute(f"DELETE FROM {table} WHERE {where}")
        await conn.execute(f"VACUUM ANALYZE {table}")
    finally:
        await conn.close()

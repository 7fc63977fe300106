"""Where a Bananas submit spends its time: cProfile of W1 (one submit at a time, AsyncClient and
Client) and W1b (submit_many) against throwaway servers, summed by component.

    bench/.venvs/bananas/bin/python bench/profile_submit.py [--store redis,postgres] [--jobs 5000]

Starts its own redis-server and PostgreSQL cluster as run.py does (benchlib.stores.Servers;
PostgreSQL with fsync on). For every (store, path) it prints the wall time per job and the profiler's
own time (tottime) per job summed by component -- waiting on the socket, the client library
(redis-py, psycopg), asyncio, Bananas, the job model's helpers (json, uuid, attrs) --
then the functions with the most own time. cProfile adds its own overhead to every Python call,
so read the shares, not the absolute microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import pstats
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.profile import component
from benchlib.stores import Servers


def report(title: str, prof: cProfile.Profile, jobs: int, wall: float, top: int) -> None:
    stats = pstats.Stats(prof)
    by_component: dict[str, float] = defaultdict(float)
    rows = []
    for (file, line, name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        by_component[component(file, name)] += tottime
        rows.append((tottime, f"{Path(file).name}:{line}({name})"))
    total = sum(by_component.values())
    print(f"\n== {title}: {jobs:,} jobs, {wall / jobs * 1e6:.0f} us per job wall ({jobs / wall:,.0f}/s), "
          f"{total / jobs * 1e6:.0f} us per job profiled ==")  # fmt: skip
    for label, seconds in sorted(by_component.items(), key=lambda kv: -kv[1]):
        print(f"  {100 * seconds / total:5.1f}%  {seconds / jobs * 1e6:6.1f} us/job  {label}")
    print("  top functions by own time:")
    for seconds, where in sorted(rows, reverse=True)[:top]:
        print(f"    {seconds / jobs * 1e6:6.1f} us/job  {where}")


@contextlib.contextmanager
def profiling(title: str, jobs: int, top: int) -> Iterator[None]:
    """Profile the block and report it as `jobs` jobs' worth of work."""
    prof = cProfile.Profile()
    start = time.perf_counter()
    prof.enable()
    try:
        yield
    finally:
        prof.disable()
    report(title, prof, jobs, time.perf_counter() - start, top)


def run_store(url: str, jobs: int, top: int) -> None:
    from bananas import AsyncClient, Client

    store = url.split(":")[0]

    async def single() -> None:
        client = AsyncClient(url)
        for i in range(200):  # warm-up: connections, prepared statements, script SHAs
            await client.submit_job("count", {"i": i})
        with profiling(f"{store} W1 AsyncClient.submit_job", jobs, top):
            for i in range(jobs):
                await client.submit_job("count", {"i": i})
        await client.close()

    async def bulk() -> None:
        client = AsyncClient(url)
        await client.submit_many([{"name": "count", "payload": {"i": i}} for i in range(1000)])
        specs = [{"name": "count", "payload": {"i": i}} for i in range(jobs * 4)]
        with profiling(f"{store} W1b AsyncClient.submit_many (batches of 1,000)", len(specs), top):
            for k in range(0, len(specs), 1000):
                await client.submit_many(specs[k : k + 1000], batch_size=1000)
        await client.close()

    asyncio.run(single())
    client = Client(url)
    try:
        for i in range(200):
            client.submit_job("count", {"i": i})
        with profiling(f"{store} W1 Client.submit_job", jobs, top):
            for i in range(jobs):
                client.submit_job("count", {"i": i})
    finally:
        client.close()
    asyncio.run(bulk())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", default="redis,postgres", help="comma-separated: redis, postgres")
    p.add_argument("--jobs", type=int, default=5000)
    p.add_argument("--top", type=int, default=12)
    args = p.parse_args()
    stores = args.store.split(",")
    unknown = sorted(set(stores) - {"redis", "postgres"})
    if unknown:
        raise SystemExit(f"profile_submit: unknown store {', '.join(unknown)} (allowed: redis, postgres)")
    servers = Servers(need_redis="redis" in stores, need_postgres="postgres" in stores)
    try:
        for store in stores:
            if store == "redis":
                run_store(servers.redis.url, args.jobs, args.top)
            else:
                import bananas_sql

                asyncio.run(bananas_sql.upgrade(servers.postgres.url))
                run_store(servers.postgres.url, args.jobs, args.top)
    finally:
        servers.stop()


if __name__ == "__main__":
    main()

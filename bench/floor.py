"""The floor under W3 on this machine: what a Redis round trip and a one-hop hand-over cost
when the processes involved were idle, next to the same round trip back to back.

    bench/.venvs/driver/bin/python bench/floor.py [--samples 300] [--gap-ms 10]

Starts its own redis-server (tests/servers.py) and measures with redis-py's asyncio client:
- PING back to back (hot), and PING after sleeping --gap-ms (as W3's producer does between jobs);
- LPUSH -> BLPOP: the time from just before a producer's LPUSH until a task blocked in BLPOP
  on another connection resumes with the id (the least a one-hop pickup can cost: what Huey
  and taskiq do, and what Bananas' hand-over to idle workers does plus its lease and status).
On a virtual machine whose idle vCPUs halt, waking an idle process costs far more than the
round trip itself; W3 pays that at least twice (Redis, then the worker).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time

import redis.asyncio as aioredis
from benchlib.stores import load_servers
from redis.exceptions import RedisError


def summary(name: str, ms: list[float]) -> str:
    ms = sorted(ms)
    pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return f"{name:<34} p50 {statistics.median(ms):6.3f} ms   p95 {pick(0.95):6.3f}   p99 {pick(0.99):6.3f}"


async def measure(url: str, samples: int, gap: float) -> list[str]:
    a, b = aioredis.Redis.from_url(url), aioredis.Redis.from_url(url)
    out = []
    for label, pause in (("PING, back to back", 0.0), (f"PING after {gap * 1000:g} ms idle", gap)):
        lat = []
        for _ in range(samples):
            if pause:
                await asyncio.sleep(pause)
            t = time.perf_counter()
            await a.ping()
            lat.append((time.perf_counter() - t) * 1000)
        out.append(summary(label, lat))
    got: asyncio.Queue[float] = asyncio.Queue()

    async def waiter() -> None:
        while True:
            if await b.blpop(["floor:l"], timeout=5):
                got.put_nowait(time.perf_counter())

    task = asyncio.create_task(waiter())
    await asyncio.sleep(0.05)
    lat = []
    for _ in range(samples):
        await asyncio.sleep(gap)
        t = time.perf_counter()
        await a.lpush("floor:l", "x")
        lat.append((await got.get() - t) * 1000)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, RedisError):
        await task
    out.append(summary(f"LPUSH -> BLPOP wake, {gap * 1000:g} ms idle", lat))
    await a.aclose()
    await b.aclose()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--gap-ms", type=float, default=10.0)
    args = p.parse_args()
    server = load_servers().RedisServer().start()
    try:
        for line in asyncio.run(measure(server.url, args.samples, args.gap_ms / 1000)):
            print(line)
    finally:
        server.stop()


if __name__ == "__main__":
    main()

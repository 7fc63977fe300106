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

And the floor under W1 (one submit after another, each waiting for its reply): a PING back to
back on a bare socket, blocking and through asyncio streams (the least a client of either kind
pays per round trip, before any client library or queue code), next to redis-py's own.
With --postgres, the same for PostgreSQL (its own cluster, fsync and synchronous_commit on):
a SELECT 1 and a one-row INSERT in autocommit, each waiting for its commit's WAL flush, as
every single submit of every PostgreSQL queue must.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import statistics
import time
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from benchlib.stores import _wait_postgres_ready, load_servers
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


PING = b"*1\r\n$4\r\nPING\r\n"


def _per_call_us(call: object, samples: int) -> float:
    assert callable(call)
    started = time.perf_counter()
    for _ in range(samples):
        call()
    return (time.perf_counter() - started) / samples * 1e6


async def _async_per_call_us(call: object, samples: int) -> float:
    assert callable(call)
    started = time.perf_counter()
    for _ in range(samples):
        await call()
    return (time.perf_counter() - started) / samples * 1e6


async def round_trips(url: str, samples: int) -> list[str]:
    """Back-to-back round trips, mean per call (as W1 measures): bare sockets and redis-py."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def blocking_ping() -> None:
        sock.sendall(PING)
        sock.recv(64)

    reader, writer = await asyncio.open_connection(host, port)

    async def asyncio_ping() -> None:
        writer.write(PING)
        await reader.readline()

    sync_client, async_client = redis.Redis.from_url(url), aioredis.Redis.from_url(url)
    rows = [
        ("bare socket, blocking", _per_call_us(blocking_ping, samples)),
        ("redis-py, blocking", _per_call_us(sync_client.ping, samples)),
        ("bare socket, asyncio streams", await _async_per_call_us(asyncio_ping, samples)),
        ("redis-py, asyncio", await _async_per_call_us(async_client.ping, samples)),
    ]
    sock.close()
    writer.close()
    sync_client.close()
    await async_client.aclose()
    return [f"PING round trip, {name:<28} {us:6.1f} us = {1e6 / us:8,.0f} calls/s at most" for name, us in rows]


async def pg_round_trips(url: str, samples: int) -> list[str]:
    """Back-to-back PostgreSQL statements on psycopg, autocommit: a read, and a durable insert."""
    import psycopg

    create = "CREATE TABLE IF NOT EXISTS floor_rows (id bigserial PRIMARY KEY, data text NOT NULL)"
    insert = "INSERT INTO floor_rows (data) VALUES (%s)"
    rows = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(create)
        rows.append(("SELECT 1, blocking", _per_call_us(lambda: conn.execute("SELECT 1").fetchall(), samples)))
        rows.append(("one-row INSERT, blocking", _per_call_us(lambda: conn.execute(insert, ("x",)), samples)))
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as aconn:

        async def select() -> None:
            await (await aconn.execute("SELECT 1")).fetchall()

        async def insert_one() -> None:
            await aconn.execute(insert, ("x",))

        rows.append(("SELECT 1, asyncio", await _async_per_call_us(select, samples)))
        rows.append(("one-row INSERT, asyncio", await _async_per_call_us(insert_one, samples)))
    return [f"PostgreSQL {name:<30} {us:6.1f} us = {1e6 / us:8,.0f} calls/s at most" for name, us in rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--gap-ms", type=float, default=10.0)
    p.add_argument("--postgres", action="store_true", help="also PostgreSQL's round trips and durable inserts")
    args = p.parse_args()
    server = load_servers().RedisServer().start()
    try:
        for line in asyncio.run(measure(server.url, args.samples, args.gap_ms / 1000)):
            print(line)
        for line in asyncio.run(round_trips(server.url, max(args.samples, 5000))):
            print(line)
    finally:
        server.stop()
    if args.postgres:
        pg = load_servers().PostgresServer(fsync=True).start()
        try:
            _wait_postgres_ready(pg.url)
            for line in asyncio.run(pg_round_trips(pg.url, max(args.samples, 3000))):
                print(line)
        finally:
            pg.stop()


if __name__ == "__main__":
    main()

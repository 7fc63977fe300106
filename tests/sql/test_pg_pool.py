"""The connection budget of a PostgreSQL backend: ``pool_size`` is the most connections one
backend opens at once, the LISTEN connection included, counted by the server itself
(``pg_stat_activity``) under a load that would like many more."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest
from bananas.errors import ConfigError, Timeout
from bananas.job import Job
from bananas.plugins import connect

import bananas_sql

pytestmark = pytest.mark.anyio


async def _count(conn: psycopg.AsyncConnection[object], application: str) -> int:
    cur = await conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [application])
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])  # type: ignore[call-overload]


@pytest.mark.parametrize("pool_size", [2, 4])
async def test_pool_size_bounds_every_connection_of_a_backend(
    postgres_url: str, namespace: str, pool_size: int
) -> None:
    await bananas_sql.upgrade(postgres_url, namespace=namespace)
    application = "bananas-budget-" + uuid.uuid4().hex[:8]
    url = f"{postgres_url}{'&' if '?' in postgres_url else '?'}application_name={application}"
    seen: list[int] = []
    stop = asyncio.Event()

    async def watch() -> None:  # on a connection of its own, under another name
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
            while not stop.is_set():
                seen.append(await _count(conn, application))
                await asyncio.sleep(0.002)

    async with connect(url, namespace=namespace, pool_size=pool_size) as backend:
        watcher = asyncio.create_task(watch())
        queue, results = backend.queue, backend.results

        async def producer(i: int) -> None:
            for j in range(10):
                await queue.enqueue(Job.create("load", {"i": i, "j": j}))

        async def consumer() -> None:
            for _ in range(10):
                for job in await queue.claim(["default"], limit=2):
                    await queue.complete(job)
                await queue.depths()

        async def result_waiter() -> None:  # keeps the LISTEN connection busy on the result channel
            with pytest.raises(Timeout):
                await results.wait("never-" + uuid.uuid4().hex, 0.5)

        await asyncio.gather(
            *(producer(i) for i in range(12)), *(consumer() for _ in range(12)), result_waiter(), result_waiter()
        )
        listening = backend.queue.db.listener.connected  # type: ignore[attr-defined]
        peak = backend.queue.db.pool.peak  # type: ignore[attr-defined]
        stop.set()
        await watcher
    assert listening, "the result waiters had the backend LISTEN"
    assert max(seen) <= pool_size, f"{max(seen)} connections open at once for pool_size={pool_size}"
    assert peak == pool_size, f"the load of 24 callers and a listener used only {peak} of {pool_size}"
    assert max(seen) >= 2, "the watcher never saw the backend's connections"


async def test_pool_size_below_two_is_a_configuration_error(postgres_url: str, namespace: str) -> None:
    await bananas_sql.upgrade(postgres_url, namespace=namespace)
    with pytest.raises(ConfigError, match="pool_size must be at least 2"):
        connect(postgres_url, namespace=namespace, pool_size=1)

"""Bananas on Redis ("bananas-redis"), PostgreSQL ("bananas-pg") or SQLite ("bananas-sqlite").

Producer: AsyncClient (default) or the synchronous Client (--sync); bulk: submit_many (one
enqueue_many per batch). Worker: `python -m bananas.worker adapters.bananas:registry --url URL
--concurrency 10`, one process. The handler is `async def` on Redis and PostgreSQL and a plain
`def` (run in the worker's thread pool) on SQLite, whose Python driver is synchronous.
"""

from __future__ import annotations

import inspect
import os
import sys
from typing import Any

from adapters import _common

STORE = "redis, postgres or sqlite"
STYLE = "async (sync on SQLite)"
NOTES = "--concurrency 10, one process, defaults otherwise"


def url() -> str:
    kind = _common.store()
    if kind == "redis":
        return _common.redis_url()
    if kind == "postgres":
        return _common.pg_url()
    return "sqlite:///" + os.path.abspath(_common.sqlite_path())


def _registry() -> Any:
    from bananas.worker import Registry

    reg = Registry()
    if _common.store() == "sqlite" or _common.BURN_ROUNDS:  # W7: CPU-bound plain-def handlers

        def count_sync(ctx: Any, job: Any) -> None:
            _common.count_sync(job.payload["i"], job.payload.get("t"))

        reg.register("count", count_sync)
    else:

        async def count(ctx: Any, job: Any) -> None:
            await _common.count_async(job.payload["i"], job.payload.get("t"))

        reg.register("count", count)
    return reg


registry = _registry() if "BENCH_STORE" in os.environ else None


def worker_argv(concurrency: int) -> list[str]:
    return [sys.executable, "-m", "bananas.worker", "adapters.bananas:registry", "--url", url(),
            "--concurrency", str(concurrency)]  # fmt: skip


def _payload(i: int, t: float | None) -> dict[str, Any]:
    return {"i": i} if t is None else {"i": i, "t": t}


class Producer:
    async def open(self) -> None:
        from bananas import AsyncClient

        self.client = AsyncClient(url())

    async def close(self) -> None:
        await self.client.close()

    async def submit(self, i: int, t: float | None = None) -> Any:
        return await self.client.submit_job("count", _payload(i, t))

    async def submit_many(self, items: list[int]) -> Any:
        return await self.client.submit_many([{"name": "count", "payload": {"i": i}} for i in items])


class SyncProducer:
    def open(self) -> None:
        from bananas import Client

        self.client = Client(url())

    def close(self) -> None:
        self.client.close()

    def submit(self, i: int, t: float | None = None) -> Any:
        return self.client.submit_job("count", _payload(i, t))

    def submit_many(self, items: list[int]) -> Any:
        return self.client.submit_many([{"name": "count", "payload": {"i": i}} for i in items])


def needs_setup() -> bool:
    return _common.store() != "redis"


async def setup() -> None:
    if _common.store() != "redis":
        import bananas_sql

        done = bananas_sql.upgrade(url())
        if inspect.isawaitable(done):
            await done


W6_LIMIT = {"max_running": 2, "rate": "1000/s"}
"""W6: the default limit of every group: two running at once; a rate too high to bind."""


async def fill_groups(n: int, groups: int, batch: int) -> str | None:
    """W6: the default limit :data:`W6_LIMIT` for every group, then n jobs spread in turn over
    ``groups`` groups (job i in group ``g{i % groups}``), ``batch`` per submit_many. Returns why
    not, without doing anything, on a store whose backend has no groups."""
    from bananas import AsyncClient
    from bananas.capabilities import Capability

    async with AsyncClient(url()) as client:
        if not client.backend.supports(Capability.GROUPS):
            return f"the {client.backend.name} backend does not declare the groups capability"
        await client.set_group_limit("*", **W6_LIMIT)  # type: ignore[arg-type]
        for lo in range(0, n, batch):
            specs = [
                {"name": "count", "payload": {"i": i}, "group": f"g{i % groups}"} for i in range(lo, min(n, lo + batch))
            ]
            await client.submit_many(specs)


async def add_history(n: int) -> None:
    """W5 on PostgreSQL: n completed jobs kept (expiring in a day, so retention keeps them)."""
    if _common.store() != "postgres":
        raise SystemExit("history rows are only added on PostgreSQL")
    from bananas import AsyncClient

    async with AsyncClient(url()) as client:
        job_id = await client.submit_job("count", {"i": -1}, job_id="bench-history-template")
    await _common.clone_finished_rows(
        "bananas_jobs",
        f"id = '{job_id}'",
        n,
        {
            "id": "id || '-' || g",
            "state": "'completed'",
            "position": "position + g",
            "lease_until": "NULL",
            "finished_at": "extract(epoch FROM now())",
            "expires_at": "extract(epoch FROM now()) + 86400",
        },
        {"seq"},
    )


async def claim_probe(n: int) -> list[float]:
    """W5 claim latency: n claims of up to 10 jobs straight through the Queue API (ms each);
    the claimed jobs are completed untimed so the queue stays consistent."""
    import time

    import bananas

    backend = bananas.connect(url())
    times: list[float] = []
    try:
        for _ in range(n):
            start = time.perf_counter()
            jobs = await backend.queue.claim(["default"], limit=10)
            times.append((time.perf_counter() - start) * 1000.0)
            for job in jobs:
                await backend.queue.complete(job)
    finally:
        await backend.close()
    return times

"""pgqueuer (PostgreSQL, asyncpg driver as in its documentation). Asynchronous; one worker
process (pgqueuer.run, what `pgq run` calls) with entrypoint concurrency_limit=10 and the
default batch size 10.
Bulk: Queries.enqueue with lists (one statement)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

from adapters import _common

STORE = "postgres"
STYLE = "async"
NOTES = "pgqueuer.run(factory) (= pgq run), entrypoint concurrency_limit=10, batch size 10 (default), asyncpg"


async def _driver() -> Any:
    import asyncpg
    from pgqueuer.db import AsyncpgDriver

    return AsyncpgDriver(await asyncpg.connect(_common.pg_url()))


@contextlib.asynccontextmanager
async def main() -> AsyncIterator[Any]:
    """The factory `pgq run` calls: a PgQueuer with the `count` entrypoint."""
    from pgqueuer import PgQueuer

    driver = await _driver()
    pgq = PgQueuer(driver)

    @pgq.entrypoint("count", concurrency_limit=int(os.environ.get("BENCH_CONCURRENCY", "10")))  # type: ignore[untyped-decorator]  # peer not in the repo venv
    async def count(job: Any) -> None:
        args = json.loads(job.payload)
        await _common.count_async(args["i"], args.get("t"))

    try:
        yield pgq
    finally:
        await driver._connection.close()


def worker_argv(concurrency: int) -> list[str]:
    # What `pgq run adapters.pgqueuer:main --max-concurrent-tasks N` does; the command itself
    # fails with the typer release it installs ('str' object has no attribute 'name').
    # max_concurrent_tasks must be at least twice the batch size (10), so the knob used is the
    # entrypoint's concurrency_limit.
    os.environ["BENCH_CONCURRENCY"] = str(concurrency)
    return [sys.executable, "-c", "import asyncio, pgqueuer, adapters.pgqueuer as m; asyncio.run(pgqueuer.run(m.main))"]


def _payload(i: int, t: float | None = None) -> bytes:
    return json.dumps({"i": i} if t is None else {"i": i, "t": t}).encode()


class Producer:
    async def open(self) -> None:
        from pgqueuer.queries import Queries

        self.driver = await _driver()
        self.q = Queries(self.driver)

    async def close(self) -> None:
        await self.driver._connection.close()

    async def submit(self, i: int, t: float | None = None) -> Any:
        return await self.q.enqueue("count", _payload(i, t))

    async def submit_many(self, items: list[int]) -> Any:
        return await self.q.enqueue(["count"] * len(items), [_payload(i) for i in items], [0] * len(items))


async def setup() -> None:
    from pgqueuer.queries import Queries

    driver = await _driver()
    await Queries(driver).install()

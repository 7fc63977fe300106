"""procrastinate (PostgreSQL, psycopg 3). Asynchronous; one worker process with --concurrency 10
(its knob), LISTEN/NOTIFY on (default). Bulk: Task.batch_defer_async (one statement). Finished
jobs stay in procrastinate_jobs (its default)."""

from __future__ import annotations

import os
import sys
from typing import Any

from adapters import _common

STORE = "postgres"
STYLE = "async"
NOTES = "worker --concurrency 10, listen-notify default, -q bench"


def _app() -> Any:
    from procrastinate import App, PsycopgConnector

    return App(connector=PsycopgConnector(conninfo=os.environ.get("BENCH_PG_URL", "postgresql://127.0.0.1:1/x")))


app = _app()


@app.task(name="count", queue="bench")  # type: ignore[untyped-decorator]  # peer not in the repo venv
async def count(i: int, t: float | None = None) -> None:
    await _common.count_async(i, t)


def worker_argv(concurrency: int) -> list[str]:
    return [os.path.join(sys.prefix, "bin", "procrastinate"), "--app", "adapters.procrastinate.app", "worker",
            "--concurrency", str(concurrency), "-q", "bench"]  # fmt: skip


class Producer:
    async def open(self) -> None:
        await app.open_async()

    async def close(self) -> None:
        await app.close_async()

    async def submit(self, i: int, t: float | None = None) -> Any:
        return await count.defer_async(i=i, t=t)

    async def submit_many(self, items: list[int]) -> Any:
        return await count.batch_defer_async(*({"i": i} for i in items))


async def setup() -> None:
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


async def add_history(n: int) -> None:
    """W5: n succeeded jobs kept in procrastinate_jobs (procrastinate keeps finished jobs)."""
    async with app.open_async():
        job_id = await count.defer_async(i=-1)
    await _common.clone_finished_rows("procrastinate_jobs", f"id = {int(job_id)}", n, {"status": "'succeeded'"}, {"id"})

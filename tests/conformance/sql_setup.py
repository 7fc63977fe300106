"""What the SQLite and PostgreSQL conformance runs share: schema creation and planting a record."""

import asyncio
import concurrent.futures
import uuid
from typing import Any

import sqlalchemy as sa
from bananas.backend import Backend
from bananas.clock import Clock
from bananas.plugins import connect

import bananas_sql


def connect_upgraded(url: str, clock: Clock, options: dict[str, Any]) -> Backend:
    """A backend on ``url`` in ``options["namespace"]`` (a fresh one if not given), its tables created first."""
    namespace = options.setdefault("namespace", "t" + uuid.uuid4().hex)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # upgrade is async; the factory is not
        pool.submit(asyncio.run, bananas_sql.upgrade(url, namespace=namespace)).result()
    return connect(url, clock=clock, **options)


async def overwrite_record(backend: Backend, job_id: str, text: str) -> None:
    """Replace the stored JSON of job ``job_id`` with ``text`` exactly, as a foreign or buggy producer would."""
    db: Any = backend.queue.db  # type: ignore[attr-defined]

    async def work(conn: Any) -> int:
        sql = sa.text(f"UPDATE {db.names.jobs} SET data = :data WHERE id = :id")
        return int((await conn.execute(sql, {"data": text, "id": job_id})).rowcount)

    assert await db.run(work) == 1, f"no stored job {job_id!r} to overwrite"

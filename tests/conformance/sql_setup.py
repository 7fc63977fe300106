"""What the SQLite and PostgreSQL conformance runs share: planting a record nobody can read."""

from typing import Any

import sqlalchemy as sa
from bananas.backend import Backend


async def overwrite_record(backend: Backend, job_id: str, text: str) -> None:
    """Replace the stored JSON of job ``job_id`` with ``text`` exactly, as a foreign or buggy producer would."""
    db: Any = backend.queue.db  # type: ignore[attr-defined]

    async def work(conn: Any) -> int:
        sql = sa.text(f"UPDATE {db.names.jobs} SET data = :data WHERE id = :id")
        return int((await conn.execute(sql, {"data": text, "id": job_id})).rowcount)

    assert await db.run(work) == 1, f"no stored job {job_id!r} to overwrite"

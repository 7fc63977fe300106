"""The conformance suite on SQLite: a fresh database file per backend, schema created first."""

import asyncio
import concurrent.futures
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from bananas.backend import Backend
from bananas.clock import Clock
from bananas.plugins import connect
from bananas.testing.suite import BackendConformance

import bananas_sql


class TestSqliteBackend(BackendConformance):
    @pytest.fixture
    def bananas_backend_factory(self, tmp_path: Path) -> Any:
        def factory(clock: Clock, /, **options: Any) -> Backend:
            url = f"sqlite:///{tmp_path}/{uuid.uuid4().hex}.db"
            with concurrent.futures.ThreadPoolExecutor(1) as pool:  # upgrade is async; the factory is not
                pool.submit(asyncio.run, bananas_sql.upgrade(url)).result()
            return connect(url, clock=clock, **options)

        return factory

    @pytest.fixture
    def bananas_overwrite_record(self) -> Any:
        """Plant an unreadable record: the jobs row's ``data`` replaced with ``text`` exactly."""
        return overwrite_record


async def overwrite_record(backend: Backend, job_id: str, text: str) -> None:
    """Replace the stored JSON of job ``job_id`` with ``text`` exactly, as a foreign or buggy producer would."""
    db: Any = backend.queue.db  # type: ignore[attr-defined]

    async def work(conn: Any) -> int:
        sql = sa.text(f"UPDATE {db.names.jobs} SET data = :data WHERE id = :id")
        return int((await conn.execute(sql, {"data": text, "id": job_id})).rowcount)

    assert await db.run(work) == 1, f"no stored job {job_id!r} to overwrite"

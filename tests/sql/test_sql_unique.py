"""Unique keys on PostgreSQL and SQLite: the unique_keys table, its sweep, and the upgrade
that creates it."""

from __future__ import annotations

from typing import Any

import pytest
from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.job import Job
from bananas.protocols import UniqueEnqueue
from bananas.unique import UniqueKey

pytestmark = pytest.mark.anyio


async def _submit(backend: Backend, clock: ManualClock, key: str) -> str:
    queue = backend.queue
    assert isinstance(queue, UniqueEnqueue)
    [answer] = await queue.enqueue_unique([(Job.create("charge", now=clock.now()), UniqueKey(key))])
    return answer


async def _keys(backend: Backend) -> list[str]:
    db: Any = backend.queue.db  # type: ignore[attr-defined]
    table = db.names.table("unique_keys")

    async def work(conn: Any) -> list[str]:
        rows = (await conn.execute(db.statement(f"SELECT unique_key FROM {table} ORDER BY unique_key"))).all()
        return [row[0] for row in rows]

    result: list[str] = await db.run(work, readonly=True)
    return result


async def test_keys_no_job_holds_are_swept(backend: Backend, clock: ManualClock) -> None:
    for key in ("a", "b"):
        await _submit(backend, clock, key)
        [claimed] = await backend.queue.claim(["default"])
        await backend.queue.complete(claimed)
    clock.advance(1)
    await _submit(backend, clock, "c")
    held = await _submit(backend, clock, "d")
    assert await _keys(backend) == ["c", "d"]
    assert await _submit(backend, clock, "d") == held, "a held key was swept"


async def test_upgrade_from_version_4_adds_the_table(db_url: str, namespace: str, clock: ManualClock) -> None:
    """A database of the previous version gets the unique_keys table (and its index) from the upgrade."""
    import sqlalchemy as sa
    from bananas.plugins import connect
    from bananas_sql.urls import postgres_sqlalchemy_url, sqlite_sqlalchemy_url
    from sqlalchemy.ext.asyncio import create_async_engine

    import bananas_sql

    await bananas_sql.upgrade(db_url, namespace=namespace)
    sa_url = sqlite_sqlalchemy_url(db_url) if db_url.startswith("sqlite") else postgres_sqlalchemy_url(db_url)
    engine = create_async_engine(sa_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"DROP TABLE {namespace}_unique_keys"))
            await conn.execute(sa.text(f"UPDATE {namespace}_schema_version SET version = 4"))
    finally:
        await engine.dispose()
    done = await bananas_sql.upgrade(db_url, namespace=namespace)
    assert done.startswith("applied 4 -> 5: the unique_keys table (unique jobs)"), done  # later steps may follow
    async with connect(db_url, namespace=namespace, clock=clock) as backend:
        first = await _submit(backend, clock, "k")
        assert await _submit(backend, clock, "k") == first

"""``move_scheduled`` finds due jobs through the partial index ``jobs_due`` (schema version 2),
never by scanning the backlog: with a million waiting jobs the scan took 130 ms on SQLite, under
the write lock, every ``scheduler_interval``, and slowed a drain to 0.74x the empty queue.
Databases made at version 1 get the index from ``bananas db upgrade``."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from bananas.clock import ManualClock
from bananas.errors import SchemaError
from bananas.job import Job
from bananas.plugins import connect
from bananas_sql.tables import SCHEMA_VERSION
from bananas_sql.urls import postgres_sqlalchemy_url, sqlite_sqlalchemy_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

import bananas_sql

pytestmark = pytest.mark.anyio


def _engine(url: str) -> sa.ext.asyncio.AsyncEngine:
    return create_async_engine(sqlite_sqlalchemy_url(url) if url.startswith("sqlite") else postgres_sqlalchemy_url(url))


async def _move_scheduled_plan(conn: AsyncConnection, query: str) -> str:
    literal = query.replace(":now", "1e12").replace(":batch", "1000")
    literal = literal.replace("%(now)s", "1e12").replace("%(batch)s", "1000")  # PostgreSQL's form
    if conn.dialect.name == "sqlite":
        rows = await conn.execute(sa.text("EXPLAIN QUERY PLAN " + literal))
        return "\n".join(str(row[3]) for row in rows)
    # Few rows: left to itself the planner may scan any small table; forbid that so the test
    # shows which index serves the query.
    await conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
    await conn.execute(sa.text("ANALYZE " + query.split(" FROM ", 1)[1].split(" ", 1)[0]))
    return "\n".join(str(row[0]) for row in await conn.execute(sa.text("EXPLAIN " + literal)))


async def test_move_scheduled_walks_the_due_index(db_url: str, namespace: str, clock: ManualClock) -> None:
    await bananas_sql.upgrade(db_url, namespace=namespace)
    async with connect(db_url, namespace=namespace, clock=clock) as backend:
        queue = backend.queue
        await queue.enqueue_many([Job.create("ready", {"i": i}) for i in range(500)])
        await queue.enqueue(Job.create("later", scheduled_for=clock.now() + timedelta(hours=1), now=clock.now()))
        query = str(queue.db.q["due_scheduled"])  # type: ignore[attr-defined]
        engine = _engine(db_url)
        try:
            async with engine.begin() as conn:
                plan = await _move_scheduled_plan(conn, query)
        finally:
            await engine.dispose()
        assert f"{namespace}_jobs_due" in plan, plan
        assert f"SCAN {namespace}_jobs\n" not in plan + "\n", plan
        assert f"Seq Scan on {namespace}_jobs" not in plan, plan


async def test_upgrade_from_version_1_adds_the_due_index(db_url: str, namespace: str, clock: ManualClock) -> None:
    await bananas_sql.upgrade(db_url, namespace=namespace)
    engine = _engine(db_url)

    def indexes(sync_conn: sa.Connection) -> set[str]:
        return {str(ix["name"]) for ix in sa.inspect(sync_conn).get_indexes(f"{namespace}_jobs")}

    try:
        async with engine.begin() as conn:  # a database as version 1 left it
            await conn.execute(sa.text(f"DROP INDEX {namespace}_jobs_due"))
            await conn.execute(sa.text(f"UPDATE {namespace}_schema_version SET version = 1"))
        async with connect(db_url, namespace=namespace) as backend:
            with pytest.raises(SchemaError, match=f"at schema version 1 but this bananas-sql needs {SCHEMA_VERSION}"):
                await backend.queue.enqueue(Job.create("x"))
        done = await bananas_sql.upgrade(db_url, namespace=namespace)
        assert done.startswith("applied 1 -> 2: the index jobs_due") and "applied 3 -> 4: " in done, done
        async with engine.connect() as conn:
            assert f"{namespace}_jobs_due" in await conn.run_sync(indexes)
            version = (await conn.execute(sa.text(f"SELECT version FROM {namespace}_schema_version"))).scalar()
            assert version == SCHEMA_VERSION
        async with connect(db_url, namespace=namespace, clock=clock) as backend:
            await backend.queue.enqueue(
                Job.create("due", scheduled_for=clock.now() + timedelta(seconds=5), now=clock.now())
            )
            assert await backend.queue.move_scheduled() == 0
            clock.advance(5)
            assert await backend.queue.move_scheduled() == 1
            assert [job.name for job in await backend.queue.claim(["default"])] == ["due"]
    finally:
        await engine.dispose()

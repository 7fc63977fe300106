"""Groups with limits on the SQL backends, beyond the conformance suite: the grouped claim's
statements walk the group indexes (never the whole table), the schema step that adds groups,
and an unreadable stored limit that holds back only its own group."""

from __future__ import annotations

import logging
import re
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.groups import GroupLimit
from bananas.job import Job
from bananas.plugins import connect
from bananas_sql.migrate import STEPS
from bananas_sql.migrate import _groups as migrate_groups
from bananas_sql.queries.groups import PostgresSql, SqliteSql
from bananas_sql.queries.postgres import claim_sql
from bananas_sql.tables import SCHEMA_VERSION, Names
from bananas_sql.urls import postgres_sqlalchemy_url, sqlite_sqlalchemy_url
from sqlalchemy.ext.asyncio import create_async_engine

import bananas_sql

pytestmark = pytest.mark.anyio

ONE = GroupLimit(max_running=1)


async def _fill(backend: Backend) -> None:
    """2,000 jobs without a group and 200 in 20 groups, one of them claimed."""
    await backend.queue.enqueue_many([Job.create("x", {"i": i}) for i in range(2000)])
    await backend.queue.enqueue_many([Job.create("x", {"i": i}, group=f"g{i % 20}") for i in range(200)])
    assert len(await backend.queue.claim(["default"], limit=1)) == 1


def _generic_plan(url: str, table: str, text: str, params: dict[str, Any]) -> str:
    """The EXPLAIN ANALYZE of ``text``'s generic plan (as the claim pool runs it), rolled back."""
    names = sorted({m for m in re.findall(r"%\((\w+)\)s", text)}, key=len, reverse=True)
    numbered = text
    for i, name in enumerate(names, 1):
        numbered = numbered.replace(f"%({name})s", f"${i}")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"ANALYZE {table}")
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute("SET enable_seqscan = off")  # as on the claim connections
        conn.execute("BEGIN")
        conn.execute("PREPARE plan_check AS " + numbered)
        explain = f"EXPLAIN (ANALYZE) EXECUTE plan_check({', '.join(['%s'] * len(names))})"
        rows = psycopg.ClientCursor(conn).execute(explain, [params[n] for n in names])
        plan = "\n".join(row[0] for row in rows)
        conn.execute("ROLLBACK")
    return plan


async def test_postgres_grouped_claim_walks_the_group_indexes(postgres_url: str, namespace: str) -> None:
    await bananas_sql.upgrade(postgres_url, namespace=namespace)
    backend = connect(postgres_url, namespace=namespace)
    try:
        await _fill(backend)
        names = Names.from_extra({"namespace": namespace}).as_mapping()
        table = names["jobs"]
        params: dict[str, Any] = {
            "now": 1e12, "keys": ["default"], "ranks": [0, 1, 2], "names": [], "groups": ["g1", "g2"],
            "rated": ["g1"], "since": [0.0], "caps": [5], "lease_until": 1.0, "token": "t", "gk": ["default"],
            "gp": [1], "gg": ["g3"], "gn": [2], "uk": ["default"], "up": [1], "un": [2], "k0": "default",
            "limit": 2, "lease_token": "t",
        }  # fmt: skip
        statements = {
            "participants": PostgresSql.participants(names, True, False),
            "usage": PostgresSql.usage(names),
            "take": PostgresSql.take(table, False),
            "plain claim": claim_sql(table, 1, True, False),
        }
        plans = {name: _generic_plan(postgres_url, table, text, params) for name, text in statements.items()}
        for name, plan in plans.items():
            assert f"Seq Scan on {table}" not in plan, f"{name}:\n{plan}"
        assert f"{table}_grouped" in plans["participants"], plans["participants"]
        assert f"{table}_grouped" in plans["take"], plans["take"]
        assert f"{table}_lease" in plans["usage"], plans["usage"]  # processing rows: as many as workers hold
        assert f"{table}_grouped" in plans["plain claim"], plans["plain claim"]  # the one probe it adds
    finally:
        await backend.close()


async def test_sqlite_grouped_claim_walks_the_group_indexes(sqlite_url: str, tmp_path: Path) -> None:
    await bananas_sql.upgrade(sqlite_url)
    backend = connect(sqlite_url)
    try:
        await _fill(backend)
        names = Names.from_extra({}).as_mapping()
        params = {"now": 1e12, "k0": "default", "g0": "g1", "k": "default", "p": 1, "g": "g3", "n": 2,
                  "lease_until": 1.0, "token": "t"}  # fmt: skip
        statements = {
            "participants": SqliteSql.participants(names, 1, (0, 1, 2), False, 0),
            "running": SqliteSql.running(names["jobs"], 1),
            "take": SqliteSql.take(names["jobs"], True, 0),
            "grouped due": SqliteSql.grouped_due(names["jobs"], 1),
        }
        with sqlite3.connect(tmp_path / "jobs.db") as conn:
            conn.execute("ANALYZE")
            plans = {
                name: [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + text, params)]
                for name, text in statements.items()
            }
        for name, plan in plans.items():
            assert not any(re.match(r"SCAN bananas_jobs\b(?! USING)", step) for step in plan), (name, plan)
        assert any("bananas_jobs_grouped" in step for step in plans["participants"]), plans["participants"]
        assert any("bananas_jobs_grouped" in step for step in plans["take"]), plans["take"]
        assert any("bananas_jobs_lease" in step for step in plans["running"]), plans["running"]
    finally:
        await backend.close()


async def test_upgrade_to_groups_keeps_jobs_and_adds_groups(db_url: str, namespace: str) -> None:
    await bananas_sql.upgrade(db_url, namespace=namespace)
    names = Names.from_extra({"namespace": namespace})
    sa_url = sqlite_sqlalchemy_url(db_url) if db_url.startswith("sqlite") else postgres_sqlalchemy_url(db_url)
    engine = create_async_engine(sa_url)
    try:
        async with connect(db_url, namespace=namespace) as backend:
            old = Job.create("x", {"before": True})
            await backend.queue.enqueue(old)
        [step] = [step for step in STEPS if step.apply is migrate_groups]
        async with engine.begin() as conn:  # back to the version before: no group column, tables or triggers
            if db_url.startswith("postgresql"):
                await conn.execute(sa.text(f"DROP TRIGGER {names.prefix}jobs_group_slot ON {names.jobs}"))
            for index in ("jobs_grouped", "jobs_claim"):
                await conn.execute(sa.text(f"DROP INDEX {names.table(index)}"))
            await conn.execute(
                sa.text(
                    f"CREATE INDEX {names.prefix}jobs_claim ON {names.jobs} (routing_key, priority, position) "
                    "WHERE state IN ('ready', 'scheduled')"
                )
            )
            for table in ("group_limits", "group_state", "group_starts"):
                await conn.execute(sa.text(f"DROP TABLE {names.table(table)}"))
            await conn.execute(sa.text(f"ALTER TABLE {names.jobs} DROP COLUMN group_name"))
            await conn.execute(sa.text(f"UPDATE {names.version} SET version = {step.version - 1}"))
        done = await bananas_sql.upgrade(db_url, namespace=namespace)
        assert done == f"applied {step.version - 1} -> {step.version}: {step.description}", done
        assert step.version == SCHEMA_VERSION
        async with engine.connect() as conn:  # the claim index rebuilt without grouped rows
            where = (
                "sql FROM sqlite_master WHERE name"
                if db_url.startswith("sqlite")
                else "indexdef FROM pg_indexes WHERE indexname"
            )
            found = (await conn.execute(sa.text(f"SELECT {where} = '{names.prefix}jobs_claim'"))).scalar()
            assert "group_name IS NULL" in str(found), found
        async with connect(db_url, namespace=namespace) as backend:
            await backend.queue.set_group_limit("g", ONE)  # type: ignore[attr-defined]
            grouped = [Job.create("x", group="g") for _ in range(2)]
            await backend.queue.enqueue_many(grouped)
            claimed = await backend.queue.claim(["default"], limit=10)
            assert {j.id for j in claimed} == {old.id, grouped[0].id}  # the group's limit holds the second
    finally:
        await engine.dispose()


async def test_an_unreadable_limit_holds_back_only_its_group(
    backend: Backend, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    queue: Any = backend.queue
    group = f"bad-{uuid.uuid4().hex[:8]}"  # an unreadable limit is reported once per process
    await queue.set_group_limit(group, ONE)
    names = queue.db.names

    async def spoil(conn: Any) -> None:
        spoilt = f'UPDATE {names.table("group_limits")} SET data = \'{{"max_running": "lots"\''
        await conn.execute(queue.db.statement(spoilt))

    await queue.db.run(spoil)
    bad = Job.create("x", group=group)
    fine = [Job.create("x", group="fine"), Job.create("x")]
    await queue.enqueue_many([bad, *fine])
    with caplog.at_level(logging.WARNING, logger="bananas.groups"):
        claimed = await queue.claim(["default"], limit=10)
    assert {j.id for j in claimed} == {j.id for j in fine}
    assert any(repr(group) in r.getMessage() and "unreadable" in r.getMessage() for r in caplog.records)
    assert group not in await queue.group_limits()
    assert (await queue.get_job(bad.id)).attempts == 0


async def test_a_free_group_behind_many_held_back_ones_is_reached(backend: Backend) -> None:
    """51 groups under max_running=1, each with one job running: the one whose slot frees is the
    last in turn (served last), and a claim of one job still finds it past the 50 held back."""
    queue: Any = backend.queue
    await queue.set_group_limit("*", ONE)
    names = [f"g{i:02d}" for i in range(50)] + ["z"]
    for name in names:
        await queue.enqueue_many([Job.create("x", group=name) for _ in range(2)])
    running = {}
    for _ in names:  # one claim each: every group is served once, z last
        [job] = await queue.claim(["default"], limit=1)
        running[job.group] = job
    assert set(running) == set(names)
    assert await queue.claim(["default"], limit=1) == []  # every group holds its one slot
    await queue.complete(running["z"])
    [job] = await queue.claim(["default"], limit=1)
    assert job.group == "z"

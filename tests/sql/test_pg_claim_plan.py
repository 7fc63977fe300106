"""The PostgreSQL claim runs as a prepared statement with its generic plan (the claim pool
forces it). That plan must walk the claim index and find the claimed rows by primary key:
with ``seq IN (subquery)`` it hash-joined against a sequential scan of the whole table
(200 ms with a million jobs)."""

from __future__ import annotations

import psycopg
import pytest
from bananas.job import Job
from bananas.plugins import connect
from bananas_sql.queries.postgres import claim_sql

import bananas_sql

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(("n_keys", "all_priorities", "by_name"), [(1, True, False), (2, False, True)])
async def test_generic_claim_plan_never_scans_the_table(
    postgres_url: str, namespace: str, n_keys: int, all_priorities: bool, by_name: bool
) -> None:
    await bananas_sql.upgrade(postgres_url, namespace=namespace)
    backend = connect(postgres_url, namespace=namespace)
    try:
        await backend.queue.enqueue_many([Job.create("x", {"i": i}) for i in range(2000)])
        table = f"{namespace}_jobs"
        params = {"now": 1e12, "limit": 10, "lease_until": 1.0, "lease_token": "t", "k0": "default", "k1": "gpu",
                  "prios": [0, 1], "names": ["x"]}  # fmt: skip
        text = claim_sql(table, n_keys, all_priorities, by_name)
        names = [n for n in params if f"%({n})s" in text]
        numbered = text
        for i, name in sorted(enumerate(names, 1), key=lambda p: -len(p[1])):
            numbered = numbered.replace(f"%({name})s", f"${i}")
        values = ", ".join(["%s"] * len(names))
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"ANALYZE {table}")
            conn.execute("SET plan_cache_mode = force_generic_plan")
            for _ in range(3):
                assert len(conn.execute(text, params).fetchall()) == 10
            conn.execute("PREPARE generic_claim AS " + numbered)
            explain = f"EXPLAIN (ANALYZE) EXECUTE generic_claim({values})"
            rows = psycopg.ClientCursor(conn).execute(explain, [params[n] for n in names])  # values inlined
            plan = "\n".join(row[0] for row in rows)
        assert f"Seq Scan on {table}" not in plan, plan
        assert f"{namespace}_jobs_claim" in plan, plan
    finally:
        await backend.close()

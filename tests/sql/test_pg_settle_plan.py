"""PostgreSQL statements that find claimed rows by key (settles fenced by lease tokens, one at a
time or group-committed, lease renewals, handed-over rows, the reaper's per-row writes) must
look them up by key. Written with ``state = 'processing'`` the planner could match the lease
index's predicate and, with the statistics a busy drain leaves behind (few leases when last
analysed, many index entries now), walk every lease in that index for each statement: twice
the buffers per settled job in a 10,000-job drain."""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
import pytest
from bananas.job import Job
from bananas.plugins import connect

import bananas_sql

pytestmark = pytest.mark.anyio


def _params(ids: list[str], seqs: list[int], tokens: list[str]) -> dict[str, object]:
    n = len(ids)
    return {
        "id": ids, "ids": ids, "seqs": seqs, "token": tokens, "tokens": tokens, "data": ["{}"] * n,
        "now": [1.0] * n, "expires_at": [2.0] * n, "result": ["null"] * n, "result_expires_at": [3.0] * n,
        "until": 5.0, "error": "x",
    }  # fmt: skip


STATEMENTS = [
    ("pg_combined", "complete"), ("pg_combined", "complete_and_store"), ("pg", "renew_many"),
    ("pg", "renew_handed"), ("pg", "handed_rows"), ("pg", "complete_and_store"), ("sql", "renew"),
    ("sql", "bury"), ("sql", "reap_ready"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "name"), STATEMENTS)
async def test_statements_by_key_look_their_rows_up_by_key(
    postgres_url: str, namespace: str, kind: str, name: str
) -> None:
    await bananas_sql.upgrade(postgres_url, namespace=namespace)
    backend = connect(postgres_url, namespace=namespace)
    try:
        await backend.queue.enqueue_many([Job.create("x", {"i": i}) for i in range(3000)])
        table = f"{namespace}_jobs"
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"ANALYZE {table}")  # no leases when analysed
            claimed: list[Job] = []
            while len(claimed) < 2000:
                claimed += await backend.queue.claim(["default"], limit=100)
            batch = claimed[-10:]
            ids = [job.id for job in batch]
            rows = conn.execute(f"SELECT id, seq FROM {table} WHERE id = ANY(%s)", [ids]).fetchall()
            seq_of: Mapping[str, int] = dict(rows)
            text = getattr(backend.queue.db, kind)[name]
            params = _params(ids, [seq_of[i] for i in ids], [job.lease_token for job in batch])
            if kind != "pg_combined" and name not in ("renew_many", "renew_handed", "handed_rows"):
                one = {"id": ids[0], "seq": seq_of[ids[0]], "token": batch[0].lease_token, "data": "{}"}
                params = {**params, **one, "now": 1.0, "expires_at": 2.0, "result": "null", "result_expires_at": 3.0}
            plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + text, params).fetchall())
        assert f"{namespace}_jobs_lease" not in plan, plan
        assert f"Seq Scan on {table}" not in plan, plan
    finally:
        await backend.close()

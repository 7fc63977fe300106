"""Does the PostgreSQL claim cost more with a large backlog? The claim of bananas_sql (one
routing key, all priorities, 10 jobs) timed 200 times and EXPLAINed (ANALYZE, BUFFERS) with
3,000 and with 1,000,000 ready jobs, in a throwaway cluster with fsync on and claims committed
asynchronously, as the queue runs them:

- ``literal``: the statement with its values written in (planned for those values each time);
- ``prepared``: the queue's own statement (``claim_sql``) with parameters, prepared by psycopg
  after its fifth use, so PostgreSQL may switch to a generic plan chosen without the values;
- ``custom`` / ``generic``: the same with ``plan_cache_mode = force_custom_plan`` /
  ``force_generic_plan``.

    bench/.venvs/bananas/bin/python bench/pg_claim_probe.py
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib.stores import load_servers

JOB = (
    '{"id":"x","name":"count","payload":{"i":1},"status":"pending","priority":"normal",'
    '"routing_key":"default","created_at":"2025-01-01T00:00:00Z","updated_at":"2025-01-01T00:00:00Z",'
    '"attempts":0,"max_retries":3}'
)
FILL = (
    "INSERT INTO bananas_jobs (id, name, state, routing_key, priority, position, run_at, data) "
    "SELECT 'j' || g || '-' || clock_timestamp(), 'count', 'ready', 'default', 1, "
    "nextval('bananas_job_position'), 0, %s FROM generate_series(1, %s) g"
)
CLAIM = (
    "UPDATE bananas_jobs SET state = 'processing', lease_until = 1e10 WHERE seq IN ("
    "SELECT seq FROM bananas_jobs WHERE state IN ('ready', 'scheduled') AND run_at <= 1e10 "
    "AND routing_key = 'default' ORDER BY priority, position LIMIT 10 FOR UPDATE SKIP LOCKED) RETURNING seq"
)


def _median_ms(run: Callable[[], object], n: int = 200) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _fill(conn: psycopg.Connection, ready: int) -> None:
    conn.execute("TRUNCATE bananas_jobs")
    conn.execute(FILL, (JOB, ready))
    conn.execute("VACUUM ANALYZE bananas_jobs")


def probe(conn: psycopg.Connection, ready: int) -> None:
    from bananas_sql.queries.postgres import claim_sql

    claim = claim_sql("bananas_jobs", 1, True, False)
    params = {"now": 1e10, "limit": 10, "lease_until": 1e10, "k0": "default"}
    conn.execute("SET synchronous_commit = off")
    medians = {}
    for mode, sql, args, plan_cache in (
        ("literal", CLAIM, None, "auto"),
        ("prepared", claim, params, "auto"),
        ("custom", claim, params, "force_custom_plan"),
        ("generic", claim, params, "force_generic_plan"),
    ):
        _fill(conn, ready)  # each mode claims 2,000 of its own fresh jobs
        conn.execute(f"SET plan_cache_mode = {plan_cache}")
        medians[mode] = _median_ms(lambda sql=sql, args=args: conn.execute(sql, args).fetchall())
    conn.execute("RESET plan_cache_mode")
    print(f"{ready:,} ready jobs: median claim ms:", ", ".join(f"{k} {v:.3f}" for k, v in medians.items()))
    _fill(conn, ready)
    print("  plan of the literal statement:")
    for (line,) in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + CLAIM).fetchall():
        print("   ", line)
    print("  generic plan of the prepared statement:")
    conn.execute("SET plan_cache_mode = force_generic_plan")
    numbered = claim.replace(":now", "$1").replace(":limit", "$2").replace(":lease_until", "$3").replace(":k0", "$4")
    conn.execute("PREPARE probe_claim(float8, int, float8, text) AS " + numbered)
    for (line,) in conn.execute("EXPLAIN (ANALYZE, BUFFERS) EXECUTE probe_claim(1e10, 10, 1e10, 'default')"):
        print("   ", line)
    conn.execute("DEALLOCATE probe_claim")
    conn.execute("RESET plan_cache_mode")


def main() -> None:
    import bananas_sql

    server = load_servers().PostgresServer(fsync=True).start()
    try:
        asyncio.run(bananas_sql.upgrade(server.url))
        with psycopg.connect(server.url, autocommit=True) as conn:
            for ready in (3_000, 1_000_000):
                probe(conn, ready)
    finally:
        server.stop()


if __name__ == "__main__":
    main()

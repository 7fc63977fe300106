"""Does the PostgreSQL claim statement cost more with a large backlog? The claim of bananas_sql
(postgres.py, _CLAIM_ONE_KEY: one routing key, all priorities, LIMIT 10) timed 200 times and
EXPLAINed (ANALYZE, BUFFERS) with 3,000 and with 1,000,000 ready jobs, in a throwaway cluster.

    bench/.venvs/bananas/bin/python bench/pg_claim_probe.py
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
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


def probe(conn: psycopg.Connection, ready: int) -> None:
    conn.execute("TRUNCATE bananas_jobs")
    conn.execute(FILL, (JOB, ready))
    conn.execute("VACUUM ANALYZE bananas_jobs")
    times = []
    for _ in range(200):
        started = time.perf_counter()
        conn.execute(CLAIM).fetchall()
        times.append((time.perf_counter() - started) * 1000)
    print(f"{ready:,} ready jobs: median claim {statistics.median(times):.3f} ms; plan:")
    for (line,) in conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + CLAIM).fetchall():
        print("   ", line)


def main() -> None:
    import bananas_sql

    server = load_servers().PostgresServer().start()
    try:
        asyncio.run(bananas_sql.upgrade(server.url))
        with psycopg.connect(server.url, autocommit=True) as conn:
            for ready in (3_000, 1_000_000):
                probe(conn, ready)
    finally:
        server.stop()


if __name__ == "__main__":
    main()

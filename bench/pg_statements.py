"""What PostgreSQL spends on Bananas' statements in a drain, per version, with pg_stat_statements.

    bench/.venvs/driver/bin/python bench/pg_statements.py --config old=c39006c --config head=HEAD
    bench/.venvs/driver/bin/python bench/pg_statements.py --config head=. --rounds 1 --explain

Starts one throwaway PostgreSQL cluster (fsync on) with ``pg_stat_statements`` loaded. Each
round, for every ``--config NAME=REV`` in turn (built as ``bench/ab.py`` builds them; ``.`` is
this checkout's ``.venv``): a new database, ``bananas db upgrade``, ``--jobs`` jobs submitted,
the statistics reset, one worker (``--concurrency 10``, a no-op handler) started and timed
until every job is completed. Prints per round the drain rate, the statement time per job and
the worker's CPU; writes every statement's calls, time, buffers and WAL per round to
``--out``. ``--explain`` also logs a sample of plans with buffers (``auto_explain``) into
``--out``'s directory as ``postgresql.log``. Statement times are counted by the server, so
they hold even on a machine busy with other work, unlike the drain rate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

import psycopg  # noqa: E402
from ab import venv_for  # noqa: E402

from tests.servers import PostgresServer  # noqa: E402

APP = """from bananas.worker import Registry
registry = Registry()


@registry.handler("noop")
async def noop(ctx, job):
    return None
"""
SUBMIT = """import asyncio, sys
from bananas import AsyncClient
async def main(url, n):
    async with AsyncClient(url) as c:
        for s in range(0, n, 1000):
            await c.submit_many([{"name": "noop", "payload": {"i": i}} for i in range(s, min(n, s + 1000))])
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""
STATS = (
    "SELECT query, calls, total_exec_time, rows, shared_blks_hit, shared_blks_read, shared_blks_dirtied, "
    "wal_records, wal_bytes FROM pg_stat_statements WHERE dbid = %s ORDER BY total_exec_time DESC"
)
EXPLAIN = (
    "session_preload_libraries = 'auto_explain'", "log_min_messages = log", "auto_explain.log_min_duration = 0",
    "auto_explain.log_analyze = on", "auto_explain.log_buffers = on", "auto_explain.sample_rate = 0.01",
)  # fmt: skip


def drain(admin: psycopg.Connection[Any], base: str, db: str, venv: Path, work: Path, args: Any) -> dict[str, Any]:
    """One drain of ``args.jobs`` jobs in a new database; the statements' statistics."""
    admin.execute(f"CREATE DATABASE {db}")
    url = base.rsplit("/", 1)[0] + "/" + db
    py = str(venv / "bin" / "python")
    subprocess.run([str(venv / "bin" / "bananas"), "db", "upgrade", "--url", url], check=True, capture_output=True)
    subprocess.run([py, str(work / "submit.py"), url, str(args.jobs)], check=True)
    dbid = admin.execute("SELECT oid FROM pg_database WHERE datname = %s", (db,)).fetchone()[0]  # type: ignore[index]
    admin.execute("SELECT pg_stat_statements_reset(0, %s, 0)", (dbid,))
    if args.explain:
        for setting in EXPLAIN:
            admin.execute(f"ALTER DATABASE {db} SET {setting}")
    argv = [py, "-m", "bananas.worker", "app:registry", "--url", url, "--concurrency", "10", "--log-level", "WARNING"]
    worker = subprocess.Popen(argv, env={**os.environ, "PYTHONPATH": str(work)})
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            count = "SELECT count(*) FROM bananas_jobs WHERE state = 'completed'"
            first: tuple[float, int] | None = None
            done = 0
            while done < args.jobs:
                time.sleep(0.05)
                done = conn.execute(count).fetchone()[0]  # type: ignore[index]
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited at {done}/{args.jobs} jobs")
                if done and first is None:
                    first = (time.monotonic(), done)
            assert first is not None
            rate = (args.jobs - first[1]) / max(time.monotonic() - first[0], 1e-9)
        fields = Path(f"/proc/{worker.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    finally:
        worker.terminate()
        worker.wait(60)
    rows = admin.execute(STATS, (dbid,)).fetchall()
    admin.execute(f"DROP DATABASE {db} WITH (FORCE)")
    columns = ("query", "calls", "ms", "rows", "hit", "read", "dirtied", "wal_records", "wal_bytes")
    statements = [dict(zip(columns, (r[0], *map(float, r[1:])), strict=True)) for r in rows]
    return {"rate": rate, "worker_cpu_s": cpu, "us_per_job": sum(s["ms"] for s in statements) * 1000 / args.jobs,
            "statements": statements}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", action="append", required=True, help="NAME=REV (twice or more to compare)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--explain", action="store_true", help="log a sample of plans (auto_explain)")
    p.add_argument("--out", default=str(BENCH / ".scratch" / "pg_statements.json"))
    p.add_argument("--cache", default="/tmp/bananas-ab", help="worktrees and venvs of revisions (as bench/ab.py)")
    args = p.parse_args()
    configs = [c.split("=", 1) for c in args.config]
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    venvs = {name: venv_for(rev, cache) for name, rev in configs}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / "pg_statements_app"
    work.mkdir(exist_ok=True)
    (work / "app.py").write_text(APP)
    (work / "submit.py").write_text(SUBMIT)
    pg = PostgresServer(fsync=True)
    with open(os.path.join(pg.datadir, "postgresql.conf"), "a") as conf:
        conf.write("\nshared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = all\n"
                   "logging_collector = on\nlog_directory = 'log'\n")  # fmt: skip
    pg.start()
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in configs}
    try:
        with psycopg.connect(pg.url, autocommit=True) as admin:
            admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            for r in range(args.rounds):
                for name, _ in configs:
                    d = drain(admin, pg.url, f"r{r}_{name}", venvs[name], work, args)
                    results[name].append(d)
                    print(f"round {r + 1} {name}: {d['rate']:,.0f} jobs/s, statements {d['us_per_job']:.1f} us/job, "
                          f"worker CPU {d['worker_cpu_s']:.2f} s", flush=True)  # fmt: skip
    finally:
        out.write_text(json.dumps(results, indent=1))
        if args.explain:
            with open(out.parent / "postgresql.log", "wb") as log:
                for f in sorted((Path(pg.datadir) / "log").glob("*")):
                    log.write(f.read_bytes())
        pg.stop()
    print(f"statements per round in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

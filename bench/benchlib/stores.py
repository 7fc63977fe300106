"""The stores a run uses: its own throwaway redis-server and PostgreSQL cluster (the classes of
tests/servers.py, loaded by path), SQLite files, and the counter every job body increments."""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import IO, Any

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
SCRATCH = BENCH / ".scratch"

COUNTER_KEY = "bench:counter"
SQL_TABLES = (
    "CREATE TABLE IF NOT EXISTS bench_counter (id integer PRIMARY KEY, n bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS bench_latency (s double precision NOT NULL)",
    "INSERT INTO bench_counter (id, n) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
)


def load_servers() -> ModuleType:
    """tests/servers.py, imported by path (the test suite is not a package we can depend on)."""
    spec = importlib.util.spec_from_file_location("bananas_test_servers", ROOT / "tests" / "servers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _wait_postgres_ready(url: str, timeout: float = 30.0) -> None:
    """The port listens before the cluster accepts sessions ("the database system is starting up")."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(url, connect_timeout=5).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Servers:
    """Starts only what the selected systems need; stops only what it started."""

    def __init__(self, need_redis: bool, need_postgres: bool) -> None:
        servers = load_servers()
        self.redis: Any = servers.RedisServer().start() if need_redis else None
        self.postgres: Any = None
        if need_postgres:
            # fsync and synchronous_commit stay ON for the benchmark (the default of PostgreSQL).
            self.postgres = servers.PostgresServer(fsync=True).start()
            _wait_postgres_ready(self.postgres.url)

    def stop(self) -> None:
        for server in (self.redis, self.postgres):
            if server is not None:
                server.stop()


class Store:
    """One system's store: reset between runs, read the job counter, measure memory."""

    def __init__(self, kind: str, system: str, servers: Servers) -> None:
        self.kind = kind
        self.system = system
        self.servers = servers
        self.db = "bench_" + system.replace("-", "_")
        self.sqlite_path = SCRATCH / f"{system}.db"
        self._redis: Any = None
        self._pg: Any = None
        self._sqlite: sqlite3.Connection | None = None

    # ---- environment for the adapter processes ----------------------------------------
    def env(self) -> dict[str, str]:
        env = {"BENCH_STORE": self.kind}
        if self.servers.redis is not None:
            env["BENCH_REDIS_URL"] = self.servers.redis.url
        if self.servers.postgres is not None:
            env["BENCH_PG_URL"] = self.pg_url()
        env["BENCH_SQLITE_PATH"] = str(self.sqlite_path)
        return env

    def pg_url(self, db: str | None = None) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.servers.postgres.port}/{db or self.db}"

    # ---- lifecycle ---------------------------------------------------------------------
    def fresh(self) -> None:
        """An empty store with the counter at 0 (Redis FLUSHALL, a new database or file)."""
        self.close()
        if self.servers.redis is not None:
            self.redis().flushall()
        if self.kind == "postgres":
            import psycopg

            with psycopg.connect(self.pg_url("postgres"), autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
                admin.execute(f'CREATE DATABASE "{self.db}"')
            for stmt in SQL_TABLES:
                self.pg().execute(stmt)
        elif self.kind == "sqlite":
            SCRATCH.mkdir(exist_ok=True)
            for suffix in ("", "-wal", "-shm"):
                Path(str(self.sqlite_path) + suffix).unlink(missing_ok=True)
            conn = self.sqlite()
            conn.execute("PRAGMA journal_mode = WAL")
            for stmt in SQL_TABLES:
                conn.execute(stmt.replace("double precision", "real").replace("bigint", "integer"))

    def settle(self) -> None:
        """After a bulk fill: on PostgreSQL VACUUM ANALYZE, so that W5 measures the queue with its
        backlog, not an autovacuum of a million fresh rows running on the same 2 cores; on SQLite
        a WAL checkpoint, so that it does not measure the first writers copying the fill's
        gigabyte of WAL into the database file."""
        if self.kind == "postgres":
            import psycopg

            with psycopg.connect(self.pg_url(), autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
        elif self.kind == "sqlite":
            self.sqlite().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def close(self) -> None:
        if self._pg is not None:
            self._pg.close()
            self._pg = None
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None

    # ---- clients -----------------------------------------------------------------------
    def redis(self) -> Any:
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(self.servers.redis.url)
        return self._redis

    def pg(self) -> Any:
        if self._pg is None:
            import psycopg

            self._pg = psycopg.connect(self.pg_url(), autocommit=True)
        return self._pg

    def sqlite(self) -> sqlite3.Connection:
        if self._sqlite is None:
            self._sqlite = sqlite3.connect(self.sqlite_path, timeout=60, isolation_level=None)
            self._sqlite.execute("PRAGMA busy_timeout = 60000")
        return self._sqlite

    # ---- the counter -------------------------------------------------------------------
    def counter(self) -> int:
        if self.kind == "redis":
            return int(self.redis().get(COUNTER_KEY) or 0)
        if self.kind == "postgres":
            return int(self.pg().execute("SELECT n FROM bench_counter WHERE id = 1").fetchone()[0])
        return int(self.sqlite().execute("SELECT n FROM bench_counter WHERE id = 1").fetchone()[0])

    def reset_counter(self) -> None:
        if self.kind == "redis":
            self.redis().set(COUNTER_KEY, 0)
        elif self.kind == "postgres":
            self.pg().execute("UPDATE bench_counter SET n = 0 WHERE id = 1")
        else:
            self.sqlite().execute("UPDATE bench_counter SET n = 0 WHERE id = 1")

    def operations(self) -> int:
        """Redis commands processed (scripts' inner calls included), or PostgreSQL commits
        in this system's database; with SQLite nothing is counted (0)."""
        if self.kind == "redis":
            return int(self.redis().info("stats")["total_commands_processed"])
        if self.kind == "postgres":
            self.pg().execute("SELECT pg_stat_clear_snapshot()")
            row = (
                self.pg()
                .execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
                .fetchone()
            )
            return int(row[0])
        return 0

    def server_cpu_seconds(self) -> float:
        """CPU used so far by the server of this store (and its children); 0 for SQLite."""
        from benchlib.procs import tree_cpu_seconds

        server = {"redis": self.servers.redis, "postgres": self.servers.postgres}.get(self.kind)
        return tree_cpu_seconds(server.proc.pid) if server is not None and server.proc is not None else 0.0

    def redis_used_memory(self) -> int | None:
        if self.kind != "redis":
            return None
        return int(self.redis().info("memory")["used_memory"])

    def cleanup(self) -> None:
        self.close()
        if self.kind == "postgres" and self.servers.postgres is not None:
            import psycopg

            with psycopg.connect(self.pg_url("postgres"), autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        if self.kind == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(str(self.sqlite_path) + suffix).unlink(missing_ok=True)


def rmtree_scratch() -> None:
    shutil.rmtree(SCRATCH, ignore_errors=True)
    os.makedirs(SCRATCH, exist_ok=True)


def claim_scratch() -> IO[str]:
    """Lock bench/.scratch for this run (until the returned file is closed or the process
    ends), then empty it. Two runs of one checkout would delete and recreate each other's
    SQLite files and logs under running workers (an idle worker then serves a deleted file),
    so a second run stops here instead."""
    lock = open(BENCH / ".scratch.lock", "w")  # noqa: SIM115 -- held for the whole run
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise SystemExit(
            "bench: another bench/run.py of this checkout is running and owns bench/.scratch; "
            "wait for it, or run from another clone"
        ) from None
    rmtree_scratch()
    return lock

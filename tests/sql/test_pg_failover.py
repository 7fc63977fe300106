"""PostgreSQL high availability: multi-host URLs, read-only servers, unknown commit outcomes,
and a switch of primaries under load with real ``bananas worker`` processes.

Every server is real and on loopback: the shared test server, a dedicated one, or a primary
with a streaming replica made by ``pg_basebackup -R`` (:mod:`pg_replication`). Faults are real
too: a TCP proxy that cuts a connection right after the server answered a statement (so the
commit happened and the client cannot know), a server turned read-only, a primary stopped
with ``pg_ctl stop -m immediate`` and its replica promoted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from bananas.backend import redact_url
from bananas.client import AsyncClient
from bananas.errors import BackendUnavailable, DuplicateJob
from bananas.job import Job, JobStatus
from bananas.plugins import connect
from bananas_sql.database import same_submission
from bananas_sql.urls import postgres_conninfo, postgres_sqlalchemy_url
from servers import PostgresServer
from sql.pg_replication import replicated_postgres

import bananas_sql

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
BANANAS = str(Path(sys.executable).with_name("bananas"))


# -- URLs ------------------------------------------------------------------------------------


def test_multi_host_url_reaches_libpq_and_sqlalchemy_intact() -> None:
    url = "postgresql://app:s3cret@db1:5432,db2:5433/jobs?target_session_attrs=read-write&namespace=n&sslmode=prefer"
    assert postgres_conninfo(url) == (
        "postgresql://app:s3cret@db1:5432,db2:5433/jobs?target_session_attrs=read-write&sslmode=prefer"
    )
    args = sa.create_engine(postgres_sqlalchemy_url(url)).dialect.create_connect_args(sa.engine.make_url(
        postgres_sqlalchemy_url(url)))[1]  # fmt: skip
    assert (args["host"], args["port"], args["dbname"], args["user"], args["password"]) == (
        "db1,db2", "5432,5433", "jobs", "app", "s3cret",
    )  # fmt: skip
    assert args["target_session_attrs"] == "read-write" and "namespace" not in args
    assert redact_url(url) == (
        "postgresql://app:***@db1:5432,db2:5433/jobs?target_session_attrs=read-write&namespace=n&sslmode=prefer"
    )
    # hosts without ports, IPv6, a socket directory in the query: as libpq reads them
    args = sa.engine.make_url(postgres_sqlalchemy_url("postgres://u@[::1],db2:6000/x")).query
    assert (args["host"], args["port"]) == ("::1,db2", ",6000")
    assert postgres_sqlalchemy_url("postgresql:///x?host=/run/pg") == "postgresql+psycopg:///x?host=%2Frun%2Fpg"


def test_same_submission_ignores_what_workers_rewrite_only() -> None:
    job = Job.create("a", {"n": 1})
    ran = job.evolve(status=JobStatus.COMPLETED, attempts=2, error="x", updated_at=job.updated_at.replace(year=2031))
    assert same_submission(ran.to_json(), job.to_json())
    assert not same_submission(job.evolve(payload={"n": 2}).to_json(), job.to_json())
    assert not same_submission(Job.create("a", {"n": 1}, job_id=job.id).to_json(), job.to_json())  # other created_at
    assert not same_submission("not json", job.to_json())


# -- a commit whose outcome the client cannot know --------------------------------------------


class CuttingProxy:
    """A TCP proxy to a real server on loopback that, when armed with a marker, forwards the
    next client message holding it, waits for the server's answer (so the statement ran, and
    committed if it was the commit) and then cuts the client's connection without passing the
    answer on."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.marker: bytes | None = None
        self.cuts = 0
        self.server: asyncio.Server | None = None
        self.listen_port = 0

    async def start(self) -> CuttingProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.listen_port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.port)
        cut = asyncio.Event()

        async def upstream() -> None:
            while data := await client_r.read(65536):
                armed = self.marker is not None and self.marker in data
                if armed:
                    self.marker = None
                    cut.set()
                server_w.write(data)
                await server_w.drain()
                if armed:
                    return

        async def downstream() -> None:
            while data := await server_r.read(65536):
                if cut.is_set():
                    await asyncio.sleep(0.2)  # the whole answer has arrived: drop it
                    return
                client_w.write(data)
                await client_w.drain()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if cut.is_set():
            await asyncio.wait(tasks, timeout=5)
            self.cuts += 1
        for task in tasks:
            task.cancel()
        for writer in (client_w, server_w):
            writer.transport.abort()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def proxy(postgres_url: str) -> AsyncIterator[CuttingProxy]:
    port = sa.engine.make_url(postgres_url).port
    assert port is not None
    p = await CuttingProxy(port).start()
    try:
        yield p
    finally:
        await p.close()


def _through(url: str, proxy: CuttingProxy) -> str:
    made = sa.engine.make_url(url)
    return made.set(port=proxy.listen_port).render_as_string(hide_password=False)


async def _stored(url: str, namespace: str, job_id: str) -> list[str]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(f"SELECT data FROM {namespace}_jobs WHERE id = %s", [job_id])
        return [row[0] for row in await cur.fetchall()]


async def test_submit_whose_commit_reply_was_lost_succeeds_once(
    postgres_url: str, namespace: str, proxy: CuttingProxy
) -> None:
    await bananas_sql.upgrade(postgres_url, namespace=namespace)
    backend = connect(_through(postgres_url, proxy), namespace=namespace)
    try:
        job = Job.create("a", {"n": 1})
        proxy.marker = b"INSERT INTO"  # autocommit: the INSERT is its own commit
        await backend.queue.enqueue(job)  # retried on a fresh connection: finds itself stored
        assert proxy.cuts == 1
        assert [json.loads(d)["payload"] for d in await _stored(postgres_url, namespace, job.id)] == [{"n": 1}]
        # a batch: one transaction, cut after its COMMIT went through
        jobs = [Job.create("b", {"i": i}) for i in range(3)]
        proxy.marker = b"COMMIT"
        await backend.queue.enqueue_many(jobs)
        assert proxy.cuts == 2
        for j in jobs:
            assert len(await _stored(postgres_url, namespace, j.id)) == 1
    finally:
        await backend.close()


async def test_retry_that_finds_another_job_under_the_id_is_a_duplicate(
    postgres_url: str, namespace: str, proxy: CuttingProxy
) -> None:
    await bananas_sql.upgrade(postgres_url, namespace=namespace)
    backend = connect(_through(postgres_url, proxy), namespace=namespace)
    try:
        first = Job.create("a", {"who": "first"})
        await backend.queue.enqueue(first)
        proxy.marker = b"INSERT INTO"  # the answer (no row: the id is taken) is lost; the retry looks
        with pytest.raises(DuplicateJob):
            await backend.queue.enqueue(Job.create("a", {"who": "second"}, job_id=first.id))
        assert proxy.cuts == 1
        proxy.marker = b"COMMIT"
        others = [Job.create("b", {"who": "second"}, job_id=first.id), Job.create("b")]
        with pytest.raises(DuplicateJob):  # refused on the first try: nothing to look up
            await backend.queue.enqueue_many(others)
        proxy.marker = None
        assert [json.loads(d)["payload"] for d in await _stored(postgres_url, namespace, first.id)] == [
            {"who": "first"}
        ]
        assert await _stored(postgres_url, namespace, others[1].id) == []
    finally:
        await backend.close()


# -- a server that turned read-only ----------------------------------------------------------


@pytest.mark.slow
async def test_read_only_server_is_left_and_the_work_retried(namespace: str, caplog: pytest.LogCaptureFixture) -> None:
    server = PostgresServer().start()
    try:
        url = server.url.replace("postgres@", "postgres:s3cret@")
        await bananas_sql.upgrade(url, namespace=namespace)
        backend = connect(url, namespace=namespace, retry_seconds=20)
        admin = await psycopg.AsyncConnection.connect(
            server.url, autocommit=True, options="-c default_transaction_read_only=off"
        )
        try:
            await backend.queue.enqueue(Job.create("warm"))  # pooled connections now exist
            await backend.queue.purge_dead()
            await admin.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            await admin.execute("SELECT pg_reload_conf()")
            await asyncio.sleep(0.5)  # every session has read the new setting
            caplog.set_level(logging.INFO, logger="bananas.sql")
            job = Job.create("a")
            submit = asyncio.ensure_future(backend.queue.enqueue(job))  # raw psycopg path
            purge = asyncio.ensure_future(backend.queue.purge_dead())  # SQLAlchemy path
            await asyncio.sleep(1.5)
            assert not submit.done() and not purge.done()  # refused (25006) and retrying
            await admin.execute("ALTER SYSTEM RESET default_transaction_read_only")
            await admin.execute("SELECT pg_reload_conf()")
            await asyncio.wait_for(asyncio.gather(submit, purge), 20)
            assert len(await _stored(server.url, namespace, job.id)) == 1
        finally:
            await admin.close()
            await backend.close()
        lines = [r.getMessage() for r in caplog.records]
        shown = redact_url(url)
        assert "s3cret" not in "\n".join(lines)
        assert any(shown in line and "read-only" in line for line in lines), lines
        assert all("\n" not in line for line in lines)
    finally:
        server.stop()


# -- a switch of primaries under load ----------------------------------------------------------


def _bananas(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BANANAS, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, **kwargs)


@contextlib.contextmanager
def _workers(url: str, log: Path, out_dir: Path, n: int = 2) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = {**os.environ, "BANANAS_FAILOVER_LOG": str(log), "PYTHONPATH": str(Path(__file__).parent)}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(n):
            with open(out_dir / f"worker{i}.log", "wb") as err:
                procs.append(subprocess.Popen(
                    [BANANAS, "worker", "failover_app:registry", "--url", url, "--concurrency", "4",
                     "--lease", "4", "--scheduler-interval", "500ms", "--grace-period", "5"],
                    cwd=ROOT, env=env, stdout=err, stderr=subprocess.STDOUT,
                ))  # fmt: skip
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


async def _wait_started(out_dir: Path, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while sum("started:" in (out_dir / f"worker{i}.log").read_text() for i in range(n)) < n:
        assert time.monotonic() < deadline, "the workers did not start"
        await asyncio.sleep(0.05)


async def _on_new_primary(cluster: Any) -> tuple[int, int]:
    """How many LISTEN sessions (the workers') and waiter registrations the promoted replica holds."""
    async with await psycopg.AsyncConnection.connect(cluster.node_url(cluster.replica_port), autocommit=True) as c:
        cur = await c.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %'")
        listening = (await cur.fetchone() or (0,))[0]
        cur = await c.execute("SELECT count(*) FROM failover_waiters")
        waiting = (await cur.fetchone() or (0,))[0]
    return listening, waiting


async def _failover(tmp_path: Path, *, synchronous: bool, jobs: int = 600) -> dict[str, Any]:
    """Run the scenario; the figures and what went wrong (asserted by the callers)."""
    with replicated_postgres(synchronous=synchronous) as cluster:
        url = cluster.url(password="s3cret") + "&namespace=failover&retry_seconds=30"
        done = _bananas("db", "upgrade", "--url", url)
        assert done.returncode == 0, done.stderr
        log = tmp_path / "executions.log"
        log.touch()
        with _workers(url, log, tmp_path) as procs:
            await _wait_started(tmp_path, len(procs))
            client = AsyncClient(url)
            acked: list[str] = []
            refused: list[str] = []
            latencies: list[tuple[float, float]] = []
            switch: dict[str, float] = {}
            next_n = 0
            third = asyncio.Event()

            async def produce() -> None:
                nonlocal next_n
                while next_n < jobs:
                    next_n += 1
                    started = time.monotonic()
                    try:
                        acked.append(await client.submit_job("track", {"work": 0.02}))
                        if len(acked) >= jobs // 3:
                            third.set()
                    except BackendUnavailable as exc:
                        refused.append(str(exc))
                    latencies.append((started, time.monotonic() - started))
                    await asyncio.sleep(0.03)

            async def switch_primaries() -> None:
                await third.wait()
                switch["at"] = time.monotonic()
                await asyncio.to_thread(cluster.stop_primary)
                switch["stopped"] = time.monotonic()
                await asyncio.to_thread(cluster.promote_replica)
                switch["promoted"] = time.monotonic()

            began = time.monotonic()
            await asyncio.gather(*(produce() for _ in range(4)), switch_primaries())
            burst = time.monotonic() - began
            # Every acknowledged job runs: handed-over or claimed jobs whose claim was lost come
            # back when their 4 s lease runs out.
            deadline = time.monotonic() + 60
            while True:
                ran = Counter(log.read_text().split())
                depths = await client.backend.queue.depths()
                missing = [i for i in acked if i not in ran]
                if (not missing and depths.processing == 0 and depths.total_ready == 0) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.25)
            settled = time.monotonic() - switch["at"]
            # idle workers listen again, on the new primary, and register there for hand-offs
            deadline = time.monotonic() + 10
            while (on_new := await _on_new_primary(cluster))[0] < 2 or on_new[1] < 1:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            statuses = Counter()
            for job_id in acked:
                try:
                    statuses[(await client.get_job(job_id)).status.value] += 1
                except Exception as exc:  # a job acknowledged by the old primary and lost with it
                    statuses[type(exc).__name__] += 1
            await client.close()
            alive = [proc.poll() is None for proc in procs]
        worker_logs = [(tmp_path / f"worker{i}.log").read_text() for i in range(len(procs))]
    slow = [lat for at, lat in latencies if at >= switch["at"] - 1]
    return {
        "synchronous": synchronous,
        "submitted": jobs,
        "acknowledged": len(acked),
        "refused": len(refused),
        "missing": len(missing),
        "duplicates": sum(1 for i in acked if ran[i] > 1),
        "stuck_processing": depths.processing,
        "left_ready": depths.total_ready,
        "statuses": dict(statuses),
        "stop_and_promote_s": round(switch["promoted"] - switch["at"], 2),
        "slowest_submit_s": round(max(slow, default=0.0), 2),
        "all_done_after_switch_s": round(settled, 1),
        "burst_s": round(burst, 1),
        "workers_alive": alive,
        "listening_and_waiting_on_new_primary": on_new,
        "logs": worker_logs,
    }


def _report(figures: dict[str, Any]) -> None:
    shown = {k: v for k, v in figures.items() if k != "logs"}
    print(f"\nfailover figures: {json.dumps(shown)}")


@pytest.mark.slow
async def test_switch_of_primaries_with_synchronous_replication_loses_no_acknowledged_job(
    tmp_path: Path,
) -> None:
    figures = await _failover(tmp_path, synchronous=True)
    _report(figures)
    assert figures["acknowledged"] + figures["refused"] == figures["submitted"]
    assert figures["missing"] == 0, figures
    assert figures["statuses"] == {"completed": figures["acknowledged"]}, figures
    assert figures["stuck_processing"] == 0 and figures["left_ready"] == 0
    assert all(figures["workers_alive"])
    listening, waiting = figures["listening_and_waiting_on_new_primary"]
    assert listening >= 2 and waiting >= 1
    logs = "\n".join(figures["logs"])
    assert "s3cret" not in logs
    assert "Traceback" not in logs, logs[-4000:]
    shown = "postgres:***@127.0.0.1:"
    # each worker said, in one line naming the redacted URL, that its connection failed
    for worker_log in figures["logs"]:
        assert any(shown in line and ("failed" in line or "lost" in line) for line in worker_log.splitlines()), (
            worker_log[-4000:]
        )


@pytest.mark.slow
async def test_switch_of_primaries_without_synchronous_replication(tmp_path: Path) -> None:
    """Asynchronous replication: the workers recover all the same, but an acknowledged job the
    replica had not received is gone (reported, not asserted: it depends on timing)."""
    figures = await _failover(tmp_path, synchronous=False)
    _report(figures)
    assert figures["acknowledged"] + figures["refused"] == figures["submitted"]
    present = figures["acknowledged"] - figures["statuses"].get("JobNotFound", 0)
    assert figures["statuses"].get("completed", 0) == present, figures
    assert figures["stuck_processing"] == 0 and figures["left_ready"] == 0
    assert all(figures["workers_alive"])

"""Several worker processes on one database: every job runs exactly once when nobody
crashes, and nothing is lost when a worker is killed or PostgreSQL restarts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from bananas.job import Job, JobStatus
from bananas.plugins import connect
from servers import PostgresServer

import bananas_sql

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

SCRIPT = Path(__file__).with_name("worker_script.py")


def start_workers(
    url: str, namespace: str, tmp: Path, n: int, lease: float = 30, work: float = 0
) -> list[subprocess.Popen[bytes]]:
    return [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), url, namespace, str(tmp / f"w{i}.out"), str(lease), str(work)],
            stderr=subprocess.PIPE,
        )
        for i in range(n)
    ]


def wait_all(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise AssertionError("workers did not finish in time") from None


def runs(tmp: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for f in tmp.glob("w*.out"):
        counts.update(line for line in f.read_text().split("\n") if line)
    return counts


async def submit(url: str, namespace: str, n: int) -> list[str]:
    await bananas_sql.upgrade(url, namespace=namespace)
    jobs = [Job.create("burst", {"i": i}) for i in range(n)]
    async with connect(url, namespace=namespace) as backend:
        for start in range(0, n, 500):
            await backend.queue.enqueue_many(jobs[start : start + 500])
    return [j.id for j in jobs]


async def all_completed(url: str, namespace: str, ids: list[str]) -> None:
    async with connect(url, namespace=namespace) as backend:
        statuses = Counter([(await backend.queue.get_job(i)).status for i in ids])
    assert statuses == {JobStatus.COMPLETED: len(ids)}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_processes_run_every_job_exactly_once(
    kind: str, tmp_path: Path, namespace: str, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db" if kind == "sqlite" else request.getfixturevalue("postgres_url")
    ids = await submit(url, namespace, 3000)
    procs = start_workers(url, namespace, tmp_path, 4)
    await asyncio.to_thread(wait_all, procs, 90)
    assert all(p.returncode == 0 for p in procs), [p.stderr.read() for p in procs if p.stderr]
    counts = runs(tmp_path)
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1
    assert sum(1 for p in procs if (tmp_path / f"w{procs.index(p)}.out").stat().st_size) >= 2  # work was shared
    await all_completed(url, namespace, ids)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_killed_worker_loses_nothing(
    kind: str, tmp_path: Path, namespace: str, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db" if kind == "sqlite" else request.getfixturevalue("postgres_url")
    ids = await submit(url, namespace, 600)
    procs = start_workers(url, namespace, tmp_path, 3, lease=2, work=0.005)
    victim = procs[0]
    while not (tmp_path / "w0.out").exists() or (tmp_path / "w0.out").stat().st_size < 400:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    await asyncio.to_thread(wait_all, procs[1:], 90)
    victim.wait()
    counts = runs(tmp_path)
    assert set(counts) == set(ids)  # every job ran; the victim's in-flight ones ran again
    await all_completed(url, namespace, ids)


def _postmaster_pid(server: PostgresServer) -> int:
    with open(os.path.join(server.datadir, "postmaster.pid")) as f:
        return int(f.readline())


def _hard_restart(server: PostgresServer) -> None:
    """SIGKILL the postmaster and its children (servers.kill() only reaches `runuser` when root), then start."""
    pid = _postmaster_pid(server)
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for child in children:
        with contextlib.suppress(ProcessLookupError):  # a backend that ended since pgrep looked
            os.kill(int(child), signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    server.kill()
    server.start()
    assert _postmaster_pid(server) != pid, "PostgreSQL did not restart"


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    if os.environ.get("BANANAS_TEST_POSTGRES_URL"):
        pytest.skip("restarting PostgreSQL needs a throwaway server, not BANANAS_TEST_POSTGRES_URL")
    server = PostgresServer().start()
    try:
        yield server
    finally:
        # Fast shutdown signalled to the postmaster itself (as root, `runuser` does not pass it on).
        with contextlib.suppress(OSError):
            os.kill(_postmaster_pid(server), signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            if server.proc is not None:
                server.proc.wait(20)
        server.stop()


async def test_postgres_restart_mid_burst_loses_nothing(
    private_postgres: PostgresServer, tmp_path: Path, namespace: str
) -> None:
    url = private_postgres.url
    ids = await submit(url, namespace, 1500)
    procs = start_workers(url, namespace, tmp_path, 3, lease=5, work=0.002)
    while sum(runs(tmp_path).values()) < 300:  # noqa: ASYNC110 (another process writes the files)
        await asyncio.sleep(0.05)
    await asyncio.to_thread(_hard_restart, private_postgres)
    await asyncio.to_thread(wait_all, procs, 120)
    assert all(p.returncode == 0 for p in procs), [p.stderr.read() for p in procs if p.stderr]
    assert set(runs(tmp_path)) == set(ids)
    await all_completed(url, namespace, ids)
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.connect() as conn:
        assert conn.execute(
            sa.text(f"SELECT count(*) FROM {namespace}_jobs WHERE state = 'completed'")
        ).scalar() == len(ids)
    engine.dispose()

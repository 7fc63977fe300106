"""``bananas worker`` processes on a SQLite file: a handler cannot kill the worker, and a
worker that dies mid-job leaves the job to its lease (so a poison job ends dead)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from bananas import AsyncClient, Backend, Job, JobStatus, connect
from bananas.plugins import backend_specs
from bananas.protocols import LEASE_EXPIRED_ERROR

BANANAS = Path(sys.executable).with_name("bananas")
HAS_SQLITE = any("sqlite" in spec.schemes for spec in backend_specs())

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
    pytest.mark.skipif(not HAS_SQLITE, reason="the sqlite:// plugin (bananas-sql) is not installed"),
]

APP = """
import asyncio
import sys

from bananas.worker import Registry

registry = Registry()
tasks = []


@registry.handler("poison")
async def poison(ctx, job):
    async def boom():
        sys.exit(3)

    tasks.append(asyncio.create_task(boom()))
    await asyncio.sleep(30)


@registry.handler("hang")
async def hang(ctx, job):
    await asyncio.sleep(300)


@registry.handler("add")
def add(ctx, job):
    return job.payload["a"] + job.payload["b"]
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """The app module and a SQLite file with the Bananas schema."""
    name = f"containapp_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(APP))
    (tmp_path / "app_name").write_text(name)
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    subprocess.run([str(BANANAS), "db", "upgrade", "--url", url], check=True, capture_output=True, timeout=60)
    return tmp_path


@pytest.fixture
async def backend(app_dir: Path) -> AsyncIterator[Backend]:
    b = connect(f"sqlite:///{app_dir / 'jobs.db'}")
    yield b
    await b.close()


def start_worker(app_dir: Path, *options: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BANANAS_URL", "BANANAS_DEBUG")}
    env["PYTHONPATH"] = str(app_dir)
    app = (app_dir / "app_name").read_text()
    argv = [str(BANANAS), "worker", f"{app}:registry", "--url", f"sqlite:///{app_dir / 'jobs.db'}", *options]
    return subprocess.Popen(argv, cwd=app_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def eventually(check: Callable[[], Awaitable[bool]], worker: subprocess.Popen[str], timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if worker.poll() is not None:
            raise AssertionError(f"the worker exited with {worker.returncode}: {worker.communicate()[1]}")
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.1)


async def test_a_task_raising_system_exit_does_not_stop_the_worker_and_the_job_ends_dead(
    app_dir: Path, backend: Backend
) -> None:
    async with AsyncClient(backend=backend) as client:
        job_id = await client.submit_job("poison", None, max_retries=2)
        worker = start_worker(app_dir, "--scheduler-interval", "100ms", "--enable-scheduler", "--log-level", "WARNING")
        try:

            async def dead() -> bool:
                return (await backend.queue.get_job(job_id)).status is JobStatus.FAILED

            await eventually(dead, worker)  # two attempts, 2 s of backoff between them
            job = await backend.queue.get_job(job_id)
            assert job.attempts == 2
            assert job.error == "SystemExit: 3 (raised by a task the handler started)"
            assert job_id in [j.id for j in await backend.queue.dead_letters()]
            assert worker.poll() is None  # still running, and still serving
            result = await client.submit_and_wait("add", {"a": 2, "b": 3}, timeout=30)
            assert result.result == 5
        finally:
            worker.send_signal(signal.SIGTERM)
            _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "SystemExit: 3 (raised by a task the handler started)" in err
    assert "sys.exit(3)" not in err, err  # contained and reported in one line, no traceback of it
    assert "never retrieved" not in err, err


async def test_a_worker_killed_mid_job_leaves_it_to_its_lease_and_the_reap_counts_the_attempt(
    app_dir: Path, backend: Backend
) -> None:
    async with AsyncClient(backend=backend) as client:
        job_id = await client.submit_job("hang", None, max_retries=1)
    worker = start_worker(app_dir, "--lease", "2", "--no-scheduler", "--log-level", "WARNING")
    try:

        async def processing() -> bool:
            return (await backend.queue.get_job(job_id)).status is JobStatus.PROCESSING

        await eventually(processing, worker)
    finally:
        worker.kill()
        worker.communicate(timeout=30)
    job = await backend.queue.get_job(job_id)
    assert job.status is JobStatus.PROCESSING and job.attempts == 0  # not handed back
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not await backend.queue.reap_expired():
        assert loop.time() < deadline, "the lease never ran out"
        await asyncio.sleep(0.2)
    job = await backend.queue.get_job(job_id)
    assert job.attempts == 1
    assert job.status is JobStatus.FAILED  # max_retries=1: the job that killed its worker is dead
    assert job.error == LEASE_EXPIRED_ERROR


async def test_sigterm_still_stops_the_worker_gracefully_and_hands_the_job_back(
    app_dir: Path, backend: Backend
) -> None:
    async with AsyncClient(backend=backend) as client:
        job_id = await client.submit_job("hang", None, max_retries=1)
    worker = start_worker(app_dir, "--grace-period", "0.5", "--no-scheduler", "--log-level", "INFO")
    try:

        async def processing() -> bool:
            return (await backend.queue.get_job(job_id)).status is JobStatus.PROCESSING

        await eventually(processing, worker)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    job: Job = await backend.queue.get_job(job_id)
    assert job.status is JobStatus.PENDING and job.attempts == 0, err
    assert "handed 1 unfinished job(s) back" in err

"""Racing clients on real servers: 50 submits of one unique key from 5 processes (10 threads
each) store exactly one job, on Redis, PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from bananas import QueueDepths, connect
from unique_racer import race
from waiting import eventually

PROCESSES, THREADS = 5, 10


async def _depths(url: str, namespace: str) -> QueueDepths:
    async with connect(url, namespace=namespace) as backend:
        return await backend.queue.depths()


async def _warmed(url: str, namespace: str) -> bool:
    """Whether every process has connected and stored its warm-up job."""
    return (await _depths(url, namespace)).total_ready >= PROCESSES


def _prepare(url: str, namespace: str) -> None:
    if url.startswith(("postgresql", "sqlite")):
        import bananas_sql

        asyncio.run(bananas_sql.upgrade(url, namespace=namespace))


@pytest.fixture(params=["redis", "postgres", "sqlite"])
def server_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path}/race.db"


@pytest.mark.slow
def test_fifty_racing_submits_of_one_key_store_one_job(server_url: str) -> None:
    namespace = "race" + uuid.uuid4().hex[:12]
    _prepare(server_url, namespace)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        start = manager.Event()
        with ProcessPoolExecutor(PROCESSES, mp_context=ctx) as pool:
            futures = [pool.submit(race, server_url, namespace, "payment:7", THREADS, start) for _ in range(PROCESSES)]
            asyncio.run(eventually(lambda: _warmed(server_url, namespace), 60, "every racer connected"))
            start.set()
            answers = [answer for future in futures for answer in future.result(timeout=120)]
    assert len(answers) == PROCESSES * THREADS
    ids = {job_id for job_id, _ in answers}
    assert len(ids) == 1, f"racing submits stood for {len(ids)} different jobs"
    assert sum(1 for _, duplicate in answers if not duplicate) == 1, "not exactly one submit wrote the job"
    depths = asyncio.run(_depths(server_url, namespace))
    total = depths.total_ready + depths.processing + depths.scheduled
    assert total == PROCESSES + 1, f"{total - PROCESSES} jobs stored for one unique key"

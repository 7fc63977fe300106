"""A worker whose SQLite file is deleted or replaced under it (another run recreating it, a
restore from backup) must not serve the orphaned old file in silence: it says so and reopens.

Found through the benchmark: two harness runs sharing bench/.scratch, one recreating the file
the other's idle worker had open; that worker then waited 120 s on the old file, logging nothing.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from bananas.clock import ManualClock
from bananas.job import Job
from bananas.plugins import connect

import bananas_sql

pytestmark = pytest.mark.anyio


def remove_database(url: str) -> None:
    path = url.removeprefix("sqlite:///")
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)


async def test_an_idle_worker_follows_a_replaced_database_file(
    sqlite_url: str, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    await bananas_sql.upgrade(sqlite_url)
    worker = connect(sqlite_url, clock=clock, poll_interval=0.05)
    try:
        await worker.queue.wait_for_work(["default"], 0.01)  # the file is open now
        remove_database(sqlite_url)
        await bananas_sql.upgrade(sqlite_url)  # a new file at the same path
        submitter = connect(sqlite_url, clock=clock)
        try:
            await submitter.queue.enqueue(Job.create("task", None, now=clock.now()))
        finally:
            await submitter.close()
        with caplog.at_level(logging.WARNING, logger="bananas.sql"):
            await asyncio.wait_for(worker.queue.wait_for_work(["default"], 10), 30)
        assert "replaced" in caplog.text
        [job] = await worker.queue.claim(["default"])
        assert job.name == "task"
    finally:
        await worker.close()

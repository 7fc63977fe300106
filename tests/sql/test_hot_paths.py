"""Behaviour of the hot paths that bypass SQLAlchemy: the SQLite change hint, PostgreSQL's claim commit option."""

from __future__ import annotations

import asyncio
import time

import pytest
from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.job import Job
from bananas.plugins import connect

import bananas_sql

pytestmark = pytest.mark.anyio


async def test_sqlite_idle_wait_wakes_on_another_connections_commit(
    sqlite_url: str, namespace: str, clock: ManualClock
) -> None:
    # A poll interval of an hour: only the file-change hint can end the wait early.
    await bananas_sql.upgrade(sqlite_url, namespace=namespace)
    waiter = connect(sqlite_url, namespace=namespace, clock=clock, poll_interval=3600)
    submitter = connect(sqlite_url, namespace=namespace, clock=clock)
    try:
        await waiter.queue.wait_for_work(["default"], 0.01)  # first look (schema, connection)
        waiting = asyncio.ensure_future(waiter.queue.wait_for_work(["default"], 60))
        await asyncio.sleep(0.1)
        assert not waiting.done()  # nothing to do yet: still waiting
        started = time.monotonic()
        await submitter.queue.enqueue(Job.create("task", None, now=clock.now()))
        await asyncio.wait_for(waiting, 30)
        assert time.monotonic() - started < 30  # woken by the commit, not by a timeout
        [job] = await waiter.queue.claim(["default"])
        assert job.name == "task"
    finally:
        await waiter.close()
        await submitter.close()


async def test_sqlite_idle_wait_ignores_other_routing_keys(sqlite_url: str, namespace: str, clock: ManualClock) -> None:
    await bananas_sql.upgrade(sqlite_url, namespace=namespace)
    backend = connect(sqlite_url, namespace=namespace, clock=clock, poll_interval=0.01)
    try:
        await backend.queue.enqueue(Job.create("task", None, routing_key="other", now=clock.now()))
        started = time.monotonic()
        await backend.queue.wait_for_work(["default"], 0.3)
        assert time.monotonic() - started >= 0.3  # the job on "other" did not end the wait
    finally:
        await backend.close()


@pytest.mark.parametrize("sync_claims", ["true", "false"])
async def test_postgres_claim_commit_option(
    postgres_url: str, namespace: str, clock: ManualClock, sync_claims: str
) -> None:
    await bananas_sql.upgrade(postgres_url, namespace=namespace)
    # Our option must not reach libpq (an unknown connection option would fail to connect).
    url = postgres_url + ("&" if "?" in postgres_url else "?") + f"claim_sync_commit={sync_claims}"
    backend = connect(url, namespace=namespace, clock=clock)
    try:
        jobs = [Job.create("task", {"i": i}, now=clock.now()) for i in range(3)]
        for job in jobs:
            await backend.queue.enqueue(job)
        claimed = await backend.queue.claim(["default"], limit=5)
        assert [j.id for j in claimed] == [j.id for j in jobs]
        assert await backend.queue.claim(["default"]) == []
        done = await asyncio.gather(*(backend.queue.complete(j) for j in claimed))
        assert {j.status.value for j in done} == {"completed"}
    finally:
        await backend.close()


async def test_bulk_submit_keeps_order_and_awkward_payloads(backend: Backend, clock: ManualClock) -> None:
    # Binary arrays on PostgreSQL: quotes, backslashes, braces and unicode must survive.
    payloads = [
        {"i": i, "s": 'a"b\\c{d},e' + "\u00e9\u2603" * (i % 3), "nested": [None, {"q": "'"}]} for i in range(50)
    ]
    jobs = [Job.create("task", p, now=clock.now()) for p in payloads]
    await backend.queue.enqueue_many(jobs)
    claimed = await backend.queue.claim(["default"], limit=100)
    assert [j.id for j in claimed] == [j.id for j in jobs]  # FIFO within the batch
    assert [j.payload for j in claimed] == payloads

"""Jobs handed to idle PostgreSQL workers by the enqueue's trigger are fenced like claimed ones:
the trigger stores a fresh lease token with the row and sends it with the job; a worker of an
older bananas-sql (a registration without ``fenced``) is only woken, never handed a job."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa
from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.errors import LeaseLost
from bananas.job import Job, JobStatus
from bananas_sql.schema import HANDOFF_DATA_MAX
from sqlalchemy.ext.asyncio import AsyncEngine

pytestmark = pytest.mark.anyio


async def token_of(engine: AsyncEngine, namespace: str, job_id: str) -> tuple[str, str | None]:
    async with engine.connect() as conn:
        sql = f"SELECT state, lease_token FROM {namespace}_jobs WHERE id = :id"
        state, token = (await conn.execute(sa.text(sql), {"id": job_id})).one()
    return state, token


async def registered(engine: AsyncEngine, namespace: str) -> list[str]:
    async with engine.connect() as conn:
        return [r[0] for r in await conn.execute(sa.text(f"SELECT token FROM {namespace}_waiters"))]


async def start_waiting(q: Any, engine: AsyncEngine, namespace: str, waiter: str) -> asyncio.Future[list[Job]]:
    """A ``claim_or_wait`` that has registered (a process's first call only starts listening)."""
    for _ in range(200):
        waiting = asyncio.ensure_future(q.claim_or_wait(["default"], waiter=waiter, timeout=5, lease=10, limit=5))
        for _ in range(200):
            if waiter in await registered(engine, namespace):
                return waiting
            if waiting.done():
                break
            await asyncio.sleep(0.005)
        assert await waiting == []
    raise AssertionError("the waiter never registered")


@pytest.mark.parametrize("how", ["enqueue", "enqueue_many", "too-large-for-the-notification"])
async def test_a_handed_job_carries_its_token_and_a_stale_copy_is_fenced(
    pg: Backend, engine: AsyncEngine, namespace: str, clock: ManualClock, how: str
) -> None:
    q: Any = pg.queue
    waiting = await start_waiting(q, engine, namespace, "w")
    payload = {"blob": "x" * (HANDOFF_DATA_MAX + 10)} if how.startswith("too-large") else {"n": 1}
    job = Job.create("handed", payload, now=clock.now())
    if how == "enqueue_many":
        await q.enqueue_many([job])
    else:
        await q.enqueue(job)
    [handed] = await waiting
    assert handed.id == job.id and handed.payload == payload
    assert await token_of(engine, namespace, job.id) == ("processing", handed.lease_token)
    assert len(handed.lease_token) == 32
    clock.advance(11)
    assert await q.reap_expired() == 1
    [again] = await q.claim(["default"])
    assert again.lease_token not in ("", handed.lease_token)
    with pytest.raises(LeaseLost):
        await q.complete(handed)
    await q.release(handed)
    assert await q.renew([handed]) == set()
    assert await token_of(engine, namespace, job.id) == ("processing", again.lease_token)
    assert (await q.complete(again)).status is JobStatus.COMPLETED


async def test_a_job_handed_between_waits_is_renewed_under_its_token(
    pg: Backend, engine: AsyncEngine, namespace: str, clock: ManualClock
) -> None:
    q: Any = pg.queue
    waiting = await start_waiting(q, engine, namespace, "w")
    await q.wake_waiter("w")
    assert await waiting == []
    job = Job.create("kept", {}, now=clock.now())
    await q.enqueue(job)
    for _ in range(400):
        if any(q.db.listener.handed.values()):
            break
        await asyncio.sleep(0.005)
    clock.advance(8)
    assert await q.renew([], lease=10) == set()  # the kept hand-off's lease is extended
    clock.advance(8)
    assert await q.reap_expired() == 0
    [got] = await q.claim(["default"])
    assert got.id == job.id and got.lease_token
    assert await token_of(engine, namespace, job.id) == ("processing", got.lease_token)
    assert (await q.complete(got)).status is JobStatus.COMPLETED


async def test_a_registration_without_fenced_is_woken_but_never_handed_a_job(
    pg: Backend, engine: AsyncEngine, namespace: str, clock: ManualClock
) -> None:
    async with engine.begin() as conn:  # as a worker of schema version 3 registers
        await conn.execute(
            sa.text(
                f"INSERT INTO {namespace}_waiters (token, channel, slot, routing_keys, priorities, lease, "
                "clock_offset, until) VALUES ('old', 'nobody_listens', 0, ARRAY['default'], "
                "ARRAY[0, 1, 2]::smallint[], 30, 0, extract(epoch FROM clock_timestamp()) + 60)"
            )
        )
    job = Job.create("for-anyone", {}, now=clock.now())
    await pg.queue.enqueue(job)
    await pg.queue.enqueue_many([Job.create("for-anyone", {}, now=clock.now())])
    assert await token_of(engine, namespace, job.id) == ("ready", None)
    assert await registered(engine, namespace) == ["old"]
    assert len(await pg.queue.claim(["default"], limit=5)) == 2

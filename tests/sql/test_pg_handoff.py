"""Idle workers on PostgreSQL get new jobs handed over by the transaction that made them ready.

A worker whose claim finds nothing registers in the waiters table in the same statement and
waits on a NOTIFY channel of its own; the ``notify_work`` trigger claims a new ready job for it
(state and lease, on the worker's clock) and sends it there. These tests read the stored rows
with plain SQL: a handed-over job is always leased, is handed to one worker at most, and is
not lost when the worker stops or is not waiting at that moment.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.errors import DuplicateJob, SchemaError
from bananas.job import Job, JobStatus
from bananas.plugins import connect
from bananas_sql.schema import HANDOFF_DATA_MAX
from bananas_sql.tables import SCHEMA_VERSION
from sqlalchemy.ext.asyncio import AsyncEngine
from waiting import eventually

import bananas_sql

pytestmark = pytest.mark.anyio


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list(await conn.execute(sa.text(sql), params))


async def job_row(engine: AsyncEngine, namespace: str, job_id: str) -> tuple[str, float | None]:
    [(state, lease_until)] = await rows(
        engine, f"SELECT state, lease_until FROM {namespace}_jobs WHERE id = :id", id=job_id
    )
    return state, lease_until


async def waiters(engine: AsyncEngine, namespace: str) -> list[str]:
    return [r[0] for r in await rows(engine, f"SELECT token FROM {namespace}_waiters ORDER BY token")]


def mk(clock: ManualClock, name: str = "t", **kw: Any) -> Job:
    return Job.create(name, {}, now=clock.now(), **kw)


async def start_waiting(
    q: Any, engine: AsyncEngine, namespace: str, token: str, keys: list[str] | None = None, **kw: Any
) -> asyncio.Future[list[Job]]:
    """A claim_or_wait of ``token`` that has registered (the first call of a process only
    starts listening on the worker's channel, so it does not register)."""
    keys = keys or ["default"]
    kw.setdefault("lease", 30)
    kw.setdefault("limit", 5)
    for _ in range(200):
        waiting = asyncio.ensure_future(q.claim_or_wait(keys, waiter=token, timeout=5, **kw))

        async def registered_or_returned(waiting: asyncio.Future[list[Job]] = waiting) -> bool:
            return waiting.done() or token in await waiters(engine, namespace)

        await eventually(registered_or_returned, what="claim_or_wait registering or returning")
        if not waiting.done():
            return waiting
        assert await waiting == []
    raise AssertionError("the waiter never registered")


async def test_an_idle_waiter_gets_the_job_already_claimed(
    pg: Backend, engine: AsyncEngine, namespace: str, clock: ManualClock
) -> None:
    q: Any = pg.queue
    waiting = await start_waiting(q, engine, namespace, "w1")
    job = mk(clock)
    started = time.monotonic()
    await q.enqueue(job)
    [got] = await waiting
    assert time.monotonic() - started < 1.0  # handed over, not found by a later poll
    assert got.id == job.id and got.status is JobStatus.PROCESSING
    state, lease_until = await job_row(engine, namespace, job.id)
    assert state == "processing"
    assert lease_until == pytest.approx(clock() + 30, abs=1.0)  # on the worker's (manual) clock
    assert await waiters(engine, namespace) == []  # a registration is served once
    done = await q.complete(got)  # an ordinary claimed job from here on
    assert done.status is JobStatus.COMPLETED
    assert (await q.get_job(job.id)).status is JobStatus.COMPLETED


async def test_each_waiter_is_handed_one_job_and_the_rest_stays_ready(
    pg: Backend, engine: AsyncEngine, namespace: str, clock: ManualClock
) -> None:
    q: Any = pg.queue
    one = await start_waiting(q, engine, namespace, "a")
    two = await start_waiting(q, engine, namespace, "b")
    jobs = [mk(clock) for _ in range(3)]
    await q.enqueue_many(jobs)
    got = [j.id for j in await one] + [j.id for j in await two]
    assert sorted(got) == sorted(j.id for j in jobs[:2])  # FIFO: the first two, one each
    states = {j.id: (await job_row(engine, namespace, j.id))[0] for j in jobs}
    assert states == {jobs[0].id: "processing", jobs[1].id: "processing", jobs[2].id: "ready"}
    assert [j.id for j in await q.claim(["default"], limit=5)] == [jobs[2].id]


async def test_a_waiter_for_other_routes_or_priorities_is_not_handed_anything(
    pg: Backend, engine: AsyncEngine, namespace: str, clock: ManualClock
) -> None:
    q: Any = pg.queue
    gpu = await start_waiting(q, engine, namespace, "g", ["gpu"])
    urgent = await start_waiting(q, engine, namespace, "u", ["default"], priorities=["high"])
    job = mk(clock, priority="low")
    await q.enqueue(job)
    assert await job_row(engine, namespace, job.id) == ("ready", None)
    assert await waiters(engine, namespace) == ["g", "u"]
    for waiting in (gpu, urgent):  # woken by the ordinary notification, or timed out: nothing handed
        assert await asyncio.wait_for(waiting, 6) == []


async def test_an_expired_registration_is_not_served(
    pg: Backend, engine: AsyncEngine, namespace: str, clock: ManualClock
) -> None:
    q: Any = pg.queue
    waiting = await start_waiting(q, engine, namespace, "gone")
    waiting.cancel()  # the worker was killed mid-wait
    await asyncio.gather(waiting, return_exceptions=True)
    async with engine.begin() as conn:  # its wait ran out
        await conn.execute(sa.text(f"UPDATE {namespace}_waiters SET until = until - 10"))
    job = mk(clock)
    await q.enqueue(job)
    assert await job_row(engine, namespace, job.id) == ("ready", None)
    assert [j.id for j in await q.claim(["default"], limit=5)] == [job.id]


async def test_jobs_handed_over_between_waits_are_taken_by_the_next_claim_and_stay_leased(
    pg: Backend, engine: AsyncEngine, namespace: str, clock: ManualClock
) -> None:
    q: Any = pg.queue
    waiting = await start_waiting(q, engine, namespace, "w")
    await q.wake_waiter("w")  # the wait ends; the registration lasts until the next call
    assert await waiting == []
    job = mk(clock)
    await q.enqueue(job)
    await eventually(lambda: any(q.db.listener.handed.values()), what="the hand-off reaching this process")
    assert (await job_row(engine, namespace, job.id))[0] == "processing"
    clock.advance(20)
    assert await q.renew([], lease=100) == set()  # kept jobs are this worker's: their leases are renewed
    assert (await job_row(engine, namespace, job.id))[1] == pytest.approx(clock() + 100)
    [got] = await q.claim(["default"], limit=5)
    assert got.id == job.id and got.status is JobStatus.PROCESSING
    assert not any(q.db.listener.handed.values())


async def test_a_plain_claim_takes_only_the_handed_jobs_it_asked_for(
    pg: Backend, engine: AsyncEngine, namespace: str, clock: ManualClock
) -> None:
    """Two workers of one process (one per routing key) never run each other's hand-offs."""
    q: Any = pg.queue
    waiting = await start_waiting(q, engine, namespace, "gpu-worker", ["gpu"])
    await q.wake_waiter("gpu-worker")
    assert await waiting == []
    job = mk(clock, routing_key="gpu")
    await q.enqueue(job)
    await eventually(lambda: any(q.db.listener.handed.values()), what="the hand-off reaching this process")
    assert await q.claim(["default"], limit=5) == []
    [got] = await q.claim(["default", "gpu"], limit=5)
    assert got.id == job.id and got.status is JobStatus.PROCESSING


async def test_stop_waiting_unregisters_and_returns_what_was_handed_over(
    pg: Backend, engine: AsyncEngine, namespace: str, clock: ManualClock
) -> None:
    q: Any = pg.queue
    waiting = await start_waiting(q, engine, namespace, "w")
    await q.wake_waiter("w")
    assert await waiting == []
    job = mk(clock)
    await q.enqueue(job)
    await eventually(lambda: any(q.db.listener.handed.values()), what="the hand-off reaching this process")
    [back] = await q.stop_waiting("w")
    assert back.id == job.id
    await q.release(back)
    assert await job_row(engine, namespace, job.id) == ("ready", None)
    assert await waiters(engine, namespace) == []
    other = mk(clock)
    await q.enqueue(other)  # no longer served
    assert await job_row(engine, namespace, other.id) == ("ready", None)


async def test_a_job_too_large_for_a_notification_is_read_back(
    pg: Backend, engine: AsyncEngine, namespace: str, clock: ManualClock
) -> None:
    q: Any = pg.queue
    waiting = await start_waiting(q, engine, namespace, "w")
    job = Job.create("big", {"blob": "λ" * HANDOFF_DATA_MAX}, now=clock.now())
    await q.enqueue(job)
    [got] = await waiting
    assert got.id == job.id and got.payload == job.payload and got.status is JobStatus.PROCESSING


async def test_a_scheduled_job_falling_due_is_handed_over(
    pg: Backend, engine: AsyncEngine, namespace: str, clock: ManualClock
) -> None:
    q: Any = pg.queue
    later = Job.create("t", {}, now=clock.now(), scheduled_for=clock.now() + timedelta(seconds=2))
    await q.enqueue(later)
    waiting = await start_waiting(q, engine, namespace, "w")
    clock.advance(3)
    assert await q.move_scheduled() == 1
    [got] = await waiting
    assert got.id == later.id
    assert (await job_row(engine, namespace, later.id))[0] == "processing"


async def test_a_rejected_or_rolled_back_submission_hands_nothing_over(
    pg: Backend, engine: AsyncEngine, namespace: str, clock: ManualClock
) -> None:
    q: Any = pg.queue
    first = mk(clock)
    await q.enqueue(first)
    [claimed] = await q.claim(["default"])
    waiting = await start_waiting(q, engine, namespace, "w")
    with pytest.raises(DuplicateJob):
        await q.enqueue(first)  # the id exists: nothing written, the waiter keeps waiting
    dropped = mk(clock)

    async def failing_transaction() -> None:
        async with engine.begin() as conn:
            await bananas_sql.enqueue_in_transaction_async(conn, dropped, namespace=namespace)
            raise RuntimeError("the application's transaction fails")

    with pytest.raises(RuntimeError):
        await failing_transaction()
    assert await waiters(engine, namespace) == ["w"]
    assert not waiting.done()
    kept = mk(clock)
    async with engine.begin() as conn:  # a committed transactional enqueue is handed over
        await bananas_sql.enqueue_in_transaction_async(conn, kept, namespace=namespace)
    [got] = await waiting
    assert got.id == kept.id
    assert claimed.id == first.id


async def test_upgrade_from_version_2_adds_the_waiters_and_the_hand_off(
    postgres_url: str, namespace: str, engine: AsyncEngine, clock: ManualClock
) -> None:
    await bananas_sql.upgrade(postgres_url, namespace=namespace)
    async with engine.begin() as conn:  # a database as version 2 left it
        await conn.execute(sa.text(f"DROP TABLE {namespace}_waiters"))
        await conn.execute(sa.text(
            f"CREATE OR REPLACE FUNCTION {namespace}_notify_work() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN PERFORM pg_notify('{namespace}_work', ''); RETURN NULL; END $$"
        ))  # fmt: skip
        await conn.execute(sa.text(f"UPDATE {namespace}_schema_version SET version = 2"))
    async with connect(postgres_url, namespace=namespace, clock=clock) as backend:
        with pytest.raises(SchemaError, match=f"at schema version 2 but this bananas-sql needs {SCHEMA_VERSION}"):
            await backend.queue.enqueue(mk(clock))
    await bananas_sql.upgrade(postgres_url, namespace=namespace)
    async with connect(postgres_url, namespace=namespace, clock=clock) as backend:
        q: Any = backend.queue
        waiting = await start_waiting(q, engine, namespace, "w")
        job = mk(clock)
        await q.enqueue(job)
        assert [j.id for j in await waiting] == [job.id]


async def test_a_worker_pool_runs_jobs_handed_to_it_exactly_once_and_stops_at_once(
    postgres_url: str, namespace: str, engine: AsyncEngine
) -> None:
    from bananas.config import WorkerConfig
    from bananas.worker import Executor, Pool, Registry

    await bananas_sql.upgrade(postgres_url, namespace=namespace)
    ran: list[int] = []
    registry = Registry()

    async def handler(ctx: Any, job: Job) -> None:
        ran.append(job.payload["i"])

    registry.register("count", handler)
    async with connect(postgres_url, namespace=namespace) as backend:
        pool = Pool(Executor(registry, backend.queue), backend, WorkerConfig(concurrency=2), poll_interval=30)
        await pool.start()
        try:
            for i in range(20):  # one at a time, each to an idle worker
                await backend.queue.enqueue(Job.create("count", {"i": i}))
                await eventually(lambda i=i: i in ran, what=f"job {i} running")
                await eventually(lambda: waiters(engine, namespace), what="a worker registered again (idle)")
            assert await waiters(engine, namespace) != []  # it waits as a registered waiter
            started = time.monotonic()
            await pool.stop()
            assert time.monotonic() - started < 5.0  # a wait of poll_interval (30 s) was cut short
            done = await rows(engine, f"SELECT count(*) FROM {namespace}_jobs WHERE state = 'completed'")
        finally:
            await pool.stop(force=True)
    assert sorted(ran) == list(range(20))
    assert done == [(20,)]
    assert await waiters(engine, namespace) == []  # the stopped worker unregistered

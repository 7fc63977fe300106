"""PostgreSQL specifics: transactional enqueue, LISTEN/NOTIFY wake-ups, the claim plan."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from typing import Any

import attrs
import psycopg
import pytest
import sqlalchemy as sa
from bananas import observe
from bananas.backend import Backend
from bananas.errors import DuplicateJob
from bananas.job import Job, JobResult, JobStatus
from bananas.plugins import connect
from bananas_sql.queries.postgres import claim_sql
from bananas_sql.urls import postgres_sqlalchemy_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session
from waiting import eventually

import bananas_sql

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pg(postgres_url: str, namespace: str) -> AsyncIterator[Backend]:
    await bananas_sql.upgrade(postgres_url, namespace=namespace)
    async with connect(postgres_url, namespace=namespace) as backend:
        yield backend


@pytest.fixture
def sync_engine(postgres_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(postgres_sqlalchemy_url(postgres_url))
    yield engine
    engine.dispose()


@pytest.fixture
async def async_engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(postgres_sqlalchemy_url(postgres_url))
    yield engine
    await engine.dispose()


async def test_transactional_enqueue_commit_and_rollback(pg: Backend, sync_engine: sa.Engine, namespace: str) -> None:
    kept, dropped = Job.create("kept"), Job.create("dropped")
    with sync_engine.begin() as conn:
        bananas_sql.enqueue_in_transaction(conn, kept, namespace=namespace)

    def failing_transaction() -> None:
        with Session(sync_engine) as session, session.begin():
            bananas_sql.enqueue_in_transaction(session, dropped, namespace=namespace)
            raise RuntimeError("the application's transaction fails")

    with pytest.raises(RuntimeError):
        failing_transaction()
    assert (await pg.queue.get_job(kept.id)).status is JobStatus.PENDING
    assert [j.id for j in await pg.queue.claim(["default"], limit=5)] == [kept.id]
    with pytest.raises(DuplicateJob), sync_engine.begin() as conn:
        bananas_sql.enqueue_in_transaction(conn, kept, namespace=namespace)


async def test_async_transactional_enqueue(pg: Backend, async_engine: AsyncEngine, namespace: str) -> None:
    kept, dropped = Job.create("kept"), Job.create("dropped")
    async with async_engine.connect() as conn:
        async with conn.begin():
            await bananas_sql.enqueue_in_transaction_async(conn, kept, namespace=namespace)
        trans = await conn.begin()
        await bananas_sql.enqueue_in_transaction_async(conn, dropped, namespace=namespace)
        await trans.rollback()
    assert [j.id for j in await pg.queue.claim(["default"], limit=5)] == [kept.id]


class Marking(observe.Observer):
    """Adds a wire field to every job it sees submitted, as tracing adds its context."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @contextlib.contextmanager
    def _mark(self, jobs: Sequence[Job]) -> Iterator[Sequence[Job]]:
        self.seen += [j.id for j in jobs]
        yield [attrs.evolve(j, extra={**j.extra, "marked": "yes"}) for j in jobs]

    def submitting(self, jobs: Sequence[Job]) -> contextlib.AbstractContextManager[Sequence[Job]]:
        return self._mark(jobs)


async def test_transactional_enqueue_is_a_submit_the_observers_see(
    pg: Backend, sync_engine: sa.Engine, async_engine: AsyncEngine, namespace: str
) -> None:
    observer = Marking()
    observe.add_observer(observer)
    try:
        one, two = Job.create("one"), Job.create("two")
        with sync_engine.begin() as conn:
            bananas_sql.enqueue_in_transaction(conn, one, namespace=namespace)
        async with async_engine.begin() as aconn:
            await bananas_sql.enqueue_in_transaction_async(aconn, two, namespace=namespace)
    finally:
        observe.remove_observer(observer)
    assert observer.seen == [one.id, two.id]
    for job in (one, two):  # what the observer handed back is what was stored
        assert (await pg.queue.get_job(job.id)).extra.get("marked") == "yes"


async def woken_by(waiting: Awaitable[Any], action: Awaitable[Any], what: str) -> None:
    """Start ``waiting`` (a wait of 30 s); once it blocks, run ``action``; ``waiting`` must end
    well before its own timeout (woken by the action's notification)."""
    task = asyncio.ensure_future(waiting)
    await asyncio.sleep(0)  # the wait runs up to its first blocking point
    assert not task.done(), f"{what}: the wait ended before the action"
    await action
    try:
        await asyncio.wait_for(task, 10)  # far below the wait's 30 s, above any re-check
    except TimeoutError:
        raise AssertionError(f"{what}: not woken by the notification") from None


async def test_idle_worker_is_woken_by_enqueue_elsewhere(pg: Backend, postgres_url: str, namespace: str) -> None:
    assert await pg.queue.claim(["default"]) == []
    await pg.queue.wait_for_work(["default"], 5)  # the listener's first connect counts as a wake-up
    async with connect(postgres_url, namespace=namespace) as producer:
        enqueue = producer.queue.enqueue(Job.create("wake"))
        await woken_by(pg.queue.wait_for_work(["default"], 30), enqueue, "wait_for_work")
    assert [j.name for j in await pg.queue.claim(["default"])] == ["wake"]


async def test_result_wait_is_pushed(pg: Backend, postgres_url: str, namespace: str) -> None:
    listener = pg.queue.db.listener  # type: ignore[attr-defined]
    async with connect(postgres_url, namespace=namespace) as worker:
        waiting = asyncio.ensure_future(pg.results.wait("r", 30))
        await eventually(lambda: listener.watching("r") and listener.connected, what="the result waiter listening")
        await worker.results.store(JobResult(job_id="r", status=JobStatus.COMPLETED, result=[1]))
        result = await asyncio.wait_for(waiting, 4)  # it re-checks every 5 s: this is the notification
    assert result.result == [1]


async def test_claim_uses_partial_index_with_large_history(
    pg: Backend, async_engine: AsyncEngine, namespace: str, postgres_url: str
) -> None:
    jobs = f"{namespace}_jobs"
    finished = json.dumps(Job.create("old").to_dict())
    async with async_engine.begin() as conn:
        await conn.execute(
            sa.text(
                f"INSERT INTO {jobs} (id, name, state, routing_key, priority, position, run_at, data, expires_at) "
                f"SELECT 'old-' || g, 'old', CASE WHEN g % 10 = 0 THEN 'dead' ELSE 'completed' END, 'default', 1, "
                f"nextval('{namespace}_job_position'), 0, :data, 1e12 FROM generate_series(1, 200000) AS g"
            ),
            {"data": finished},
        )
        await conn.execute(sa.text(f"ANALYZE {jobs}"))
    await pg.queue.enqueue_many([Job.create(f"new{i}") for i in range(5)])
    db = pg.queue.db  # type: ignore[attr-defined]
    for keys in (["default"], ["other", "default"]):
        query = claim_sql(db.names.jobs, len(keys), True, False)
        params: dict[str, object] = {"now": 0.0, "lease_until": 60.0, "limit": 3, "lease_token": "t"}
        params.update({f"k{i}": key for i, key in enumerate(keys)})
        async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
            plan = "\n".join(r[0] for r in await (await conn.execute("EXPLAIN " + query, params)).fetchall())
            await conn.rollback()
        assert f"{namespace}_jobs_claim" in plan, plan
        assert "Seq Scan" not in plan, plan
    async with async_engine.begin() as conn:
        plan = "\n".join(r[0] for r in await conn.execute(sa.text("EXPLAIN " + db.q["depths"])))
    assert "Seq Scan" not in plan, plan  # queue depths do not read the finished history either
    claimed = await pg.queue.claim(["default"], limit=3)
    assert [j.name for j in claimed] == ["new0", "new1", "new2"]


@pytest.mark.parametrize("first", ["work", "result"])
async def test_one_listener_serves_work_and_results_in_either_order(
    pg: Backend, postgres_url: str, namespace: str, first: str
) -> None:
    # The listener subscribes to a channel when first needed; adding the second must not lose pushes.
    listener = pg.queue.db.listener  # type: ignore[attr-defined]
    async with connect(postgres_url, namespace=namespace) as other:

        async def result_pushed() -> None:
            waiting = asyncio.ensure_future(pg.results.wait("r", 30))
            await eventually(lambda: listener.watching("r") and listener.connected, what="the result waiter")
            await other.results.store(JobResult(job_id="r", status=JobStatus.COMPLETED, result=[1]))
            try:  # it re-checks every 5 s: done sooner means the notification woke it
                assert (await asyncio.wait_for(waiting, 4)).result == [1]
            except TimeoutError:
                raise AssertionError("the result wait was not woken by a notification") from None

        async def work_pushed() -> None:
            assert await pg.queue.claim(["default"]) == []
            await pg.queue.wait_for_work(["default"], 5)  # a (re)connect counts as a wake-up
            enqueue = other.queue.enqueue(Job.create("wake"))
            await woken_by(pg.queue.wait_for_work(["default"], 30), enqueue, "wait_for_work")

        steps = [work_pushed, result_pushed] if first == "work" else [result_pushed, work_pushed]
        for step in steps:
            await step()


async def test_a_busy_worker_stops_listening_and_listens_again_when_dry(
    pg: Backend, postgres_url: str, namespace: str
) -> None:
    from bananas_sql.pg.database import BUSY_CLAIMS

    db: Any = pg.queue.db  # type: ignore[attr-defined]
    work = db.listener.work_channel
    await pg.queue.enqueue_many([Job.create("busy") for _ in range(2 * BUSY_CLAIMS + 1)])
    for i in range(BUSY_CLAIMS):
        assert len(await pg.queue.claim(["default"], limit=2)) == 2
        assert db.listener.listening(work) == (i < BUSY_CLAIMS - 1)
    assert not db.listener.listening(work)  # busy: no NOTIFY reaches this session any more
    assert len(await pg.queue.claim(["default"], limit=2)) == 1  # runs dry
    await pg.queue.wait_for_work(["default"], 5)  # listens again; returns once it does
    assert db.listener.listening(work)
    assert await pg.queue.claim(["default"], limit=2) == []
    async with connect(postgres_url, namespace=namespace) as producer:
        enqueue = producer.queue.enqueue(Job.create("wake"))
        await woken_by(pg.queue.wait_for_work(["default"], 30), enqueue, "wait_for_work after busy")
    assert [j.name for j in await pg.queue.claim(["default"])] == ["wake"]

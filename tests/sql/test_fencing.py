"""Settles are fenced by the claim's lease token: once a lease was reaped and the job claimed
again, the first worker's complete / fail / release / renew change nothing (complete and fail
raise LeaseLost), on SQLite and PostgreSQL, alone or in a group-commit batch."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.errors import LeaseLost, SchemaError
from bananas.job import Job, JobResult, JobStatus
from bananas.plugins import connect
from bananas.protocols import LEASE_EXPIRED_ERROR
from bananas_sql.batch import Write
from bananas_sql.tables import SCHEMA_VERSION
from bananas_sql.urls import postgres_sqlalchemy_url, sqlite_sqlalchemy_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import bananas_sql

pytestmark = pytest.mark.anyio


def make(clock: ManualClock, name: str = "task", **kw: Any) -> Job:
    return Job.create(name, kw.pop("payload", {"n": 1}), now=clock.now(), **kw)


def success(job: Job, value: Any) -> JobResult:
    return JobResult(job_id=job.id, status=JobStatus.COMPLETED, result=value)


def engine_for(url: str) -> AsyncEngine:
    return create_async_engine(sqlite_sqlalchemy_url(url) if url.startswith("sqlite") else postgres_sqlalchemy_url(url))


async def row(url: str, namespace: str, job_id: str) -> tuple[Any, ...]:
    """``(state, lease_until, lease_token, data)`` of a job's row, read with plain SQL."""
    engine = engine_for(url)
    try:
        async with engine.connect() as conn:
            sql = f"SELECT state, lease_until, lease_token, data FROM {namespace}_jobs WHERE id = :id"
            return tuple((await conn.execute(sa.text(sql), {"id": job_id})).one())
    finally:
        await engine.dispose()


async def stale_and_current(backend: Backend, clock: ManualClock, **kw: Any) -> tuple[Job, Job]:
    """Worker A's claim of a job whose lease ran out and was reaped, and worker B's claim of it."""
    job = make(clock, **kw)
    await backend.queue.enqueue(job)
    [a] = await backend.queue.claim(["default"], lease=10)
    clock.advance(11)
    assert await backend.queue.reap_expired() == 1
    [b] = await backend.queue.claim(["default"], lease=10)
    assert a.id == b.id == job.id
    assert a.lease_token and b.lease_token and a.lease_token != b.lease_token
    return a, b


async def test_every_claim_gives_a_fresh_token_stored_with_the_row(
    backend: Backend, clock: ManualClock, db_url: str, namespace: str
) -> None:
    await backend.queue.enqueue_many([make(clock) for _ in range(3)])
    first = await backend.queue.claim(["default"], limit=2)
    [second] = await backend.queue.claim(["default"])
    assert len({j.lease_token for j in first}) == 1  # one claim call, one token
    assert second.lease_token not in ("", first[0].lease_token)
    for job in [*first, second]:
        state, _lease, token, _data = await row(db_url, namespace, job.id)
        assert (state, token) == ("processing", job.lease_token)
    done = await backend.queue.complete(second)
    assert done.lease_token == ""  # a settled copy holds nothing
    assert (await row(db_url, namespace, second.id))[2] is None  # cleared when the row leaves processing


async def test_a_stale_worker_changes_nothing_and_the_job_completes_once(
    backend: Backend, clock: ManualClock, db_url: str, namespace: str
) -> None:
    a, b = await stale_and_current(backend, clock, max_retries=3)
    before = await row(db_url, namespace, a.id)
    with pytest.raises(LeaseLost) as lost:
        await backend.queue.complete(a)
    assert lost.value.job_id == a.id and "claimed again" in str(lost.value)
    with pytest.raises(LeaseLost):
        await backend.queue.fail(a, "boom")  # would retry later
    with pytest.raises(LeaseLost):
        await backend.queue.fail(a.evolve(max_retries=1), "boom")  # would bury
    with pytest.raises(LeaseLost):
        await backend.queue.complete_and_store(a, success(a, "from A"))  # type: ignore[attr-defined]
    await backend.queue.release(a)  # silently nothing
    assert await backend.queue.renew([a], lease=1000) == set()
    assert await row(db_url, namespace, a.id) == before  # not a byte changed
    assert await backend.results.get(a.id) is None

    done = await backend.queue.complete_and_store(b, success(b, "from B"))  # type: ignore[attr-defined]
    assert (done.attempts, done.error) == (1, LEASE_EXPIRED_ERROR)  # B's record
    for late in (backend.queue.complete(a), backend.queue.fail(a, "late")):
        with pytest.raises(LeaseLost, match="completed now"):
            await late
    await backend.queue.release(a)
    stored = await backend.queue.get_job(a.id)
    assert (stored.status, stored.to_json()) == (JobStatus.COMPLETED, done.to_json())
    result = await backend.results.get(a.id)
    assert result is not None and result.result == "from B"
    assert await backend.queue.claim(["default"]) == []  # completed once: nothing went back to pending


async def test_a_stale_renew_does_not_extend_the_new_lease(backend: Backend, clock: ManualClock) -> None:
    a, b = await stale_and_current(backend, clock)
    clock.advance(5)
    assert await backend.queue.renew([a], lease=1000) == set()
    assert await backend.queue.renew([b, a], lease=10) == {b.id}
    clock.advance(9)
    assert await backend.queue.reap_expired() == 0  # B's renewal holds
    clock.advance(2)
    assert await backend.queue.reap_expired() == 1  # A's did nothing: B's lease ran out on time


async def test_a_stale_release_does_not_hand_back_the_new_claim(backend: Backend, clock: ManualClock) -> None:
    a, b = await stale_and_current(backend, clock)
    await backend.queue.release(a)
    assert await backend.queue.claim(["default"]) == []  # still B's
    await backend.queue.release(b)
    [c] = await backend.queue.claim(["default"])
    assert c.id == b.id and c.lease_token not in (a.lease_token, b.lease_token)


async def test_a_copy_that_no_claim_gave_holds_nothing(backend: Backend, clock: ManualClock) -> None:
    job = make(clock)
    await backend.queue.enqueue(job)
    [claimed] = await backend.queue.claim(["default"])
    unclaimed = claimed.evolve(lease_token="")
    assert unclaimed == claimed  # the token is no part of a job's identity
    with pytest.raises(LeaseLost):
        await backend.queue.complete(unclaimed)
    with pytest.raises(LeaseLost):
        await backend.queue.fail(unclaimed, "boom")
    await backend.queue.release(unclaimed)
    assert await backend.queue.renew([unclaimed]) == set()
    with pytest.raises(LeaseLost, match="no longer exists"):
        await backend.queue.complete(make(clock).evolve(status=JobStatus.PROCESSING, lease_token="x" * 32))
    assert (await backend.queue.complete(claimed)).status is JobStatus.COMPLETED  # the real claim still holds


async def test_a_settle_retried_after_it_was_applied_returns_normally(backend: Backend, clock: ManualClock) -> None:
    await backend.queue.enqueue_many([make(clock, "c"), make(clock, "f", max_retries=3), make(clock, "s")])
    c, f, s = await backend.queue.claim(["default"], limit=3)
    done = await backend.queue.complete(c)
    assert await backend.queue.complete(c) == done  # the same write again: applied already
    retry = await backend.queue.fail(f, "boom")
    assert await backend.queue.fail(f, "boom") == retry
    stored = await backend.queue.complete_and_store(s, success(s, 7))  # type: ignore[attr-defined]
    assert await backend.queue.complete_and_store(s, success(s, 7)) == stored  # type: ignore[attr-defined]
    clock.advance(1)  # a different write (later time) is no retry: the lease is gone
    with pytest.raises(LeaseLost, match="completed now"):
        await backend.queue.complete(c)
    with pytest.raises(LeaseLost, match="scheduled now"):
        await backend.queue.fail(f, "boom")
    with pytest.raises(LeaseLost):
        await backend.queue.fail(c, "boom")


async def test_a_stale_settle_does_not_fail_the_healthy_ones_of_its_batch(
    backend: Backend, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    q: Any = backend.queue
    batches: list[list[str]] = []
    flush = q.db.writes._flush

    async def spy(writes: Sequence[Write]) -> list[bool]:
        batches.append([name for name, _ in writes])
        result: list[bool] = await flush(writes)
        return result

    q.db.writes._flush = spy
    await q.enqueue_many([make(clock, f"j{i}", max_retries=3) for i in range(8)])
    stale = await q.claim(["default"], limit=4, lease=5)
    healthy = await q.claim(["default"], limit=4, lease=60)
    clock.advance(6)
    assert await q.reap_expired() == 4
    current = await q.claim(["default"], limit=4, lease=60)
    assert {j.id for j in current} == {j.id for j in stale}
    batches.clear()
    outcomes = await asyncio.gather(
        q.complete(stale[0]),
        q.complete(healthy[0]),
        q.complete_and_store(stale[1], success(stale[1], "stale")),
        q.complete_and_store(healthy[1], success(healthy[1], "healthy")),
        q.fail(stale[2], "stale"),
        q.fail(healthy[2], "healthy"),
        q.fail(stale[3].evolve(max_retries=1), "stale"),
        q.fail(healthy[3].evolve(max_retries=1), "healthy"),
        return_exceptions=True,
    )
    assert len(batches) == 1 and len(batches[0]) == 8, batches  # one group commit carried all eight
    assert not [r for r in caplog.records if "one by one" in r.getMessage()]
    assert [type(o).__name__ for o in outcomes[0::2]] == ["LeaseLost"] * 4
    assert [o.status for o in outcomes[1::2] if isinstance(o, Job)] == [
        JobStatus.COMPLETED, JobStatus.COMPLETED, JobStatus.PENDING, JobStatus.FAILED,
    ]  # fmt: skip
    states = [(await q.get_job(j.id)).status for j in healthy]
    assert states == [JobStatus.COMPLETED, JobStatus.COMPLETED, JobStatus.PENDING, JobStatus.FAILED]
    result = await backend.results.get(healthy[1].id)
    assert result is not None and result.result == "healthy"
    assert await backend.results.get(stale[1].id) is None
    assert {(await q.get_job(j.id)).status for j in stale} == {JobStatus.PROCESSING}  # still the current claim's
    assert await q.renew(current) == {j.id for j in current}
    for job in current:
        assert (await q.complete(job)).status is JobStatus.COMPLETED


async def test_upgrade_from_version_3_adds_the_lease_token(
    db_url: str, namespace: str, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    await bananas_sql.upgrade(db_url, namespace=namespace)
    old = make(clock, "claimed-before-the-upgrade")
    async with connect(db_url, namespace=namespace, clock=clock) as backend:
        await backend.queue.enqueue_many([old, make(clock, "waiting")])
    engine = engine_for(db_url)
    try:
        async with engine.begin() as conn:  # a database as version 3 left it, one job claimed by a worker of then
            await conn.execute(sa.text(f"ALTER TABLE {namespace}_jobs DROP COLUMN lease_token"))
            if db_url.startswith("postgres"):
                await conn.execute(sa.text(f"ALTER TABLE {namespace}_waiters DROP COLUMN fenced"))
            await conn.execute(
                sa.text(f"UPDATE {namespace}_jobs SET state = 'processing', lease_until = :until WHERE id = :id"),
                {"until": clock() + 10, "id": old.id},
            )
            await conn.execute(sa.text(f"UPDATE {namespace}_schema_version SET version = 3"))
        async with connect(db_url, namespace=namespace, clock=clock) as backend:
            with pytest.raises(SchemaError, match=f"at schema version 3 but this bananas-sql needs {SCHEMA_VERSION}"):
                await backend.queue.depths()
        done = await bananas_sql.upgrade(db_url, namespace=namespace)
        assert done.startswith("applied 3 -> 4: the column jobs.lease_token (fenced settles); "), done
        await bananas_sql.upgrade(db_url, namespace=namespace)  # idempotent
        async with engine.connect() as conn:
            version = (await conn.execute(sa.text(f"SELECT version FROM {namespace}_schema_version"))).scalar()
            token = (
                await conn.execute(sa.text(f"SELECT lease_token FROM {namespace}_jobs WHERE id = :id"), {"id": old.id})
            ).scalar()
        assert (version, token) == (SCHEMA_VERSION, None)
        async with connect(db_url, namespace=namespace, clock=clock) as backend:
            [waiting] = await backend.queue.claim(["default"])
            assert waiting.name == "waiting" and waiting.lease_token
            assert (await backend.queue.complete(waiting)).status is JobStatus.COMPLETED
            clock.advance(11)
            assert await backend.queue.reap_expired() == 1  # claimed before the upgrade, token NULL: reaped
            [again] = await backend.queue.claim(["default"])
            assert (again.id, again.attempts) == (old.id, 1) and again.lease_token
            assert (await backend.queue.complete(again)).status is JobStatus.COMPLETED
    finally:
        await engine.dispose()

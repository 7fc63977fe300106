"""An unreadable stored job (any exception decoding or re-encoding it) hurts only itself: it is
buried alone with a readable error and one WARNING naming it, and the others of its claim
batch, reaper batch or requeue are served, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import sqlalchemy as sa
from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.errors import JobDecodeError
from bananas.job import Job, JobStatus
from bananas.protocols import LEASE_EXPIRED_ERROR
from bananas_sql.urls import postgres_sqlalchemy_url, sqlite_sqlalchemy_url
from sqlalchemy.ext.asyncio import create_async_engine

from bananas_sql import queue as sql_queue

pytestmark = pytest.mark.anyio

DEEP_LIST = "[" * 5000
"""Not even JSON: the decoder gives up with RecursionError."""


def deep_payload(job_id: str) -> str:
    """A job whose payload nests 2000 deep: valid JSON, RecursionError to decode."""
    return '{"id": ' + f'"{job_id}"' + ', "name": "deep", "payload": ' + "[" * 2000 + "]" * 2000 + "}"


def nan_payload(job_id: str) -> str:
    """A job that decodes (NaN is accepted by the decoder) but cannot be re-encoded."""
    return '{"id": ' + f'"{job_id}"' + ', "name": "nan", "payload": NaN}'


def make(clock: ManualClock, name: str = "task", **kw: Any) -> Job:
    return Job.create(name, {"n": 1}, now=clock.now(), **kw)


async def overwrite(url: str, namespace: str, job_id: str, text: str) -> None:
    """Replace the stored JSON of a job with ``text``, as a foreign or buggy producer would."""
    engine = create_async_engine(
        sqlite_sqlalchemy_url(url) if url.startswith("sqlite") else postgres_sqlalchemy_url(url)
    )
    try:
        async with engine.begin() as conn:
            sql = f"UPDATE {namespace}_jobs SET data = :data WHERE id = :id"
            assert (await conn.execute(sa.text(sql), {"data": text, "id": job_id})).rowcount == 1
    finally:
        await engine.dispose()


def warnings_about(caplog: pytest.LogCaptureFixture, job_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and repr(job_id) in r.getMessage()]


@pytest.mark.parametrize("poison", ["deep-list", "deep-payload", "nan"])
async def test_a_poison_record_in_a_claim_batch_is_buried_alone(
    backend: Backend, clock: ManualClock, db_url: str, namespace: str, caplog: pytest.LogCaptureFixture, poison: str
) -> None:
    healthy = [make(clock, f"h{i}") for i in range(10)]
    bad = make(clock, "bad")
    await backend.queue.enqueue_many([*healthy[:5], bad, *healthy[5:]])
    text = {"deep-list": DEEP_LIST, "deep-payload": deep_payload(bad.id), "nan": nan_payload(bad.id)}[poison]
    await overwrite(db_url, namespace, bad.id, text)
    caplog.set_level(logging.WARNING, "bananas")
    claimed = await backend.queue.claim(["default"], limit=11)
    handed_out = [j for j in claimed if j.id == bad.id]
    claimed = [j for j in claimed if j.id != bad.id]
    assert [j.name for j in claimed] == [j.name for j in healthy]  # all ten, in order, each holding its claim
    assert all(j.lease_token and j.status is JobStatus.PROCESSING for j in claimed)
    for job in claimed:
        await backend.queue.complete(job)
    if handed_out:
        # Decodable (NaN), so a claim may hand it out; its settles cannot encode it, and the
        # reaper buries it once its lease runs out.
        assert poison == "nan"
        clock.advance(120)
        assert await backend.queue.reap_expired() == 1
    [dead] = await backend.queue.dead_letters()
    assert (dead.id, dead.status) == (bad.id, JobStatus.FAILED)
    assert dead.error.startswith("job is unreadable: ") and len(dead.error) < 600, dead.error
    assert len(warnings_about(caplog, bad.id)) == 1


async def test_the_reaper_takes_back_the_healthy_jobs_of_a_batch_with_poison(
    backend: Backend, clock: ManualClock, db_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = [make(clock, f"j{i}") for i in range(20)]
    await backend.queue.enqueue_many(jobs)
    claimed = await backend.queue.claim(["default"], limit=20, lease=10)  # a worker that is then killed
    assert len(claimed) == 20
    await overwrite(db_url, namespace, jobs[3].id, DEEP_LIST)
    await overwrite(db_url, namespace, jobs[11].id, deep_payload(jobs[11].id))
    await overwrite(db_url, namespace, jobs[17].id, nan_payload(jobs[17].id))  # decodes; re-encoding fails
    caplog.set_level(logging.WARNING, "bananas")
    clock.advance(11)
    assert await backend.queue.reap_expired() == 20
    back = await backend.queue.claim(["default"], limit=20)
    poison = {jobs[3].id, jobs[11].id, jobs[17].id}
    assert sorted(j.name for j in back) == sorted(j.name for j in jobs if j.id not in poison)
    assert {(j.attempts, j.error) for j in back} == {(1, LEASE_EXPIRED_ERROR)}
    dead = await backend.queue.dead_letters()
    assert {j.id for j in dead} == poison
    assert all(j.error.startswith("job is unreadable: ") for j in dead)
    for job_id in poison:
        assert len(warnings_about(caplog, job_id)) == 1


async def test_a_backlog_of_expired_leases_is_reaped_in_bounded_batches(
    backend: Backend, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql_queue, "REAP_BATCH", 3)
    transactions = 0
    db: Any = backend.queue.db  # type: ignore[attr-defined]
    run = db.run

    async def counting(work: Any, **kw: Any) -> Any:
        nonlocal transactions
        transactions += 1
        return await run(work, **kw)

    monkeypatch.setattr(db, "run", counting)
    await backend.queue.enqueue_many([make(clock, f"j{i}") for i in range(10)])
    assert len(await backend.queue.claim(["default"], limit=10, lease=5)) == 10
    clock.advance(6)
    transactions = 0
    assert await backend.queue.reap_expired() == 10
    assert transactions == 4 + 1  # 3 + 3 + 3 + 1, then the pruning
    assert len(await backend.queue.claim(["default"], limit=10)) == 10


async def test_move_scheduled_works_in_bounded_batches(
    backend: Backend, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    monkeypatch.setattr(sql_queue, "MOVE_BATCH", 4)
    later = clock.now() + timedelta(seconds=5)
    await backend.queue.enqueue_many([make(clock, f"s{i}", scheduled_for=later) for i in range(10)])
    clock.advance(6)
    assert await backend.queue.move_scheduled() == 10
    assert len(await backend.queue.claim(["default"], limit=10)) == 10


async def test_dead_letters_get_job_and_requeue_survive_poison(
    backend: Backend, clock: ManualClock, db_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    bad, good = make(clock, "bad", max_retries=1), make(clock, "good", max_retries=1)
    await backend.queue.enqueue_many([bad, good])
    await overwrite(db_url, namespace, bad.id, DEEP_LIST)
    buried_at = clock.now()
    [claimed] = await backend.queue.claim(["default"], limit=2)  # buries the poison now
    await backend.queue.fail(claimed, "boom")
    clock.advance(3600)
    listed = {j.id: j for j in await backend.queue.dead_letters()}
    assert set(listed) == {bad.id, good.id}
    assert listed[bad.id].updated_at == buried_at  # when it died, not "now"
    assert (await backend.queue.get_job(bad.id)).error.startswith("job is unreadable: ")
    assert await backend.queue.requeue_dead() == 2  # the poison goes back as it is
    caplog.clear()
    caplog.set_level(logging.WARNING, "bananas")
    [again] = await backend.queue.claim(["default"], limit=2)
    assert (again.id, again.attempts, again.error) == (good.id, 0, "")
    assert [j.id for j in await backend.queue.dead_letters()] == [bad.id]  # buried again, with its error
    assert len(warnings_about(caplog, bad.id)) == 1


async def test_a_hostile_id_cannot_forge_log_lines(
    backend: Backend, clock: ManualClock, db_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    job = make(clock)
    await backend.queue.enqueue(job)
    evil = "evil\r\nWARNING bananas: all is well"  # no Job takes such an id; a foreign producer may write one
    await overwrite(db_url, namespace, job.id, DEEP_LIST)
    engine = create_async_engine(
        sqlite_sqlalchemy_url(db_url) if db_url.startswith("sqlite") else postgres_sqlalchemy_url(db_url)
    )
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(f"UPDATE {namespace}_jobs SET id = :evil WHERE id = :id"), {"evil": evil, "id": job.id}
            )
    finally:
        await engine.dispose()
    caplog.set_level(logging.WARNING, "bananas")
    assert await backend.queue.claim(["default"]) == []
    assert (await backend.queue.depths()).dead == 1
    assert await backend.queue.dead_letters() == []  # no Job can carry that id: left out of the list, said so
    records = warnings_about(caplog, evil)
    assert [("dead letter" in r.getMessage()) for r in records] == [True, True]
    assert all("\n" not in r.getMessage() and "\r" not in r.getMessage() for r in records)
    assert await backend.queue.purge_dead() == 1


async def test_the_mover_buries_an_unreadable_due_job_and_moves_the_others(
    backend: Backend, clock: ManualClock, db_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    from datetime import timedelta

    jobs = [make(clock, f"s{i}", scheduled_for=clock.now() + timedelta(seconds=5 + i)) for i in range(6)]
    await backend.queue.enqueue_many(jobs)
    await overwrite(db_url, namespace, jobs[0].id, deep_payload(jobs[0].id))  # due first
    await overwrite(db_url, namespace, jobs[4].id, nan_payload(jobs[4].id))  # decodes; re-encoding fails
    with pytest.raises(JobDecodeError):
        await backend.queue.get_job(jobs[0].id)  # not buried yet: it waits where it is
    caplog.set_level(logging.WARNING, "bananas")
    clock.advance(30)
    assert await backend.queue.move_scheduled() == 4
    assert await backend.queue.move_scheduled() == 0
    claimed = await backend.queue.claim(["default"], limit=10)
    assert [j.name for j in claimed] == ["s1", "s2", "s3", "s5"]  # in due order
    for bad in (jobs[0], jobs[4]):
        stored = await backend.queue.get_job(bad.id)
        assert stored.status is JobStatus.FAILED and stored.error.startswith("job is unreadable: ")
        result = await backend.results.get(bad.id)  # its waiters are told
        assert result is not None and result.is_failed() and result.error == stored.error
        assert len(warnings_about(caplog, bad.id)) == 1

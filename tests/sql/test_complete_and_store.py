"""A success and its result in one write: the result exists exactly when the completion applied."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.errors import JobNotFound, LeaseLost
from bananas.job import Job, JobResult, JobStatus
from bananas.plugins import connect
from bananas.policy import LEASE_EXPIRED_ERROR
from bananas.worker import Registry
from bananas.worker.executor import Executor

import bananas_sql

pytestmark = pytest.mark.anyio


def make(clock: ManualClock, name: str = "task", **kw: Any) -> Job:
    return Job.create(name, kw.pop("payload", None), now=clock.now(), **kw)


def success(job: Job, value: Any) -> JobResult:
    return JobResult(job_id=job.id, status=JobStatus.COMPLETED, result=value)


async def lost(backend: Backend, clock: ManualClock) -> Job:
    """A job claimed by us whose row is gone: its lease ran out, it was buried and purged."""
    await backend.queue.enqueue(make(clock, "lost", max_retries=1))
    [job] = await backend.queue.claim(["default"], lease=1)
    clock.advance(5)
    assert await backend.queue.reap_expired() == 1
    assert await backend.queue.purge_dead([job.id]) == 1
    return job


async def reaper_result_only(backend: Backend, job: Job) -> None:
    """The stale completion stored nothing: the only result is the reaper's failed one."""
    result = await backend.results.get(job.id)
    assert result is not None and (result.status, result.error) == (JobStatus.FAILED, LEASE_EXPIRED_ERROR)


async def test_complete_and_store_writes_job_and_result(backend: Backend, clock: ManualClock) -> None:
    q: Any = backend.queue
    assert q.shares_store_with(backend.results)
    await q.enqueue(make(clock, payload={"n": 1}))
    [job] = await q.claim(["default"])
    waiter = asyncio.ensure_future(backend.results.wait(job.id, 10))
    await asyncio.sleep(0.05)
    stored = await q.complete_and_store(job, success(job, {"ok": [1, 2.5, "é"]}))
    assert stored.status is JobStatus.COMPLETED
    assert (await q.get_job(job.id)).status is JobStatus.COMPLETED
    result = await asyncio.wait_for(waiter, 10)  # waiters are woken as for a stored result
    assert (result.status, result.result) == (JobStatus.COMPLETED, {"ok": [1, 2.5, "é"]})
    assert await backend.results.get(job.id) == result


async def test_no_result_when_the_completion_does_not_apply(backend: Backend, clock: ManualClock) -> None:
    q: Any = backend.queue
    job = await lost(backend, clock)
    with pytest.raises(LeaseLost):
        await q.complete_and_store(job, success(job, 1))
    await reaper_result_only(backend, job)
    with pytest.raises(JobNotFound):
        await q.get_job(job.id)


async def test_a_batch_of_mixed_outcomes(
    backend: Backend, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    q: Any = backend.queue
    gone = [await lost(backend, clock) for _ in range(3)]
    await q.enqueue_many([make(clock, f"j{i}", payload={"i": i}) for i in range(30)])
    claimed = await q.claim(["default"], limit=30)
    done, plain, failed = claimed[:20], claimed[20:25], claimed[25:]
    everyone = [*done, *gone]
    outcomes = await asyncio.gather(
        *(q.complete_and_store(j, success(j, {"i": n})) for n, j in enumerate(everyone)),
        *(q.complete(j) for j in plain),
        *(q.fail(j, "boom") for j in failed),
        return_exceptions=True,
    )
    assert not [r for r in caplog.records if "one by one" in r.getMessage()]  # the batches themselves worked
    applied = outcomes[: len(everyone)]
    assert [type(o) for o in applied[len(done) :]] == [LeaseLost] * len(gone)
    assert all(not isinstance(o, BaseException) for o in applied[: len(done)] + outcomes[len(everyone) :])
    for n, job in enumerate(done):
        assert (await q.get_job(job.id)).status is JobStatus.COMPLETED
        result = await backend.results.get(job.id)
        assert result is not None and result.result == {"i": n}
    for job in gone:
        await reaper_result_only(backend, job)
    for job in [*plain, *failed]:
        assert await backend.results.get(job.id) is None
    assert {(await q.get_job(j.id)).status for j in failed} == {JobStatus.PENDING}


async def test_a_result_for_another_job_is_refused(backend: Backend, clock: ManualClock) -> None:
    await backend.queue.enqueue_many([make(clock), make(clock)])
    a, b = await backend.queue.claim(["default"], limit=2)
    with pytest.raises(ValueError, match="not"):
        await backend.queue.complete_and_store(a, success(b, 1))  # type: ignore[attr-defined]
    assert await backend.results.get(a.id) is None and await backend.results.get(b.id) is None


async def test_the_executor_records_a_success_with_one_write(
    backend: Backend, clock: ManualClock, db_url: str, namespace: str
) -> None:
    writes: list[str] = []
    db: Any = backend.queue.db  # type: ignore[attr-defined]
    submit = db.writes.submit

    async def spy(name: str, params: Any) -> bool:
        writes.append(name)
        return bool(await submit(name, params))

    db.writes.submit = spy
    registry = Registry()
    registry.register("double", lambda ctx, job: job.payload["n"] * 2)
    executor = Executor(registry, backend.queue, clock=backend.clock)
    executor.set_result_backend(backend.results)
    await backend.queue.enqueue(make(clock, "double", payload={"n": 21}))
    [job] = await backend.queue.claim(["default"])
    stored = await executor.execute_job(job)
    assert stored is not None and stored.status is JobStatus.COMPLETED
    assert writes == ["complete_and_store"]
    result = await backend.results.get(job.id)
    assert result is not None and result.result == 42

    # Results kept in another store are written on their own.
    other = connect(db_url, namespace=namespace + "x", clock=clock)
    try:
        await bananas_sql.upgrade(db_url, namespace=namespace + "x")
        assert not backend.queue.shares_store_with(other.results)  # type: ignore[attr-defined]
    finally:
        await other.close()

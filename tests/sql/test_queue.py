"""The queue contract on PostgreSQL and SQLite (until the shared conformance suite lands)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.errors import DuplicateJob, InvalidJob, JobNotFound
from bananas.job import Job, JobPriority, JobStatus
from bananas.protocols import LEASE_EXPIRED_ERROR

pytestmark = pytest.mark.anyio


def make(clock: ManualClock, name: str = "task", **kw: object) -> Job:
    return Job.create(name, kw.pop("payload", None), now=clock.now(), **kw)  # type: ignore[arg-type]


async def test_enqueue_claim_complete_round_trip(backend: Backend, clock: ManualClock) -> None:
    payload = {"nested": [1, 2.5, "é", None, {"x": True}], "big": 2**53}
    job = make(clock, payload=payload).evolve(extra={"origin": "go-service", "trace": {"id": 7}})
    await backend.queue.enqueue(job)
    assert (await backend.queue.get_job(job.id)).status is JobStatus.PENDING
    [claimed] = await backend.queue.claim(["default"])
    assert claimed.status is JobStatus.PROCESSING
    assert claimed.payload == payload
    assert claimed.extra == {"origin": "go-service", "trace": {"id": 7}}
    assert (await backend.queue.get_job(job.id)).status is JobStatus.PROCESSING
    assert await backend.queue.claim(["default"]) == []
    done = await backend.queue.complete(claimed)
    assert done.status is JobStatus.COMPLETED
    stored = await backend.queue.get_job(job.id)
    assert stored.status is JobStatus.COMPLETED
    assert stored.extra == job.extra
    depths = await backend.queue.depths()
    assert (depths.total_ready, depths.processing, depths.scheduled, depths.dead) == (0, 0, 0, 0)


async def test_claim_order_priority_routing_fifo(backend: Backend, clock: ManualClock) -> None:
    jobs = [
        make(clock, "a-low", priority="low", routing_key="a"),
        make(clock, "b-high", priority="high", routing_key="b"),
        make(clock, "a-normal-1", routing_key="a"),
        make(clock, "a-high", priority="high", routing_key="a"),
        make(clock, "a-normal-2", routing_key="a"),
        make(clock, "c-high", priority="high", routing_key="c"),
    ]
    for job in jobs:
        await backend.queue.enqueue(job)
    claimed = await backend.queue.claim(["a", "b"], limit=10)
    assert [j.name for j in claimed] == ["a-high", "a-normal-1", "a-normal-2", "a-low", "b-high"]
    [c] = await backend.queue.claim(["b", "c"], priorities=[JobPriority.HIGH, JobPriority.NORMAL])
    assert c.name == "c-high"


async def test_claim_respects_limit_priorities_and_names(backend: Backend, clock: ManualClock) -> None:
    await backend.queue.enqueue_many([make(clock, f"n{i % 2}", priority="low") for i in range(6)])
    assert await backend.queue.claim(["default"], priorities=[JobPriority.HIGH]) == []
    got = await backend.queue.claim(["default"], limit=2, job_names={"n1"})
    assert [j.name for j in got] == ["n1", "n1"]
    rest = await backend.queue.claim(["default"], limit=10)
    assert sorted(j.name for j in rest) == ["n0", "n0", "n0", "n1"]


async def test_duplicate_and_invalid_jobs(backend: Backend, clock: ManualClock) -> None:
    job = make(clock)
    await backend.queue.enqueue(job)
    with pytest.raises(DuplicateJob):
        await backend.queue.enqueue(job)
    other = make(clock)
    with pytest.raises(DuplicateJob):
        await backend.queue.enqueue_many([other, job])
    with pytest.raises(JobNotFound):
        await backend.queue.get_job(other.id)  # the batch was all or nothing
    with pytest.raises(InvalidJob, match="pending or scheduled"):
        await backend.queue.enqueue(make(clock).evolve(status=JobStatus.COMPLETED))


async def test_scheduled_job_waits_for_its_time(backend: Backend, clock: ManualClock) -> None:
    job = make(clock, scheduled_for=clock.now() + timedelta(seconds=30))
    assert job.status is JobStatus.SCHEDULED
    await backend.queue.enqueue(job)
    assert await backend.queue.claim(["default"]) == []
    assert await backend.queue.move_scheduled() == 0
    assert (await backend.queue.depths()).scheduled == 1
    clock.advance(31)
    assert await backend.queue.move_scheduled() == 1
    assert await backend.queue.move_scheduled() == 0
    ready = await backend.queue.get_job(job.id)
    assert (ready.status, ready.scheduled_for) == (JobStatus.PENDING, None)
    [claimed] = await backend.queue.claim(["default"])
    assert claimed.id == job.id


async def test_due_scheduled_job_is_claimable_without_mover(backend: Backend, clock: ManualClock) -> None:
    job = make(clock, scheduled_for=clock.now() + timedelta(seconds=5))
    await backend.queue.enqueue(job)
    clock.advance(5)
    [claimed] = await backend.queue.claim(["default"])
    assert claimed.id == job.id
    assert claimed.scheduled_for is None


async def test_fail_retries_with_backoff_then_dead(backend: Backend, clock: ManualClock) -> None:
    job = make(clock, max_retries=2)
    await backend.queue.enqueue(job)
    [claimed] = await backend.queue.claim(["default"])
    retry = await backend.queue.fail(claimed, "boom 1")
    assert (retry.status, retry.attempts, retry.error) == (JobStatus.PENDING, 1, "boom 1")
    assert retry.scheduled_for == clock.now() + timedelta(seconds=2)
    clock.advance(1.5)
    assert await backend.queue.claim(["default"]) == []
    clock.advance(1)
    [again] = await backend.queue.claim(["default"])
    assert again.attempts == 1
    dead = await backend.queue.fail(again, "boom 2")
    assert (dead.status, dead.attempts, dead.error) == (JobStatus.FAILED, 2, "boom 2")
    [listed] = await backend.queue.dead_letters()
    assert (listed.id, listed.status, listed.error) == (job.id, JobStatus.FAILED, "boom 2")
    assert (await backend.queue.depths()).dead == 1


async def test_dead_letter_requeue_and_purge(backend: Backend, clock: ManualClock) -> None:
    jobs = [make(clock, f"j{i}", max_retries=1) for i in range(3)]
    await backend.queue.enqueue_many(jobs)
    for claimed in await backend.queue.claim(["default"], limit=3):
        await backend.queue.fail(claimed, "nope")
        clock.advance(1)
    assert [j.name for j in await backend.queue.dead_letters()] == ["j2", "j1", "j0"]
    assert [j.name for j in await backend.queue.dead_letters(limit=1, offset=1)] == ["j1"]
    assert await backend.queue.requeue_dead([jobs[0].id, "missing"]) == 1
    [back] = await backend.queue.claim(["default"])
    assert (back.id, back.attempts, back.error) == (jobs[0].id, 0, "")
    assert await backend.queue.purge_dead([jobs[1].id]) == 1
    assert await backend.queue.requeue_dead() == 1
    assert await backend.queue.purge_dead() == 0
    assert (await backend.queue.depths()).dead == 0


async def test_expired_lease_is_reaped_then_dead(backend: Backend, clock: ManualClock) -> None:
    job = make(clock, max_retries=2)
    await backend.queue.enqueue(job)
    [first] = await backend.queue.claim(["default"], lease=10)
    clock.advance(5)
    never_claimed = make(clock)
    assert await backend.queue.renew([first, never_claimed], lease=10) == {first.id}
    clock.advance(9)
    assert await backend.queue.reap_expired() == 0
    clock.advance(2)
    assert await backend.queue.reap_expired() == 1
    assert await backend.queue.reap_expired() == 0
    assert await backend.queue.renew([first]) == set()
    [second] = await backend.queue.claim(["default"], lease=10)
    assert (second.attempts, second.error) == (1, LEASE_EXPIRED_ERROR)
    clock.advance(11)
    assert await backend.queue.reap_expired() == 1
    dead = await backend.queue.get_job(job.id)
    assert (dead.status, dead.attempts) == (JobStatus.FAILED, 2)
    assert [j.id for j in await backend.queue.dead_letters()] == [job.id]


async def test_release_puts_job_first_in_line(backend: Backend, clock: ManualClock) -> None:
    a, b = make(clock, "a"), make(clock, "b")
    await backend.queue.enqueue_many([a, b])
    [claimed] = await backend.queue.claim(["default"])
    assert claimed.name == "a"
    await backend.queue.enqueue(make(clock, "c"))
    [second] = await backend.queue.claim(["default"])
    await backend.queue.release(second)
    await backend.queue.release(claimed)
    got = await backend.queue.claim(["default"], limit=3)
    assert [j.name for j in got] == ["a", "b", "c"]
    assert got[0].attempts == 0


async def test_finished_jobs_expire_after_their_ttl(backend: Backend, clock: ManualClock) -> None:
    job = make(clock)
    await backend.queue.enqueue(job)
    [claimed] = await backend.queue.claim(["default"])
    await backend.queue.complete(claimed)
    clock.advance(backend.options.completed_job_ttl + 1)
    with pytest.raises(JobNotFound):
        await backend.queue.get_job(job.id)
    await backend.queue.reap_expired()  # prunes
    await backend.queue.enqueue(job)  # the id is free again
    assert (await backend.queue.get_job(job.id)).status is JobStatus.PENDING


async def test_unreadable_job_goes_to_dead_letters(backend: Backend, clock: ManualClock) -> None:
    import sqlalchemy as sa

    job = make(clock)
    await backend.queue.enqueue(job)
    db = backend.queue.db  # type: ignore[attr-defined]

    async def corrupt(conn: object) -> None:
        await conn.execute(sa.text(f"UPDATE {db.names.jobs} SET data = '{{not json'"))  # type: ignore[attr-defined]

    await db.run(corrupt)
    assert await backend.queue.claim(["default"]) == []
    [dead] = await backend.queue.dead_letters()
    assert dead.id == job.id
    assert "unreadable" in dead.error

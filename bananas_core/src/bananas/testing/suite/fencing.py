"""Conformance tests: settles are fenced by the claim's lease token, and a record nobody can
read hurts only itself (core semantics, never skipped on a backend that can plant one)."""

from __future__ import annotations

import contextlib

import pytest

from bananas.backend import Backend
from bananas.capabilities import Capability
from bananas.clock import ManualClock
from bananas.errors import JobDecodeError, LeaseLost
from bananas.job import Job, JobStatus
from bananas.protocols import LEASE_EXPIRED_ERROR
from bananas.testing.plugin import RecordOverwriter
from bananas.testing.stateful import POISON_RECORDS
from bananas.testing.suite._helpers import new_job

LEASE = 10.0


async def _claim_one(backend: Backend, job: Job) -> Job:
    claimed = await backend.queue.claim(["default"], lease=LEASE)
    assert [j.id for j in claimed] == [job.id]
    assert claimed[0].lease_token, "a claimed job must carry its claim's lease token"
    return claimed[0]


async def _taken_over(backend: Backend, clock: ManualClock, job: Job) -> tuple[Job, Job]:
    """Worker A claims ``job``; its lease runs out and is reaped; worker B claims it: (A's copy, B's copy)."""
    await backend.queue.enqueue(job)
    first = await _claim_one(backend, job)
    clock.advance(LEASE + 1)
    assert await backend.queue.reap_expired() == 1
    second = await _claim_one(backend, job)
    assert second.lease_token != first.lease_token, "two claims of one job got the same lease token"
    return first, second


def _same_record(after: Job, before: Job) -> None:
    assert (after.status, after.attempts, after.error, after.updated_at) == (
        before.status, before.attempts, before.error, before.updated_at,
    ), f"a stale settle changed job {before.id}"  # fmt: skip


class FencingTests:
    """complete / fail / release / renew apply only while the caller's claim holds the job."""

    async def test_claims_carry_distinct_lease_tokens(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        jobs = [new_job(bananas_clock) for _ in range(3)]
        await bananas_backend.queue.enqueue_many(jobs)
        claimed = await bananas_backend.queue.claim(["default"], limit=3)
        assert all(j.lease_token for j in claimed)

    async def test_stale_complete_after_another_worker_completed(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        first, second = await _taken_over(bananas_backend, bananas_clock, new_job(bananas_clock, max_retries=3))
        await bananas_backend.queue.complete(second)
        settled = await bananas_backend.queue.get_job(first.id)
        with pytest.raises(LeaseLost):
            await bananas_backend.queue.complete(first)
        with pytest.raises(LeaseLost):
            await bananas_backend.queue.fail(first, "late failure")
        await bananas_backend.queue.release(first)
        assert await bananas_backend.queue.renew([first]) == set()
        after = await bananas_backend.queue.get_job(first.id)
        assert after.status is JobStatus.COMPLETED
        _same_record(after, settled)
        depths = await bananas_backend.queue.depths()
        assert (depths.total_ready, depths.processing, depths.scheduled, depths.dead) == (0, 0, 0, 0)

    async def test_stale_fail_while_another_worker_runs_it(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        first, second = await _taken_over(bananas_backend, bananas_clock, new_job(bananas_clock, max_retries=3))
        running = await bananas_backend.queue.get_job(first.id)
        with pytest.raises(LeaseLost):
            await bananas_backend.queue.fail(first, "late failure")
        with pytest.raises(LeaseLost):
            await bananas_backend.queue.complete(first)
        await bananas_backend.queue.release(first)
        assert await bananas_backend.queue.renew([first]) == set()
        _same_record(await bananas_backend.queue.get_job(first.id), running)
        # The current holder is untouched by all that: it still renews and completes.
        assert await bananas_backend.queue.renew([second]) == {second.id}
        done = await bananas_backend.queue.complete(second)
        assert done.status is JobStatus.COMPLETED

    async def test_stale_bury_after_another_worker_completed(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        """A's failure would be its last attempt (the job would die): it must not bury B's completed job."""
        first, second = await _taken_over(bananas_backend, bananas_clock, new_job(bananas_clock, max_retries=2))
        await bananas_backend.queue.complete(second)
        with pytest.raises(LeaseLost):
            await bananas_backend.queue.fail(first, "late failure")
        after = await bananas_backend.queue.get_job(first.id)
        assert after.status is JobStatus.COMPLETED
        assert (await bananas_backend.queue.depths()).dead == 0

    async def test_stale_complete_after_reaper_buried(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        job = new_job(bananas_clock, max_retries=1)
        await bananas_backend.queue.enqueue(job)
        first = await _claim_one(bananas_backend, job)
        bananas_clock.advance(LEASE + 1)
        assert await bananas_backend.queue.reap_expired() == 1
        with pytest.raises(LeaseLost):
            await bananas_backend.queue.complete(first)
        after = await bananas_backend.queue.get_job(job.id)
        assert (after.status, after.error) == (JobStatus.FAILED, LEASE_EXPIRED_ERROR)
        assert (await bananas_backend.queue.depths()).dead == 1

    async def test_stale_release_does_not_hand_back_a_running_job(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        first, second = await _taken_over(bananas_backend, bananas_clock, new_job(bananas_clock))
        await bananas_backend.queue.release(first)
        assert await bananas_backend.queue.claim(["default"]) == [], "a stale release made a held job claimable"
        assert (await bananas_backend.queue.get_job(first.id)).status is JobStatus.PROCESSING
        assert await bananas_backend.queue.renew([second]) == {second.id}

    async def test_settle_of_a_job_never_claimed_raises(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        job = new_job(bananas_clock)
        await bananas_backend.queue.enqueue(job)
        with pytest.raises(LeaseLost):
            await bananas_backend.queue.complete(job)
        with pytest.raises(LeaseLost):
            await bananas_backend.queue.fail(job, "x")
        assert await bananas_backend.queue.renew([job]) == set()
        assert (await bananas_backend.queue.get_job(job.id)).status is JobStatus.PENDING

    async def test_copy_with_a_forged_token_holds_nothing(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        job = new_job(bananas_clock)
        await bananas_backend.queue.enqueue(job)
        held = await _claim_one(bananas_backend, job)
        forged = held.evolve(lease_token=held.lease_token + "x")
        with pytest.raises(LeaseLost):
            await bananas_backend.queue.complete(forged)
        assert await bananas_backend.queue.renew([forged]) == set()
        assert (await bananas_backend.queue.complete(held)).status is JobStatus.COMPLETED


def _poison(job: Job, index: int) -> str:
    return POISON_RECORDS[index % len(POISON_RECORDS)].replace("%s", job.id)


async def _assert_buried(backend: Backend, job_id: str) -> None:
    stored = await backend.queue.get_job(job_id)
    assert stored.status is JobStatus.FAILED, f"unreadable job {job_id} is {stored.status.value}, not dead"
    assert stored.error, "an unreadable job must be dead with a readable reason"
    result = await backend.results.get(job_id)
    assert result is not None and result.is_failed(), "waiters of an unreadable job must get a failed result"


class PoisonRecordTests:
    """A stored record that cannot be decoded or re-encoded affects that record alone."""

    @pytest.mark.parametrize("kind", range(len(POISON_RECORDS)))
    async def test_poison_in_a_claim_batch(
        self,
        bananas_backend: Backend,
        bananas_clock: ManualClock,
        bananas_overwrite_record: RecordOverwriter,
        kind: int,
    ) -> None:
        jobs = [new_job(bananas_clock) for _ in range(10)]
        await bananas_backend.queue.enqueue_many(jobs)
        bad = jobs[3]
        await bananas_overwrite_record(bananas_backend, bad.id, _poison(bad, kind))
        claimed: list[str] = []
        for _ in range(3):  # a claim that met the poison may return fewer; the next gets the rest
            claimed += [j.id for j in await bananas_backend.queue.claim(["default"], limit=10)]
        assert sorted(claimed) == sorted(j.id for j in jobs if j is not bad)
        await _assert_buried(bananas_backend, bad.id)
        depths = await bananas_backend.queue.depths()
        assert (depths.total_ready, depths.processing, depths.dead) == (0, 9, 1)

    @pytest.mark.parametrize("kind", range(len(POISON_RECORDS)))
    async def test_poison_in_the_reapers_batch(
        self,
        bananas_backend: Backend,
        bananas_clock: ManualClock,
        bananas_overwrite_record: RecordOverwriter,
        kind: int,
    ) -> None:
        jobs = [new_job(bananas_clock, max_retries=3) for _ in range(20)]
        await bananas_backend.queue.enqueue_many(jobs)
        claimed = await bananas_backend.queue.claim(["default"], limit=20, lease=LEASE)
        assert len(claimed) == 20
        bad = claimed[7]
        await bananas_overwrite_record(bananas_backend, bad.id, _poison(bad, kind))
        bananas_clock.advance(LEASE + 1)
        await bananas_backend.queue.reap_expired()
        await bananas_backend.queue.reap_expired()
        back = [j.id for j in await bananas_backend.queue.claim(["default"], limit=20)]
        assert sorted(back) == sorted(j.id for j in claimed if j is not bad), "healthy expired jobs did not come back"
        await _assert_buried(bananas_backend, bad.id)

    @pytest.mark.parametrize("kind", range(len(POISON_RECORDS)))
    async def test_poison_in_the_scheduled_set(
        self,
        bananas_backend: Backend,
        bananas_clock: ManualClock,
        bananas_overwrite_record: RecordOverwriter,
        kind: int,
    ) -> None:
        jobs = [new_job(bananas_clock, delay=5 + i) for i in range(6)]
        await bananas_backend.queue.enqueue_many(jobs)
        bad = jobs[0]  # due first: at the head of the due set
        await bananas_overwrite_record(bananas_backend, bad.id, _poison(bad, kind))
        bananas_clock.advance(30)
        assert await bananas_backend.queue.move_scheduled() == 5
        assert await bananas_backend.queue.move_scheduled() == 0
        later = new_job(bananas_clock, delay=5)
        await bananas_backend.queue.enqueue(later)
        bananas_clock.advance(10)
        assert await bananas_backend.queue.move_scheduled() == 1, "the mover stopped after meeting the unreadable job"
        claimed = [j.id for j in await bananas_backend.queue.claim(["default"], limit=10)]
        assert sorted(claimed) == sorted([j.id for j in jobs[1:]] + [later.id])
        await _assert_buried(bananas_backend, bad.id)

    @pytest.mark.bananas_capability(Capability.DEAD_LETTER_ADMIN)
    async def test_dead_letters_show_when_an_unreadable_job_died(
        self, bananas_backend: Backend, bananas_clock: ManualClock, bananas_overwrite_record: RecordOverwriter
    ) -> None:
        job = new_job(bananas_clock)
        await bananas_backend.queue.enqueue(job)
        await bananas_overwrite_record(bananas_backend, job.id, _poison(job, 0))
        died = bananas_clock.now()
        assert await bananas_backend.queue.claim(["default"]) == []
        bananas_clock.advance(3600)
        [listed] = await bananas_backend.queue.dead_letters()
        assert listed.id == job.id and listed.status is JobStatus.FAILED and listed.error
        assert abs((listed.updated_at - died).total_seconds()) < 1, "the listed death time is not when it died"

    async def test_poison_while_held_goes_dead_on_settle(
        self, bananas_backend: Backend, bananas_clock: ManualClock, bananas_overwrite_record: RecordOverwriter
    ) -> None:
        """A record made unreadable while a worker runs it ends dead, not processing forever."""
        job = new_job(bananas_clock, max_retries=3)
        await bananas_backend.queue.enqueue(job)
        held = await _claim_one(bananas_backend, job)
        await bananas_overwrite_record(bananas_backend, job.id, _poison(job, 2))
        with contextlib.suppress(JobDecodeError, LeaseLost):  # the settle may refuse; the record
            await bananas_backend.queue.complete(held)  # must not stay in processing all the same
        bananas_clock.advance(LEASE + 1)
        await bananas_backend.queue.reap_expired()
        depths = await bananas_backend.queue.depths()
        assert depths.processing == 0, "an unreadable record stayed in processing"
        stored = await bananas_backend.queue.get_job(job.id)
        assert stored.status in (JobStatus.FAILED, JobStatus.COMPLETED)

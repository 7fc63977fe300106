"""Conformance tests: enqueue, claim order, leases (core semantics, never skipped)."""

from __future__ import annotations

import asyncio

import pytest

from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.errors import DuplicateJob, InvalidJob, JobNotFound
from bananas.job import Job, JobPriority, JobStatus
from bananas.protocols import LEASE_EXPIRED_ERROR
from bananas.testing.plugin import BackendFactory
from bananas.testing.suite._helpers import claim_ids, drain, new_job

HIGH, NORMAL, LOW = JobPriority.HIGH, JobPriority.NORMAL, JobPriority.LOW


def _same_job(stored: Job, job: Job) -> None:
    for field in ("id", "name", "description", "payload", "priority", "routing_key", "created_at",
                  "max_retries", "attempts", "extra"):  # fmt: skip
        assert getattr(stored, field) == getattr(job, field), field


class EnqueueTests:
    """enqueue / enqueue_many / get_job."""

    async def test_ping(self, bananas_backend: Backend) -> None:
        await bananas_backend.queue.ping()

    async def test_close_is_idempotent(
        self, bananas_backend_factory: BackendFactory, bananas_clock: ManualClock
    ) -> None:
        backend = bananas_backend_factory(bananas_clock)
        await backend.queue.ping()
        await backend.close()
        await backend.close()

    async def test_enqueue_then_get_job(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        job = new_job(bananas_clock, "send_email", payload={"to": "a@example.com", "n": [1, 2.5, None, True]},
                      description="welcome", priority=HIGH, routing_key="mail", max_retries=5)  # fmt: skip
        await bananas_backend.queue.enqueue(job)
        stored = await bananas_backend.queue.get_job(job.id)
        _same_job(stored, job)
        assert stored.status is JobStatus.PENDING

    async def test_get_job_unknown_raises_job_not_found(self, bananas_backend: Backend) -> None:
        with pytest.raises(JobNotFound):
            await bananas_backend.queue.get_job("no-such-job")

    async def test_enqueue_duplicate_id_raises_and_keeps_first(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        job = new_job(bananas_clock, payload="first")
        await bananas_backend.queue.enqueue(job)
        with pytest.raises(DuplicateJob):
            await bananas_backend.queue.enqueue(job.evolve(payload="second"))
        assert (await bananas_backend.queue.get_job(job.id)).payload == "first"
        assert (await bananas_backend.queue.depths()).total_ready == 1

    @pytest.mark.parametrize("status", [JobStatus.PROCESSING, JobStatus.COMPLETED, JobStatus.FAILED])
    async def test_enqueue_invalid_status_raises(
        self, bananas_backend: Backend, bananas_clock: ManualClock, status: JobStatus
    ) -> None:
        job = new_job(bananas_clock).evolve(status=status)
        with pytest.raises(InvalidJob):
            await bananas_backend.queue.enqueue(job)
        with pytest.raises(JobNotFound):
            await bananas_backend.queue.get_job(job.id)

    async def test_enqueue_many_in_order(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        jobs = [new_job(bananas_clock) for _ in range(5)]
        await bananas_backend.queue.enqueue_many(jobs)
        assert await drain(bananas_backend) == [j.id for j in jobs]

    async def test_enqueue_many_empty_is_noop(self, bananas_backend: Backend) -> None:
        await bananas_backend.queue.enqueue_many([])
        assert (await bananas_backend.queue.depths()).total_ready == 0

    async def test_enqueue_many_all_or_nothing_on_duplicate(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        existing = new_job(bananas_clock)
        await bananas_backend.queue.enqueue(existing)
        batch = [new_job(bananas_clock), existing.evolve(payload="again"), new_job(bananas_clock)]
        with pytest.raises(DuplicateJob):
            await bananas_backend.queue.enqueue_many(batch)
        for job in (batch[0], batch[2]):
            with pytest.raises(JobNotFound):
                await bananas_backend.queue.get_job(job.id)
        assert (await bananas_backend.queue.depths()).total_ready == 1

    async def test_enqueue_many_duplicate_within_batch(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        job = new_job(bananas_clock)
        with pytest.raises(DuplicateJob):
            await bananas_backend.queue.enqueue_many([job, new_job(bananas_clock), job])
        assert (await bananas_backend.queue.depths()).total_ready == 0

    async def test_enqueue_many_all_or_nothing_on_invalid_status(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        good = new_job(bananas_clock)
        with pytest.raises(InvalidJob):
            await bananas_backend.queue.enqueue_many([good, new_job(bananas_clock).evolve(status=JobStatus.COMPLETED)])
        with pytest.raises(JobNotFound):
            await bananas_backend.queue.get_job(good.id)

    async def test_unknown_fields_survive(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        extra = {"x_trace": {"span": "abc", "ids": [1, 2]}, "x_origin": "go-sdk"}
        done, retried = (new_job(bananas_clock, max_retries=3).evolve(extra=extra) for _ in range(2))
        await bananas_backend.queue.enqueue_many([done, retried])
        claimed = {j.id: j for j in await bananas_backend.queue.claim(["default"], limit=2)}
        assert claimed[done.id].extra == extra
        assert (await bananas_backend.queue.complete(claimed[done.id])).extra == extra
        assert (await bananas_backend.queue.fail(claimed[retried.id], "boom")).extra == extra
        assert (await bananas_backend.queue.get_job(done.id)).extra == extra
        assert (await bananas_backend.queue.get_job(retried.id)).extra == extra


class ClaimTests:
    """Claim order, limits and no double claim."""

    async def test_claim_empty_returns_empty_list(self, bananas_backend: Backend) -> None:
        assert await bananas_backend.queue.claim(["default"]) == []

    async def test_claimed_job_is_processing(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        job = new_job(bananas_clock, payload={"k": "v"})
        await bananas_backend.queue.enqueue(job)
        [claimed] = await bananas_backend.queue.claim(["default"])
        assert claimed.id == job.id and claimed.payload == {"k": "v"}
        assert claimed.status is JobStatus.PROCESSING
        assert (await bananas_backend.queue.get_job(job.id)).status is JobStatus.PROCESSING
        depths = await bananas_backend.queue.depths()
        assert (depths.processing, depths.total_ready) == (1, 0)

    async def test_claim_strict_priority(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        low, normal, high = (
            new_job(bananas_clock, priority=LOW),
            new_job(bananas_clock, priority=NORMAL),
            new_job(bananas_clock, priority=HIGH),
        )
        for job in (low, normal, high):
            await bananas_backend.queue.enqueue(job)
        assert await drain(bananas_backend) == [high.id, normal.id, low.id]

    async def test_claim_fifo_within_priority(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        jobs = [new_job(bananas_clock) for _ in range(6)]
        for job in jobs:
            await bananas_backend.queue.enqueue(job)
        assert await drain(bananas_backend) == [j.id for j in jobs]

    async def test_claim_routing_keys_in_order_given(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        a_low, b_high = (
            new_job(bananas_clock, routing_key="a", priority=LOW),
            new_job(bananas_clock, routing_key="b", priority=HIGH),
        )
        await bananas_backend.queue.enqueue_many([a_low, b_high])
        assert await claim_ids(bananas_backend, ["a", "b"], limit=2) == [a_low.id, b_high.id]
        c_low, d_high = (
            new_job(bananas_clock, routing_key="c", priority=LOW),
            new_job(bananas_clock, routing_key="d", priority=HIGH),
        )
        await bananas_backend.queue.enqueue_many([c_low, d_high])
        assert await claim_ids(bananas_backend, ["d", "c"], limit=1) == [d_high.id]
        assert await claim_ids(bananas_backend, ["d", "c"], limit=1) == [c_low.id]

    async def test_claim_only_given_routing_keys(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        other = new_job(bananas_clock, routing_key="other")
        await bananas_backend.queue.enqueue(other)
        assert await claim_ids(bananas_backend, ["default", "gpu"]) == []
        assert await claim_ids(bananas_backend, ["other"]) == [other.id]

    async def test_claim_repeated_routing_key_counts_once(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        job = new_job(bananas_clock)
        await bananas_backend.queue.enqueue(job)
        assert await claim_ids(bananas_backend, ["default", "default"], limit=3) == [job.id]

    async def test_claim_only_given_priorities(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        high, low = new_job(bananas_clock, priority=HIGH), new_job(bananas_clock, priority=LOW)
        await bananas_backend.queue.enqueue_many([high, low])
        assert await claim_ids(bananas_backend, priorities=[LOW]) == [low.id]
        assert await claim_ids(bananas_backend, priorities=[NORMAL]) == []
        assert await claim_ids(bananas_backend, priorities=[NORMAL, HIGH]) == [high.id]

    async def test_claim_limit(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        jobs = [new_job(bananas_clock, priority=p) for p in (LOW, HIGH, NORMAL, HIGH, LOW)]
        await bananas_backend.queue.enqueue_many(jobs)
        first = await claim_ids(bananas_backend, limit=3)
        assert first == [jobs[1].id, jobs[3].id, jobs[2].id]
        assert await claim_ids(bananas_backend, limit=10) == [jobs[0].id, jobs[4].id]

    async def test_no_double_claim(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        jobs = [new_job(bananas_clock) for _ in range(4)]
        await bananas_backend.queue.enqueue_many(jobs)
        first = await claim_ids(bananas_backend, limit=2)
        second = await claim_ids(bananas_backend, limit=2)
        assert not set(first) & set(second)
        assert sorted(first + second) == sorted(j.id for j in jobs)
        assert await claim_ids(bananas_backend, limit=4) == []

    async def test_no_double_claim_concurrent_claimers(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        jobs = [new_job(bananas_clock, priority=p) for p in (HIGH, NORMAL, LOW) * 10]
        await bananas_backend.queue.enqueue_many(jobs)
        results = await asyncio.gather(*(claim_ids(bananas_backend, limit=2) for _ in range(20)))
        claimed = [job_id for ids in results for job_id in ids]
        assert len(claimed) == len(set(claimed)) == len(jobs)


class LeaseTests:
    """Leases, renewal and reaping of expired leases."""

    async def test_leased_job_not_claimed_again(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        job = new_job(bananas_clock)
        await bananas_backend.queue.enqueue(job)
        assert await claim_ids(bananas_backend, lease=30) == [job.id]
        bananas_clock.advance(29)
        assert await bananas_backend.queue.reap_expired() == 0
        assert await claim_ids(bananas_backend) == []

    async def test_lease_expired_job_is_claimed_again(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        job = new_job(bananas_clock)
        await bananas_backend.queue.enqueue(job)
        assert await claim_ids(bananas_backend, lease=30) == [job.id]
        bananas_clock.advance(31)
        assert await bananas_backend.queue.reap_expired() == 1
        stored = await bananas_backend.queue.get_job(job.id)
        assert (stored.status, stored.attempts, stored.error) == (JobStatus.PENDING, 1, LEASE_EXPIRED_ERROR)
        [again] = await bananas_backend.queue.claim(["default"])
        assert (again.id, again.attempts) == (job.id, 1)

    async def test_reap_expired_is_idempotent(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        await bananas_backend.queue.enqueue_many([new_job(bananas_clock) for _ in range(3)])
        await bananas_backend.queue.claim(["default"], limit=3, lease=10)
        bananas_clock.advance(11)
        counts = await asyncio.gather(*(bananas_backend.queue.reap_expired() for _ in range(4)))
        assert sum(counts) == 3
        assert await bananas_backend.queue.reap_expired() == 0
        assert len(await drain(bananas_backend)) == 3

    async def test_lease_expired_dead_after_max_retries(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        job = new_job(bananas_clock, max_retries=2)
        await bananas_backend.queue.enqueue(job)
        for _ in range(2):
            assert await claim_ids(bananas_backend, lease=5) == [job.id]
            bananas_clock.advance(6)
            assert await bananas_backend.queue.reap_expired() == 1
        stored = await bananas_backend.queue.get_job(job.id)
        assert (stored.status, stored.attempts, stored.error) == (JobStatus.FAILED, 2, LEASE_EXPIRED_ERROR)
        assert await claim_ids(bananas_backend) == []
        depths = await bananas_backend.queue.depths()
        assert (depths.dead, depths.processing, depths.total_ready) == (1, 0, 0)

    async def test_renew_extends_lease(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        job = new_job(bananas_clock)
        await bananas_backend.queue.enqueue(job)
        [claimed] = await bananas_backend.queue.claim(["default"], lease=10)
        other = new_job(bananas_clock)
        for _ in range(3):
            bananas_clock.advance(8)
            assert await bananas_backend.queue.renew([claimed, other], lease=10) == {job.id}
        bananas_clock.advance(8)
        assert await bananas_backend.queue.reap_expired() == 0
        bananas_clock.advance(3)
        assert await bananas_backend.queue.reap_expired() == 1

    async def test_renew_after_reap_reports_lease_lost(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        job = new_job(bananas_clock)
        await bananas_backend.queue.enqueue(job)
        [claimed] = await bananas_backend.queue.claim(["default"], lease=10)
        bananas_clock.advance(11)
        await bananas_backend.queue.reap_expired()
        assert await bananas_backend.queue.renew([claimed]) == set()

    async def test_renew_of_finished_job_reports_lease_lost(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        job = new_job(bananas_clock)
        await bananas_backend.queue.enqueue(job)
        [claimed] = await bananas_backend.queue.claim(["default"])
        await bananas_backend.queue.complete(claimed)
        assert await bananas_backend.queue.renew([claimed]) == set()

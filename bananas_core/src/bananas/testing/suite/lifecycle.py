"""Conformance tests: complete, fail with retries, release, scheduled jobs, depths, dead letters."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from bananas.backend import Backend
from bananas.capabilities import Capability
from bananas.clock import ManualClock
from bananas.job import JobPriority, JobStatus
from bananas.testing.suite._helpers import claim_ids, drain, new_job


class CompleteFailTests:
    """complete, fail (retry schedule, dead letter) and release."""

    async def test_complete(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        job = new_job(bananas_clock)
        await bananas_backend.queue.enqueue(job)
        [claimed] = await bananas_backend.queue.claim(["default"])
        bananas_clock.advance(3)
        done = await bananas_backend.queue.complete(claimed)
        assert (done.id, done.status) == (job.id, JobStatus.COMPLETED)
        stored = await bananas_backend.queue.get_job(job.id)
        assert stored.status is JobStatus.COMPLETED
        assert done == stored  # complete returns the job as stored, every field
        assert stored.updated_at == bananas_clock.now()
        assert await claim_ids(bananas_backend) == []
        depths = await bananas_backend.queue.depths()
        assert (depths.processing, depths.total_ready, depths.scheduled, depths.dead) == (0, 0, 0, 0)

    async def test_fail_schedules_retry_with_backoff(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        job = new_job(bananas_clock, max_retries=3)
        await bananas_backend.queue.enqueue(job)
        [claimed] = await bananas_backend.queue.claim(["default"])
        failed = await bananas_backend.queue.fail(claimed, "boom")
        assert (failed.status, failed.attempts, failed.error) == (JobStatus.PENDING, 1, "boom")
        assert failed.scheduled_for == bananas_clock.now() + timedelta(seconds=2)
        stored = await bananas_backend.queue.get_job(job.id)
        assert (stored.status, stored.attempts, stored.error) == (JobStatus.PENDING, 1, "boom")
        depths = await bananas_backend.queue.depths()
        assert (depths.processing, depths.scheduled, depths.total_ready) == (0, 1, 0)

    async def test_fail_retry_not_claimable_before_backoff(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        job = new_job(bananas_clock, max_retries=5)
        await bananas_backend.queue.enqueue(job)
        for attempt in (1, 2, 3):
            [claimed] = await bananas_backend.queue.claim(["default"])
            await bananas_backend.queue.fail(claimed, f"try {attempt}")
            assert await claim_ids(bananas_backend) == []
            bananas_clock.advance(2**attempt - 0.5)
            assert await bananas_backend.queue.move_scheduled() == 0
            assert await claim_ids(bananas_backend) == []
            bananas_clock.advance(1)
            assert await bananas_backend.queue.move_scheduled() == 1
        [claimed] = await bananas_backend.queue.claim(["default"])
        assert (claimed.id, claimed.attempts, claimed.error) == (job.id, 3, "try 3")

    async def test_fail_dead_after_max_retries(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        job = new_job(bananas_clock, max_retries=3)
        await bananas_backend.queue.enqueue(job)
        for attempt in (1, 2, 3):
            await bananas_backend.queue.move_scheduled()
            [claimed] = await bananas_backend.queue.claim(["default"])
            result = await bananas_backend.queue.fail(claimed, f"error {attempt}")
            bananas_clock.advance(2**attempt + 1)
        assert (result.status, result.attempts, result.error) == (JobStatus.FAILED, 3, "error 3")
        stored = await bananas_backend.queue.get_job(job.id)
        assert (stored.status, stored.attempts, stored.error) == (JobStatus.FAILED, 3, "error 3")
        assert await bananas_backend.queue.move_scheduled() == 0
        assert await claim_ids(bananas_backend) == []
        depths = await bananas_backend.queue.depths()
        assert (depths.dead, depths.scheduled, depths.processing) == (1, 0, 0)

    async def test_fail_with_zero_max_retries_is_dead_at_once(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        job = new_job(bananas_clock, max_retries=0)
        await bananas_backend.queue.enqueue(job)
        [claimed] = await bananas_backend.queue.claim(["default"])
        result = await bananas_backend.queue.fail(claimed, "no retries")
        assert (result.status, result.attempts) == (JobStatus.FAILED, 1)
        assert (await bananas_backend.queue.depths()).dead == 1

    async def test_release_puts_job_next_in_line(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        jobs = [new_job(bananas_clock) for _ in range(3)]
        await bananas_backend.queue.enqueue_many(jobs)
        [first] = await bananas_backend.queue.claim(["default"])
        await bananas_backend.queue.release(first)
        stored = await bananas_backend.queue.get_job(first.id)
        assert (stored.status, stored.attempts) == (JobStatus.PENDING, 0)
        assert await drain(bananas_backend) == [j.id for j in jobs]
        assert await bananas_backend.queue.renew([first]) == set(), "the released copy still renews the new claim"

    async def test_release_frees_the_lease(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        job = new_job(bananas_clock)
        await bananas_backend.queue.enqueue(job)
        [claimed] = await bananas_backend.queue.claim(["default"], lease=5)
        await bananas_backend.queue.release(claimed)
        bananas_clock.advance(6)
        assert await bananas_backend.queue.reap_expired() == 0
        assert (await bananas_backend.queue.get_job(job.id)).attempts == 0


class ScheduledTests:
    """Scheduled jobs: never early, moved exactly once."""

    async def test_scheduled_job_never_early(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        job = new_job(bananas_clock, delay=100)
        await bananas_backend.queue.enqueue(job)
        assert (await bananas_backend.queue.get_job(job.id)).status is JobStatus.SCHEDULED
        assert (await bananas_backend.queue.depths()).scheduled == 1
        assert await bananas_backend.queue.move_scheduled() == 0
        bananas_clock.advance(99)
        assert await bananas_backend.queue.move_scheduled() == 0
        assert await claim_ids(bananas_backend) == []
        bananas_clock.advance(2)
        assert await bananas_backend.queue.move_scheduled() == 1
        assert (await bananas_backend.queue.get_job(job.id)).status is JobStatus.PENDING
        assert await claim_ids(bananas_backend) == [job.id]

    async def test_scheduled_job_keeps_routing_and_priority(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        job = new_job(bananas_clock, delay=5, routing_key="later", priority=JobPriority.HIGH)
        await bananas_backend.queue.enqueue(job)
        bananas_clock.advance(6)
        await bananas_backend.queue.move_scheduled()
        depths = await bananas_backend.queue.depths()
        assert depths.ready_for("later") == 1 and depths.ready.get(("later", JobPriority.HIGH)) == 1
        assert await claim_ids(bananas_backend, ["later"], [JobPriority.HIGH]) == [job.id]

    async def test_move_scheduled_idempotent(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        await bananas_backend.queue.enqueue_many([new_job(bananas_clock, delay=10 + i) for i in range(3)])
        bananas_clock.advance(20)
        assert await bananas_backend.queue.move_scheduled() == 3
        assert await bananas_backend.queue.move_scheduled() == 0
        assert (await bananas_backend.queue.depths()).total_ready == 3

    async def test_move_scheduled_concurrent(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        jobs = [new_job(bananas_clock, delay=5) for _ in range(10)]
        await bananas_backend.queue.enqueue_many(jobs)
        bananas_clock.advance(6)
        counts = await asyncio.gather(*(bananas_backend.queue.move_scheduled() for _ in range(5)))
        assert sum(counts) == 10
        assert sorted(await drain(bananas_backend)) == sorted(j.id for j in jobs)

    async def test_depths(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        await bananas_backend.queue.enqueue_many(
            [new_job(bananas_clock, priority=JobPriority.HIGH), new_job(bananas_clock, priority=JobPriority.HIGH),
             new_job(bananas_clock, routing_key="gpu", priority=JobPriority.LOW), new_job(bananas_clock),
             new_job(bananas_clock, delay=30)]
        )  # fmt: skip
        depths = await bananas_backend.queue.depths()
        assert {k: v for k, v in depths.ready.items() if v} == {
            ("default", JobPriority.HIGH): 2, ("default", JobPriority.NORMAL): 1, ("gpu", JobPriority.LOW): 1,
        }  # fmt: skip
        assert (depths.total_ready, depths.ready_for("gpu"), depths.scheduled) == (4, 1, 1)
        await bananas_backend.queue.claim(["default"], limit=2)
        depths = await bananas_backend.queue.depths()
        assert (depths.processing, depths.total_ready, depths.dead) == (2, 2, 0)


class DeadLetterTests:
    """Dead letter administration (capability ``dead_letter_admin``)."""

    async def _kill(self, backend: Backend, clock: ManualClock, count: int) -> list[str]:
        ids = []
        for i in range(count):
            job = new_job(clock, max_retries=1)
            await backend.queue.enqueue(job)
            [claimed] = await backend.queue.claim(["default"])
            await backend.queue.fail(claimed, f"fatal {i}")
            clock.advance(1)
            ids.append(job.id)
        return ids

    @pytest.mark.bananas_capability(Capability.DEAD_LETTER_ADMIN)
    async def test_dead_letters_most_recent_first(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        ids = await self._kill(bananas_backend, bananas_clock, 4)
        dead = await bananas_backend.queue.dead_letters()
        assert [j.id for j in dead] == ids[::-1]
        assert all(j.status is JobStatus.FAILED for j in dead) and dead[0].error == "fatal 3"
        assert [j.id for j in await bananas_backend.queue.dead_letters(limit=2, offset=1)] == [ids[2], ids[1]]

    @pytest.mark.bananas_capability(Capability.DEAD_LETTER_ADMIN)
    async def test_requeue_dead(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        ids = await self._kill(bananas_backend, bananas_clock, 3)
        assert await bananas_backend.queue.requeue_dead([ids[1], "unknown"]) == 1
        [again] = await bananas_backend.queue.claim(["default"])
        assert (again.id, again.attempts, again.error) == (ids[1], 0, "")
        assert await bananas_backend.queue.requeue_dead() == 2
        assert sorted(await drain(bananas_backend)) == sorted([ids[0], ids[2]])
        assert (await bananas_backend.queue.depths()).dead == 0

    @pytest.mark.bananas_capability(Capability.DEAD_LETTER_ADMIN)
    async def test_purge_dead(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        ids = await self._kill(bananas_backend, bananas_clock, 3)
        assert await bananas_backend.queue.purge_dead([ids[0]]) == 1
        assert [j.id for j in await bananas_backend.queue.dead_letters()] == [ids[2], ids[1]]
        assert await bananas_backend.queue.purge_dead() == 2
        assert await bananas_backend.queue.dead_letters() == []
        assert (await bananas_backend.queue.depths()).dead == 0

"""Conformance tests: ``fail`` stores the caller's decision (a retry time, or dead) and the
lease reaper applies the core's rule (:mod:`bananas.policy`); a backend decides nothing."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from bananas import policy
from bananas.backend import Backend
from bananas.capabilities import Capability
from bananas.clock import ManualClock
from bananas.errors import InvalidJob, LeaseLost
from bananas.job import Job, JobStatus
from bananas.testing.suite._helpers import claim_ids, new_job

LEASE = 10.0


async def _claimed(backend: Backend, job: Job) -> Job:
    await backend.queue.enqueue(job)
    claimed = await backend.queue.claim(["default"], lease=LEASE)
    assert [j.id for j in claimed] == [job.id]
    return claimed[0]


def _state(job: Job) -> tuple[JobStatus, int, str, datetime | None]:
    return job.status, job.attempts, job.error, job.scheduled_for


class RetryDecisionTests:
    """``fail(job, error, retry_at=...)`` stores what the caller decided, whatever the retries left."""

    async def test_fail_retry_at_retries_even_without_retries_left(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        """Under the default rule this attempt would be the last (max_retries=1); told a time, it is retried."""
        job = new_job(bananas_clock, max_retries=1)
        claimed = await _claimed(bananas_backend, job)
        retry_at = bananas_clock.now() + timedelta(seconds=7)
        failed = await bananas_backend.queue.fail(claimed, "boom", retry_at=retry_at)
        assert _state(failed) == (JobStatus.PENDING, 1, "boom", retry_at)
        assert _state(await bananas_backend.queue.get_job(job.id)) == (JobStatus.PENDING, 1, "boom", retry_at)
        depths = await bananas_backend.queue.depths()
        assert (depths.scheduled, depths.dead, depths.processing, depths.total_ready) == (1, 0, 0, 0)
        bananas_clock.advance(6.5)
        assert await bananas_backend.queue.move_scheduled() == 0
        assert await claim_ids(bananas_backend) == []
        bananas_clock.advance(1)
        assert await bananas_backend.queue.move_scheduled() == 1
        [again] = await bananas_backend.queue.claim(["default"])
        assert (again.id, again.attempts, again.error) == (job.id, 1, "boom")

    async def test_fail_retry_at_is_the_time_given_not_the_backoff(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        job = new_job(bananas_clock, max_retries=5)
        claimed = await _claimed(bananas_backend, job)
        retry_at = bananas_clock.now() + timedelta(seconds=100.25)
        failed = await bananas_backend.queue.fail(claimed, "later", retry_at=retry_at)
        assert failed.scheduled_for == retry_at
        bananas_clock.advance(100)  # well past the default backoff (2 s), short of the time given
        assert await bananas_backend.queue.move_scheduled() == 0
        assert await claim_ids(bananas_backend) == []
        bananas_clock.advance(0.5)
        assert await bananas_backend.queue.move_scheduled() == 1
        assert await claim_ids(bananas_backend) == [job.id]

    async def test_fail_retry_at_in_the_past_is_due_at_once(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        job = new_job(bananas_clock, max_retries=3)
        claimed = await _claimed(bananas_backend, job)
        retry_at = bananas_clock.now() - timedelta(seconds=30)
        failed = await bananas_backend.queue.fail(claimed, "again", retry_at=retry_at)
        assert _state(failed) == (JobStatus.PENDING, 1, "again", retry_at)
        assert await bananas_backend.queue.move_scheduled() == 1
        assert await claim_ids(bananas_backend) == [job.id]

    async def test_fail_none_is_dead_with_retries_left(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        job = new_job(bananas_clock, max_retries=5)
        claimed = await _claimed(bananas_backend, job)
        failed = await bananas_backend.queue.fail(claimed, "fatal", retry_at=None)
        assert _state(failed) == (JobStatus.FAILED, 1, "fatal", None)
        assert _state(await bananas_backend.queue.get_job(job.id)) == (JobStatus.FAILED, 1, "fatal", None)
        depths = await bananas_backend.queue.depths()
        assert (depths.dead, depths.scheduled, depths.processing, depths.total_ready) == (1, 0, 0, 0)
        bananas_clock.advance(3600)
        assert await bananas_backend.queue.move_scheduled() == 0
        assert await bananas_backend.queue.reap_expired() == 0
        assert await claim_ids(bananas_backend) == []

    @pytest.mark.bananas_capability(Capability.DEAD_LETTER_ADMIN)
    async def test_fail_none_lands_in_the_dead_letters(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        job = new_job(bananas_clock, max_retries=5)
        await bananas_backend.queue.fail(await _claimed(bananas_backend, job), "fatal", retry_at=None)
        assert [(j.id, j.status, j.error) for j in await bananas_backend.queue.dead_letters()] == [
            (job.id, JobStatus.FAILED, "fatal")
        ]

    async def test_attempts_and_error_recorded_on_every_decision(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        job = new_job(bananas_clock, max_retries=2)
        await bananas_backend.queue.enqueue(job)
        for attempt in (1, 2, 3, 4):  # past max_retries: the caller keeps deciding to retry
            [claimed] = await bananas_backend.queue.claim(["default"])
            assert claimed.attempts == attempt - 1
            retry_at = bananas_clock.now() + timedelta(seconds=attempt)
            failed = await bananas_backend.queue.fail(claimed, f"try {attempt}", retry_at=retry_at)
            assert _state(failed) == (JobStatus.PENDING, attempt, f"try {attempt}", retry_at)
            bananas_clock.advance(attempt + 0.5)
            assert await bananas_backend.queue.move_scheduled() == 1
        [claimed] = await bananas_backend.queue.claim(["default"])
        dead = await bananas_backend.queue.fail(claimed, "enough", retry_at=None)
        assert _state(dead) == (JobStatus.FAILED, 5, "enough", None)
        assert _state(await bananas_backend.queue.get_job(job.id)) == (JobStatus.FAILED, 5, "enough", None)

    async def test_by_policy_is_the_core_rule(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        job = new_job(bananas_clock, max_retries=2)
        claimed = await _claimed(bananas_backend, job)
        expected = policy.next_retry(claimed, bananas_clock())
        assert expected is not None
        failed = await bananas_backend.queue.fail(claimed, "boom", retry_at=policy.BY_POLICY)
        assert _state(failed) == (JobStatus.PENDING, 1, "boom", expected)
        bananas_clock.advance(2.5)
        assert await bananas_backend.queue.move_scheduled() == 1
        [claimed] = await bananas_backend.queue.claim(["default"])
        assert policy.next_retry(claimed, bananas_clock()) is None
        assert _state(await bananas_backend.queue.fail(claimed, "boom")) == (JobStatus.FAILED, 2, "boom", None)

    async def test_a_bad_retry_at_is_refused_and_changes_nothing(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        job = new_job(bananas_clock, max_retries=3)
        claimed = await _claimed(bananas_backend, job)
        naive = datetime(2030, 1, 1)  # deliberately without a time zone
        with pytest.raises(InvalidJob):
            await bananas_backend.queue.fail(claimed, "boom", retry_at=naive)
        stored = await bananas_backend.queue.get_job(job.id)
        assert (stored.status, stored.attempts, stored.error) == (JobStatus.PROCESSING, 0, "")
        assert await bananas_backend.queue.renew([claimed]) == {job.id}, (
            "a refused fail must leave the claim holding the job"
        )
        assert (await bananas_backend.queue.complete(claimed)).status is JobStatus.COMPLETED

    async def test_a_stale_copy_cannot_store_a_decision(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        """Worker A's lease was reaped and B holds the job: A's retry time or dead letter changes nothing."""
        job = new_job(bananas_clock, max_retries=3)
        first = await _claimed(bananas_backend, job)
        bananas_clock.advance(LEASE + 1)
        assert await bananas_backend.queue.reap_expired() == 1
        [second] = await bananas_backend.queue.claim(["default"], lease=LEASE)
        before = await bananas_backend.queue.get_job(job.id)
        for retry_at in (None, bananas_clock.now() + timedelta(seconds=5)):
            with pytest.raises(LeaseLost):
                await bananas_backend.queue.fail(first, "late", retry_at=retry_at)
            after = await bananas_backend.queue.get_job(job.id)
            assert (_state(after), after.updated_at) == (_state(before), before.updated_at)
        depths = await bananas_backend.queue.depths()
        assert (depths.dead, depths.scheduled, depths.processing) == (0, 0, 1)
        failed = await bananas_backend.queue.fail(second, "current", retry_at=None)
        assert _state(failed) == (JobStatus.FAILED, 2, "current", None)


class ReaperRuleTests:
    """``reap_expired`` stores what :func:`bananas.policy.lease_expired` gives, for every job it takes back."""

    @pytest.mark.parametrize("max_retries", [0, 1, 2, 3])
    async def test_reaped_record_is_the_core_rule(
        self, bananas_backend: Backend, bananas_clock: ManualClock, max_retries: int
    ) -> None:
        job = new_job(bananas_clock, max_retries=max_retries)
        claimed = await _claimed(bananas_backend, job)
        bananas_clock.advance(LEASE + 1)
        expected = policy.lease_expired(claimed, bananas_clock())
        assert await bananas_backend.queue.reap_expired() == 1
        stored = await bananas_backend.queue.get_job(job.id)
        assert _state(stored) == _state(expected)
        ready = expected.status is JobStatus.PENDING
        assert await claim_ids(bananas_backend) == ([job.id] if ready else [])
        assert (await bananas_backend.queue.depths()).dead == (0 if ready else 1)

    @pytest.mark.parametrize("max_retries", [0, 1, 2])
    async def test_reaped_to_dead_has_a_failed_result(
        self, bananas_backend: Backend, bananas_clock: ManualClock, max_retries: int
    ) -> None:
        """A job the reaper sends to the dead letter queue is final: its failed result is
        stored (what :func:`bananas.policy.reaped_result` gives), so a waiter gets an answer;
        one that will run again has none."""
        job = new_job(bananas_clock, max_retries=max_retries)
        claimed = await _claimed(bananas_backend, job)
        bananas_clock.advance(LEASE + 1)
        expected = policy.reaped_result(policy.lease_expired(claimed, bananas_clock()), bananas_clock())
        assert await bananas_backend.queue.reap_expired() == 1
        stored = await bananas_backend.results.get(job.id)
        if expected is None:
            assert stored is None, "a job the reaper made ready again must have no result yet"
        else:
            assert stored is not None, "the reaper sent the job to the dead letter queue but stored no result"
            assert (stored.status, stored.error) == (JobStatus.FAILED, policy.LEASE_EXPIRED_ERROR)

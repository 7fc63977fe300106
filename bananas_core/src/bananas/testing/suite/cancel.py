"""Conformance tests of cancellation: :class:`~bananas.protocols.Cancellation`, under the
``cancel`` capability marker.

A job not started is cancelled at once and no claim ever takes it; a running one is marked
cancel-requested until its worker settles it cancelled (fenced by its claim; a repeated settle
of a job already cancelled returns it as stored); a finished job is left alone; an unknown id
raises :class:`~bananas.errors.JobNotFound`.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from bananas.backend import Backend
from bananas.cancel import CANCELLED_WHILE_RUNNING, CancelOutcome
from bananas.capabilities import Capability
from bananas.clock import ManualClock
from bananas.errors import JobNotFound, LeaseLost
from bananas.job import JobStatus
from bananas.protocols import Cancellation
from bananas.testing.suite._helpers import claim_ids, drain, new_job

__all__ = ["CancelTests"]

CANCEL = pytest.mark.bananas_capability(Capability.CANCEL)


def cancel_queue(backend: Backend) -> Cancellation:
    """The backend's queue as a :class:`Cancellation` (asserting that it is one)."""
    queue = backend.queue
    assert isinstance(queue, Cancellation), "the backend declares cancel, but its queue is not a Cancellation"
    return queue


class CancelTests:
    """cancel, cancel_requested and settle_cancelled."""

    async def test_cancel_declared_means_offered(self, bananas_backend: Backend) -> None:
        if bananas_backend.supports(Capability.CANCEL):
            cancel_queue(bananas_backend)

    @CANCEL
    async def test_cancel_a_pending_job_never_runs(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        keep, gone = new_job(bananas_clock), new_job(bananas_clock)
        await bananas_backend.queue.enqueue_many([gone, keep])
        assert await cancel_queue(bananas_backend).cancel(gone.id) is CancelOutcome.CANCELLED
        stored = await bananas_backend.queue.get_job(gone.id)
        assert stored.status is JobStatus.CANCELLED, f"a cancelled pending job is {stored.status.value}"
        assert await drain(bananas_backend) == [keep.id], "a cancelled job was claimed"
        depths = await bananas_backend.queue.depths()
        assert (depths.total_ready, depths.scheduled, depths.dead) == (0, 0, 0)

    @CANCEL
    async def test_cancel_a_scheduled_or_retrying_job_never_runs(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        queue = bananas_backend.queue
        later, retrying = new_job(bananas_clock, delay=30), new_job(bananas_clock, max_retries=3)
        await queue.enqueue_many([later, retrying])
        [claimed] = await queue.claim(["default"], lease=10)
        await queue.fail(claimed, "boom", retry_at=bananas_clock.now() + timedelta(seconds=5))
        for job in (later, retrying):
            assert await cancel_queue(bananas_backend).cancel(job.id) is CancelOutcome.CANCELLED
            assert (await queue.get_job(job.id)).status is JobStatus.CANCELLED
        bananas_clock.advance(60)
        assert await queue.move_scheduled() == 0, "a cancelled job was made ready when its time came"
        assert await claim_ids(bananas_backend, limit=10) == []
        assert (await queue.depths()).scheduled == 0

    @CANCEL
    async def test_cancel_a_running_job_is_requested_then_settled(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        queue, cancel = bananas_backend.queue, cancel_queue(bananas_backend)
        job, other = new_job(bananas_clock, max_retries=3), new_job(bananas_clock)
        await queue.enqueue_many([job, other])
        claimed = await queue.claim(["default"], limit=2, lease=10)
        assert await cancel.cancel(job.id) is CancelOutcome.REQUESTED
        assert (await queue.get_job(job.id)).status is JobStatus.PROCESSING, "a running job was moved by cancel"
        assert await cancel.cancel_requested(claimed) == {job.id}
        mine = next(c for c in claimed if c.id == job.id)
        stored = await cancel.settle_cancelled(mine, CANCELLED_WHILE_RUNNING)
        assert stored.status is JobStatus.CANCELLED
        assert (await queue.get_job(job.id)).status is JobStatus.CANCELLED
        assert await cancel.cancel_requested([mine]) == set()
        bananas_clock.advance(60)
        assert await queue.reap_expired() == 1, "only the other job's lease ran out"
        assert await claim_ids(bananas_backend, limit=10) == [other.id], "a cancelled running job ran again"

    @CANCEL
    async def test_cancel_settle_is_fenced_by_the_claim(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        queue, cancel = bananas_backend.queue, cancel_queue(bananas_backend)
        job = new_job(bananas_clock, max_retries=3)
        await queue.enqueue(job)
        [first] = await queue.claim(["default"], lease=10)
        bananas_clock.advance(11)
        assert await queue.reap_expired() == 1
        [second] = await queue.claim(["default"], lease=10)
        with pytest.raises(LeaseLost):
            await cancel.settle_cancelled(first, CANCELLED_WHILE_RUNNING)
        assert (await queue.get_job(job.id)).status is JobStatus.PROCESSING, "a stale settle cancelled the job"
        await queue.complete(second)

    @CANCEL
    async def test_a_repeated_cancelled_settle_answers_like_the_first(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        """The contract: a settle of a job already stored cancelled returns it as stored (a retry
        after a lost reply, or a second settle, must not fail); nothing else changes."""
        queue, cancel = bananas_backend.queue, cancel_queue(bananas_backend)
        job = new_job(bananas_clock, max_retries=3)
        await queue.enqueue(job)
        [mine] = await queue.claim(["default"], lease=10)
        assert await cancel.cancel(job.id) is CancelOutcome.REQUESTED
        first = await cancel.settle_cancelled(mine, CANCELLED_WHILE_RUNNING)
        bananas_clock.advance(1)
        again = await cancel.settle_cancelled(mine, CANCELLED_WHILE_RUNNING)
        assert (again.id, again.status, again.error) == (first.id, JobStatus.CANCELLED, CANCELLED_WHILE_RUNNING)
        stored = await queue.get_job(job.id)
        assert (stored.status, stored.attempts) == (JobStatus.CANCELLED, first.attempts)
        assert await claim_ids(bananas_backend, limit=10) == []

    @CANCEL
    async def test_cancel_a_finished_job_changes_nothing(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        queue, cancel = bananas_backend.queue, cancel_queue(bananas_backend)
        done, dead = new_job(bananas_clock), new_job(bananas_clock, max_retries=0)
        await queue.enqueue_many([done, dead])
        claimed = {c.id: c for c in await queue.claim(["default"], limit=2, lease=10)}
        await queue.complete(claimed[done.id])
        await queue.fail(claimed[dead.id], "boom", retry_at=None)
        for job, status in ((done, JobStatus.COMPLETED), (dead, JobStatus.FAILED)):
            assert await cancel.cancel(job.id) is CancelOutcome.ALREADY_FINISHED
            assert (await queue.get_job(job.id)).status is status, "cancel changed a finished job"
        assert (await queue.depths()).dead == 1
        again = new_job(bananas_clock)
        await queue.enqueue(again)
        assert await cancel.cancel(again.id) is CancelOutcome.CANCELLED
        assert await cancel.cancel(again.id) is CancelOutcome.ALREADY_FINISHED, "a job was cancelled twice"

    @CANCEL
    async def test_cancel_an_unknown_job_raises_job_not_found(self, bananas_backend: Backend) -> None:
        with pytest.raises(JobNotFound):
            await cancel_queue(bananas_backend).cancel("no-such-job")

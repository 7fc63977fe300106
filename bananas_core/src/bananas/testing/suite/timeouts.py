"""Conformance tests of per-job timeouts: a job's own ``timeout`` field travels with it through
every move a backend makes (claim, retry, reap, requeue), so the worker that runs it can use it.
Not a capability: every backend keeps the job JSON's fields."""

from __future__ import annotations

from datetime import timedelta

from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.testing.suite._helpers import new_job
from bananas.timeouts import job_timeout, with_timeout

__all__ = ["JobTimeoutTests"]


class JobTimeoutTests:
    """The job's own timeout survives storage, claims, retries and reaps."""

    async def test_job_timeout_travels_with_the_job(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        queue = bananas_backend.queue
        job = with_timeout(new_job(bananas_clock, max_retries=5), 12.5)
        await queue.enqueue(job)
        assert job_timeout(await queue.get_job(job.id)) == 12.5, "the stored job lost its timeout"
        [claimed] = await queue.claim(["default"], lease=10)
        assert job_timeout(claimed) == 12.5, "the claimed job lost its timeout"
        await queue.fail(claimed, "boom", retry_at=bananas_clock.now() + timedelta(seconds=1))
        bananas_clock.advance(2)
        await queue.move_scheduled()
        [again] = await queue.claim(["default"], lease=10)
        assert job_timeout(again) == 12.5, "the retried job lost its timeout"
        bananas_clock.advance(11)
        assert await queue.reap_expired() == 1
        [reaped] = await queue.claim(["default"], lease=10)
        assert job_timeout(reaped) == 12.5, "the reaped job lost its timeout"

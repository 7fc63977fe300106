"""Conformance tests of :class:`~bananas.protocols.Checkpoints` (capability ``checkpoints``):
a claimed job's progress survives a lost lease, a stale claim cannot overwrite it, and the
state comes back exactly as saved."""

from __future__ import annotations

import pytest

from bananas.backend import Backend
from bananas.capabilities import Capability
from bananas.clock import ManualClock
from bananas.errors import LeaseLost
from bananas.protocols import Checkpoints
from bananas.testing.suite._helpers import new_job

CHECKPOINTS = pytest.mark.bananas_capability(Capability.CHECKPOINTS)


def _checkpoints(backend: Backend) -> Checkpoints:
    queue = backend.queue
    assert isinstance(queue, Checkpoints), "the backend declares checkpoints, but its queue is not a Checkpoints"
    return queue


class CheckpointTests:
    """save_checkpoint / load_checkpoint."""

    @CHECKPOINTS
    async def test_a_checkpoint_survives_a_lost_lease(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        queue = _checkpoints(bananas_backend)
        job = new_job(bananas_clock, max_retries=3)
        await bananas_backend.queue.enqueue(job)
        [first] = await bananas_backend.queue.claim(["default"], lease=10)
        assert await queue.load_checkpoint(job.id) is None
        await queue.save_checkpoint(first, '{"done":10}')
        await queue.save_checkpoint(first, '{"done":20}')
        bananas_clock.advance(11)
        assert await bananas_backend.queue.reap_expired() == 1
        [again] = await bananas_backend.queue.claim(["default"], lease=10)
        assert again.attempts == 1
        assert await queue.load_checkpoint(job.id) == '{"done":20}'
        await queue.save_checkpoint(again, '{"done":30}')
        assert await queue.load_checkpoint(job.id) == '{"done":30}'

    @CHECKPOINTS
    async def test_a_stale_claim_cannot_save(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        queue = _checkpoints(bananas_backend)
        job = new_job(bananas_clock, max_retries=3)
        await bananas_backend.queue.enqueue(job)
        [first] = await bananas_backend.queue.claim(["default"], lease=10)
        await queue.save_checkpoint(first, '{"done":1}')
        bananas_clock.advance(11)
        await bananas_backend.queue.reap_expired()
        [again] = await bananas_backend.queue.claim(["default"], lease=10)
        await queue.save_checkpoint(again, '{"done":2}')
        with pytest.raises(LeaseLost):
            await queue.save_checkpoint(first, '{"done":99}')
        assert await queue.load_checkpoint(job.id) == '{"done":2}'

    @CHECKPOINTS
    async def test_the_state_comes_back_as_saved(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        queue = _checkpoints(bananas_backend)
        job = new_job(bananas_clock)
        await bananas_backend.queue.enqueue(job)
        [claimed] = await bananas_backend.queue.claim(["default"])
        text = '{"cursor":"k\\u00e9y \\ud83c\\udf4c","n":12345678901234567890,"x":0.1,"deep":[[[{"a":null}]]]}'
        await queue.save_checkpoint(claimed, text)
        assert await queue.load_checkpoint(job.id) == text

    async def test_declared_checkpoints_are_offered(self, bananas_backend: Backend) -> None:
        if bananas_backend.supports(Capability.CHECKPOINTS):
            assert isinstance(bananas_backend.queue, Checkpoints), "declares checkpoints but its queue is not one"

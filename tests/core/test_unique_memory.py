"""memory:// forgets unique keys no job holds any more, as submits go."""

from __future__ import annotations

import uuid

import pytest
from bananas import connect
from bananas.clock import ManualClock
from bananas.job import Job
from bananas.protocols import UniqueEnqueue
from bananas.unique import UniqueKey

pytestmark = pytest.mark.anyio


async def test_keys_no_job_holds_are_forgotten() -> None:
    clock = ManualClock()
    async with connect("memory://unique-sweep-" + uuid.uuid4().hex, clock=clock) as backend:
        queue = backend.queue
        assert isinstance(queue, UniqueEnqueue)

        async def submit(key: str) -> str:
            [answer] = await queue.enqueue_unique([(Job.create("t", now=clock.now()), UniqueKey(key))])
            return answer

        for key in ("a", "b"):
            await submit(key)
            [claimed] = await queue.claim(["default"])
            await queue.complete(claimed)
        held = await submit("c")
        await submit("d")
        assert sorted(queue._store.unique) == ["c", "d"]  # type: ignore[attr-defined]
        assert await submit("c") == held

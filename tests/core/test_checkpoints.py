"""Checkpoints on memory:// through the real executor: a handler resumes from the state it
saved, from async and sync code, and a backend without the capability says so."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from bananas import Capability, CapabilityNotSupported, Job, JobContext, JobStatus, ManualClock, Registry, connect
from bananas.backend import BackendOptions
from bananas.backends.memory import CAPABILITIES, memory_backend, store_for
from bananas.worker import Executor

pytestmark = pytest.mark.anyio


def counting(processed: list[int], *, crash_at: int, sync: bool = False) -> Registry:
    """A handler counting to 100 in steps of one, saving every 10, failing once at ``crash_at``."""
    registry = Registry()

    if sync:

        @registry.handler("count")
        def count_sync(ctx: JobContext, job: Job) -> Any:
            start = ctx.checkpoint_state or 0
            for i in range(start, 100):
                if i == crash_at and job.attempts == 0:
                    raise RuntimeError("crashed")
                processed.append(i)
                if (i + 1) % 10 == 0:
                    ctx.checkpoint(i + 1)
            return len(processed)

    else:

        @registry.handler("count")
        async def count(ctx: JobContext, job: Job) -> Any:
            start = ctx.checkpoint_state or 0
            for i in range(start, 100):
                if i == crash_at and job.attempts == 0:
                    raise RuntimeError("crashed")
                processed.append(i)
                if (i + 1) % 10 == 0:
                    await ctx.checkpoint(i + 1)
            return len(processed)

    return registry


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_a_retried_handler_resumes_from_its_last_checkpoint(sync: bool) -> None:
    clock = ManualClock()
    processed: list[int] = []
    async with connect(f"memory://cp-{uuid.uuid4().hex}", clock=clock) as backend:
        executor = Executor(counting(processed, crash_at=35, sync=sync), backend.queue, clock=clock)
        await backend.queue.enqueue(Job.create("count", max_retries=3, now=clock.now()))
        [job] = await backend.queue.claim(["default"])
        failed = await executor.execute_job(job)
        assert failed is not None and failed.status is JobStatus.PENDING
        clock.advance(60)
        await backend.queue.move_scheduled()
        [again] = await backend.queue.claim(["default"])
        done = await executor.execute_job(again)
    assert done is not None and done.status is JobStatus.COMPLETED
    assert processed == list(range(35)) + list(range(30, 100)), "it did not resume from its checkpoint (30)"


async def test_without_the_capability_checkpoint_fails_the_attempt_naming_it() -> None:
    clock = ManualClock()
    caps = CAPABILITIES - {Capability.CHECKPOINTS}
    backend = memory_backend(store_for(f"cp-{uuid.uuid4().hex}", ""), BackendOptions(clock=clock), capabilities=caps)
    registry = Registry()

    @registry.handler("save")
    async def save(ctx: JobContext, job: Job) -> Any:
        with pytest.raises(CapabilityNotSupported, match="'checkpoints' capability"):
            await ctx.checkpoint({"n": 1})
        return "refused"

    async with backend:
        await backend.queue.enqueue(Job.create("save", now=clock.now()))
        [job] = await backend.queue.claim(["default"])
        done = await Executor(registry, backend.queue, clock=clock).execute_job(job)
    assert done is not None and done.status is JobStatus.COMPLETED

"""Conformance tests: cron storage, worker registry, wake-ups, and optional capabilities."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from bananas.backend import Backend
from bananas.capabilities import Capability
from bananas.clock import ManualClock
from bananas.errors import CapabilityNotSupported, DuplicateJob, InvalidJob, JobNotFound
from bananas.job import Job, JobPriority, JobStatus
from bananas.protocols import BlockingEnqueue, WorkerInfo
from bananas.testing.suite._helpers import claim_ids, drain, new_job

TICK = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


class CronTests:
    """Scheduler storage: each tick fires once; schedule state."""

    @pytest.mark.bananas_capability(Capability.CRON)
    async def test_cron_fire_once_per_tick(self, backend: Backend, clock: ManualClock) -> None:
        first, second = new_job(clock, "report"), new_job(clock, "report")
        assert await backend.scheduler.fire("nightly", TICK, first, TICK + MINUTE) is True
        assert await backend.scheduler.fire("nightly", TICK, second, TICK + MINUTE) is False
        assert (await backend.queue.get_job(first.id)).name == "report"
        with pytest.raises(JobNotFound):
            await backend.queue.get_job(second.id)
        state = await backend.scheduler.state("nightly")
        assert state is not None
        assert (state.last_run, state.next_run, state.run_count) == (TICK, TICK + MINUTE, 1)
        assert await claim_ids(backend) == [first.id]

    @pytest.mark.bananas_capability(Capability.CRON)
    async def test_cron_later_tick_fires_earlier_does_not(self, backend: Backend, clock: ManualClock) -> None:
        assert await backend.scheduler.fire("s", TICK, new_job(clock), TICK + MINUTE)
        assert await backend.scheduler.fire("s", TICK + MINUTE, new_job(clock), TICK + 2 * MINUTE)
        assert not await backend.scheduler.fire("s", TICK, new_job(clock), TICK + MINUTE)
        state = await backend.scheduler.state("s")
        assert state is not None and (state.last_run, state.run_count) == (TICK + MINUTE, 2)
        assert (await backend.queue.depths()).total_ready == 2

    @pytest.mark.bananas_capability(Capability.CRON)
    async def test_cron_concurrent_fire_one_wins(self, backend: Backend, clock: ManualClock) -> None:
        jobs = [new_job(clock) for _ in range(4)]
        won = await asyncio.gather(*(backend.scheduler.fire("race", TICK, j, TICK + MINUTE) for j in jobs))
        assert won.count(True) == 1
        assert await drain(backend) == [jobs[won.index(True)].id]
        state = await backend.scheduler.state("race")
        assert state is not None and state.run_count == 1

    @pytest.mark.bananas_capability(Capability.CRON)
    async def test_cron_schedules_are_independent(self, backend: Backend, clock: ManualClock) -> None:
        assert await backend.scheduler.fire("a", TICK, new_job(clock), TICK + MINUTE)
        assert await backend.scheduler.fire("b", TICK, new_job(clock), TICK + MINUTE)
        assert [s.schedule_id for s in await backend.scheduler.states()] == ["a", "b"]

    @pytest.mark.bananas_capability(Capability.CRON)
    async def test_cron_record_and_state(self, backend: Backend, clock: ManualClock) -> None:
        assert await backend.scheduler.state("unknown") is None
        await backend.scheduler.record("z", next_run=TICK)
        await backend.scheduler.fire("m", TICK, new_job(clock), TICK + MINUTE)
        await backend.scheduler.record("m", last_success=TICK + timedelta(seconds=3), last_error="boom")
        state = await backend.scheduler.state("m")
        assert state is not None
        assert (state.last_run, state.next_run, state.run_count) == (TICK, TICK + MINUTE, 1)
        assert (state.last_success, state.last_error) == (TICK + timedelta(seconds=3), "boom")
        await backend.scheduler.record("m", next_run=TICK + 5 * MINUTE)
        state = await backend.scheduler.state("m")
        assert state is not None and (state.next_run, state.last_error) == (TICK + 5 * MINUTE, "boom")
        await backend.scheduler.record("m", last_error="")
        state = await backend.scheduler.state("m")
        assert state is not None and state.last_error == ""
        assert [s.schedule_id for s in await backend.scheduler.states()] == ["m", "z"]
        z = await backend.scheduler.state("z")
        assert z is not None and (z.next_run, z.last_run, z.run_count) == (TICK, None, 0)


def _worker(worker_id: str, **fields: object) -> WorkerInfo:
    values: dict[str, object] = {"host": "box-1", "pid": 4242, "routing_keys": ["default", "gpu"],
                                 "priorities": [JobPriority.HIGH, JobPriority.LOW], "concurrency": 8}  # fmt: skip
    values.update(fields)
    return WorkerInfo(id=worker_id, **values)  # type: ignore[arg-type]


def _identity(info: WorkerInfo) -> tuple[object, ...]:
    return (info.id, info.host, info.pid, info.routing_keys, info.priorities, info.concurrency, info.in_flight,
            info.mode)  # fmt: skip


class WorkerRegistryTests:
    """heartbeat / workers / deregister / expiry."""

    async def test_worker_heartbeat_listed(self, backend: Backend) -> None:
        b, a = _worker("w-b", in_flight=3, mode="high-priority"), _worker("w-a")
        await backend.workers.heartbeat(b, ttl=30)
        await backend.workers.heartbeat(a, ttl=30)
        assert [_identity(w) for w in await backend.workers.workers()] == [_identity(a), _identity(b)]

    async def test_worker_expires_after_ttl(self, backend: Backend, clock: ManualClock) -> None:
        await backend.workers.heartbeat(_worker("w-1"), ttl=10)
        clock.advance(9)
        assert [w.id for w in await backend.workers.workers()] == ["w-1"]
        await backend.workers.heartbeat(_worker("w-1", in_flight=1), ttl=10)
        clock.advance(9)
        [renewed] = await backend.workers.workers()
        assert renewed.in_flight == 1
        clock.advance(2)
        assert await backend.workers.workers() == []

    async def test_worker_deregister(self, backend: Backend) -> None:
        await backend.workers.heartbeat(_worker("w-1"), ttl=30)
        await backend.workers.heartbeat(_worker("w-2"), ttl=30)
        await backend.workers.deregister("w-1")
        await backend.workers.deregister("never-there")
        assert [w.id for w in await backend.workers.workers()] == ["w-2"]


class WakeupTests:
    """wait_for_work."""

    async def test_wait_for_work_times_out(self, backend: Backend) -> None:
        await asyncio.wait_for(backend.queue.wait_for_work(["default"], timeout=0.1), timeout=10)

    @pytest.mark.bananas_capability(Capability.PUSH_WAKEUP)
    async def test_wait_for_work_woken_by_enqueue(self, backend: Backend, clock: ManualClock) -> None:
        async def enqueue_later() -> None:
            await asyncio.sleep(0.1)
            await backend.queue.enqueue(new_job(clock))

        await asyncio.wait_for(
            asyncio.gather(backend.queue.wait_for_work(["default"], timeout=30), enqueue_later()), timeout=20
        )
        assert (await backend.queue.depths()).total_ready == 1


def _blocking(backend: Backend) -> BlockingEnqueue:
    if not isinstance(backend.queue, BlockingEnqueue):
        pytest.skip("the queue does not offer the optional enqueue_many_blocking (BlockingEnqueue)")
    return backend.queue


class BlockingEnqueueTests:
    """The optional :class:`~bananas.protocols.BlockingEnqueue`, called from plain threads as
    the synchronous client does: the same rules as ``enqueue_many``."""

    async def test_blocking_enqueue_stores_like_enqueue_many(self, backend: Backend, clock: ManualClock) -> None:
        queue = _blocking(backend)
        ready = [new_job(clock, priority=JobPriority.LOW), new_job(clock, priority=JobPriority.HIGH)]
        later = new_job(clock, delay=60)
        await asyncio.to_thread(queue.enqueue_many_blocking, [*ready, later])
        for job in (*ready, later):
            assert (await backend.queue.get_job(job.id)).to_dict() == job.to_dict()
        assert await drain(backend) == [ready[1].id, ready[0].id]
        assert (await backend.queue.depths()).scheduled == 1
        await asyncio.to_thread(queue.enqueue_many_blocking, [])

    async def test_blocking_enqueue_all_or_nothing(self, backend: Backend, clock: ManualClock) -> None:
        queue = _blocking(backend)
        existing = new_job(clock, payload="first")
        await backend.queue.enqueue(existing)
        fresh = new_job(clock)
        bad_batches: list[tuple[type[Exception], list[Job]]] = [
            (DuplicateJob, [fresh, existing.evolve(payload="again")]),
            (DuplicateJob, [fresh, new_job(clock), fresh]),
            (InvalidJob, [fresh, new_job(clock).evolve(status=JobStatus.COMPLETED)]),
        ]
        for error, batch in bad_batches:
            with pytest.raises(error):
                await asyncio.to_thread(queue.enqueue_many_blocking, batch)
        with pytest.raises(JobNotFound):
            await backend.queue.get_job(fresh.id)
        assert (await backend.queue.get_job(existing.id)).payload == "first"
        assert (await backend.queue.depths()).total_ready == 1

    async def test_blocking_enqueue_from_many_threads(self, backend: Backend, clock: ManualClock) -> None:
        queue = _blocking(backend)
        per_thread = [[new_job(clock) for _ in range(25)] for _ in range(8)]

        def submit(jobs: list[Job]) -> None:
            for job in jobs:
                queue.enqueue_many_blocking([job])

        await asyncio.gather(*(asyncio.to_thread(submit, jobs) for jobs in per_thread))
        assert sorted(await drain(backend)) == sorted(job.id for jobs in per_thread for job in jobs)

    @pytest.mark.bananas_capability(Capability.PUSH_WAKEUP)
    async def test_blocking_enqueue_wakes_a_waiting_worker(self, backend: Backend, clock: ManualClock) -> None:
        queue = _blocking(backend)

        async def enqueue_later() -> None:
            await asyncio.sleep(0.1)
            await asyncio.to_thread(queue.enqueue_many_blocking, [new_job(clock)])

        await asyncio.wait_for(
            asyncio.gather(backend.queue.wait_for_work(["default"], timeout=30), enqueue_later()), timeout=20
        )


class CapabilityTests:
    """Optional capabilities: declared ones work, undeclared ones raise CapabilityNotSupported."""

    @pytest.mark.bananas_capability(Capability.JOB_NAME_FILTER)
    async def test_claim_job_names_filter(self, backend: Backend, clock: ManualClock) -> None:
        a1, b1, a2 = new_job(clock, "a"), new_job(clock, "b"), new_job(clock, "a")
        await backend.queue.enqueue_many([a1, b1, a2])
        assert await claim_ids(backend, job_names={"a"}, limit=5) == [a1.id, a2.id]
        assert await claim_ids(backend, job_names={"c"}) == []
        assert await claim_ids(backend) == [b1.id]

    async def test_without_cron_scheduler_raises(self, backend: Backend) -> None:
        if backend.supports(Capability.CRON):
            pytest.skip("the backend declares 'cron' (tested by the cron tests)")
        with pytest.raises(CapabilityNotSupported):
            _ = backend.scheduler

    async def test_without_job_name_filter_claim_raises(self, backend: Backend) -> None:
        if backend.supports(Capability.JOB_NAME_FILTER):
            pytest.skip("the backend declares 'job_name_filter' (tested by test_claim_job_names_filter)")
        with pytest.raises(CapabilityNotSupported):
            await backend.queue.claim(["default"], job_names={"a"})

    async def test_without_dead_letter_admin_raises(self, backend: Backend) -> None:
        if backend.supports(Capability.DEAD_LETTER_ADMIN):
            pytest.skip("the backend declares 'dead_letter_admin' (tested by the dead letter tests)")
        with pytest.raises(CapabilityNotSupported):
            await backend.queue.dead_letters()
        with pytest.raises(CapabilityNotSupported):
            await backend.queue.requeue_dead()
        with pytest.raises(CapabilityNotSupported):
            await backend.queue.purge_dead()

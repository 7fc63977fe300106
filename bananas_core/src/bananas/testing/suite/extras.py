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
    async def test_cron_fire_once_per_tick(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        first, second = new_job(bananas_clock, "report"), new_job(bananas_clock, "report")
        assert await bananas_backend.scheduler.fire("nightly", TICK, first, TICK + MINUTE) is True
        assert await bananas_backend.scheduler.fire("nightly", TICK, second, TICK + MINUTE) is False
        assert (await bananas_backend.queue.get_job(first.id)).name == "report"
        with pytest.raises(JobNotFound):
            await bananas_backend.queue.get_job(second.id)
        state = await bananas_backend.scheduler.state("nightly")
        assert state is not None
        assert (state.last_run, state.next_run, state.run_count) == (TICK, TICK + MINUTE, 1)
        assert await claim_ids(bananas_backend) == [first.id]

    @pytest.mark.bananas_capability(Capability.CRON)
    async def test_cron_later_tick_fires_earlier_does_not(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        assert await bananas_backend.scheduler.fire("s", TICK, new_job(bananas_clock), TICK + MINUTE)
        assert await bananas_backend.scheduler.fire("s", TICK + MINUTE, new_job(bananas_clock), TICK + 2 * MINUTE)
        assert not await bananas_backend.scheduler.fire("s", TICK, new_job(bananas_clock), TICK + MINUTE)
        state = await bananas_backend.scheduler.state("s")
        assert state is not None and (state.last_run, state.run_count) == (TICK + MINUTE, 2)
        assert (await bananas_backend.queue.depths()).total_ready == 2

    @pytest.mark.bananas_capability(Capability.CRON)
    async def test_cron_concurrent_fire_one_wins(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        jobs = [new_job(bananas_clock) for _ in range(4)]
        won = await asyncio.gather(*(bananas_backend.scheduler.fire("race", TICK, j, TICK + MINUTE) for j in jobs))
        assert won.count(True) == 1
        assert await drain(bananas_backend) == [jobs[won.index(True)].id]
        state = await bananas_backend.scheduler.state("race")
        assert state is not None and state.run_count == 1

    @pytest.mark.bananas_capability(Capability.CRON)
    async def test_cron_schedules_are_independent(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        assert await bananas_backend.scheduler.fire("a", TICK, new_job(bananas_clock), TICK + MINUTE)
        assert await bananas_backend.scheduler.fire("b", TICK, new_job(bananas_clock), TICK + MINUTE)
        assert [s.schedule_id for s in await bananas_backend.scheduler.states()] == ["a", "b"]

    @pytest.mark.bananas_capability(Capability.CRON)
    async def test_cron_record_and_state(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        assert await bananas_backend.scheduler.state("unknown") is None
        await bananas_backend.scheduler.record("z", next_run=TICK)
        await bananas_backend.scheduler.fire("m", TICK, new_job(bananas_clock), TICK + MINUTE)
        await bananas_backend.scheduler.record("m", last_success=TICK + timedelta(seconds=3), last_error="boom")
        state = await bananas_backend.scheduler.state("m")
        assert state is not None
        assert (state.last_run, state.next_run, state.run_count) == (TICK, TICK + MINUTE, 1)
        assert (state.last_success, state.last_error) == (TICK + timedelta(seconds=3), "boom")
        await bananas_backend.scheduler.record("m", next_run=TICK + 5 * MINUTE)
        state = await bananas_backend.scheduler.state("m")
        assert state is not None and (state.next_run, state.last_error) == (TICK + 5 * MINUTE, "boom")
        await bananas_backend.scheduler.record("m", last_error="")
        state = await bananas_backend.scheduler.state("m")
        assert state is not None and state.last_error == ""
        assert [s.schedule_id for s in await bananas_backend.scheduler.states()] == ["m", "z"]
        z = await bananas_backend.scheduler.state("z")
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

    async def test_worker_heartbeat_listed(self, bananas_backend: Backend) -> None:
        b, a = _worker("w-b", in_flight=3, mode="high-priority"), _worker("w-a")
        await bananas_backend.workers.heartbeat(b, ttl=30)
        await bananas_backend.workers.heartbeat(a, ttl=30)
        assert [_identity(w) for w in await bananas_backend.workers.workers()] == [_identity(a), _identity(b)]

    async def test_worker_expires_after_ttl(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        await bananas_backend.workers.heartbeat(_worker("w-1"), ttl=10)
        bananas_clock.advance(9)
        assert [w.id for w in await bananas_backend.workers.workers()] == ["w-1"]
        await bananas_backend.workers.heartbeat(_worker("w-1", in_flight=1), ttl=10)
        bananas_clock.advance(9)
        [renewed] = await bananas_backend.workers.workers()
        assert renewed.in_flight == 1
        bananas_clock.advance(2)
        assert await bananas_backend.workers.workers() == []

    async def test_worker_deregister(self, bananas_backend: Backend) -> None:
        await bananas_backend.workers.heartbeat(_worker("w-1"), ttl=30)
        await bananas_backend.workers.heartbeat(_worker("w-2"), ttl=30)
        await bananas_backend.workers.deregister("w-1")
        await bananas_backend.workers.deregister("never-there")
        assert [w.id for w in await bananas_backend.workers.workers()] == ["w-2"]


class WakeupTests:
    """wait_for_work."""

    async def test_wait_for_work_times_out(self, bananas_backend: Backend) -> None:
        await asyncio.wait_for(bananas_backend.queue.wait_for_work(["default"], timeout=0.1), timeout=10)

    @pytest.mark.bananas_capability(Capability.PUSH_WAKEUP)
    async def test_wait_for_work_woken_by_enqueue(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        async def enqueue_later() -> None:
            await asyncio.sleep(0.1)
            await bananas_backend.queue.enqueue(new_job(bananas_clock))

        await asyncio.wait_for(
            asyncio.gather(bananas_backend.queue.wait_for_work(["default"], timeout=30), enqueue_later()), timeout=20
        )
        assert (await bananas_backend.queue.depths()).total_ready == 1


def _blocking(backend: Backend) -> BlockingEnqueue:
    if not isinstance(backend.queue, BlockingEnqueue):
        pytest.skip("the queue does not offer the optional enqueue_many_blocking (BlockingEnqueue)")
    return backend.queue


class BlockingEnqueueTests:
    """The optional :class:`~bananas.protocols.BlockingEnqueue`, called from plain threads as
    the synchronous client does: the same rules as ``enqueue_many``."""

    async def test_blocking_enqueue_stores_like_enqueue_many(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        queue = _blocking(bananas_backend)
        ready = [new_job(bananas_clock, priority=JobPriority.LOW), new_job(bananas_clock, priority=JobPriority.HIGH)]
        later = new_job(bananas_clock, delay=60)
        await asyncio.to_thread(queue.enqueue_many_blocking, [*ready, later])
        for job in (*ready, later):
            assert (await bananas_backend.queue.get_job(job.id)).to_dict() == job.to_dict()
        assert await drain(bananas_backend) == [ready[1].id, ready[0].id]
        assert (await bananas_backend.queue.depths()).scheduled == 1
        await asyncio.to_thread(queue.enqueue_many_blocking, [])

    async def test_blocking_enqueue_all_or_nothing(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        queue = _blocking(bananas_backend)
        existing = new_job(bananas_clock, payload="first")
        await bananas_backend.queue.enqueue(existing)
        fresh = new_job(bananas_clock)
        bad_batches: list[tuple[type[Exception], list[Job]]] = [
            (DuplicateJob, [fresh, existing.evolve(payload="again")]),
            (DuplicateJob, [fresh, new_job(bananas_clock), fresh]),
            (InvalidJob, [fresh, new_job(bananas_clock).evolve(status=JobStatus.COMPLETED)]),
        ]
        for error, batch in bad_batches:
            with pytest.raises(error):
                await asyncio.to_thread(queue.enqueue_many_blocking, batch)
        with pytest.raises(JobNotFound):
            await bananas_backend.queue.get_job(fresh.id)
        assert (await bananas_backend.queue.get_job(existing.id)).payload == "first"
        assert (await bananas_backend.queue.depths()).total_ready == 1

    async def test_blocking_enqueue_from_many_threads(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        queue = _blocking(bananas_backend)
        per_thread = [[new_job(bananas_clock) for _ in range(25)] for _ in range(8)]

        def submit(jobs: list[Job]) -> None:
            for job in jobs:
                queue.enqueue_many_blocking([job])

        await asyncio.gather(*(asyncio.to_thread(submit, jobs) for jobs in per_thread))
        assert sorted(await drain(bananas_backend)) == sorted(job.id for jobs in per_thread for job in jobs)

    @pytest.mark.bananas_capability(Capability.PUSH_WAKEUP)
    async def test_blocking_enqueue_wakes_a_waiting_worker(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        queue = _blocking(bananas_backend)

        async def enqueue_later() -> None:
            await asyncio.sleep(0.1)
            await asyncio.to_thread(queue.enqueue_many_blocking, [new_job(bananas_clock)])

        await asyncio.wait_for(
            asyncio.gather(bananas_backend.queue.wait_for_work(["default"], timeout=30), enqueue_later()), timeout=20
        )


class CapabilityTests:
    """Optional capabilities: declared ones work, undeclared ones raise CapabilityNotSupported."""

    @pytest.mark.bananas_capability(Capability.JOB_NAME_FILTER)
    async def test_claim_job_names_filter(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        a1, b1, a2 = new_job(bananas_clock, "a"), new_job(bananas_clock, "b"), new_job(bananas_clock, "a")
        await bananas_backend.queue.enqueue_many([a1, b1, a2])
        assert await claim_ids(bananas_backend, job_names={"a"}, limit=5) == [a1.id, a2.id]
        assert await claim_ids(bananas_backend, job_names={"c"}) == []
        assert await claim_ids(bananas_backend) == [b1.id]

    async def test_without_cron_scheduler_raises(self, bananas_backend: Backend) -> None:
        if bananas_backend.supports(Capability.CRON):
            pytest.skip("the backend declares 'cron' (tested by the cron tests)")
        with pytest.raises(CapabilityNotSupported):
            _ = bananas_backend.scheduler

    async def test_without_job_name_filter_claim_raises(self, bananas_backend: Backend) -> None:
        if bananas_backend.supports(Capability.JOB_NAME_FILTER):
            pytest.skip("the backend declares 'job_name_filter' (tested by test_claim_job_names_filter)")
        with pytest.raises(CapabilityNotSupported):
            await bananas_backend.queue.claim(["default"], job_names={"a"})

    async def test_without_dead_letter_admin_raises(self, bananas_backend: Backend) -> None:
        if bananas_backend.supports(Capability.DEAD_LETTER_ADMIN):
            pytest.skip("the backend declares 'dead_letter_admin' (tested by the dead letter tests)")
        with pytest.raises(CapabilityNotSupported):
            await bananas_backend.queue.dead_letters()
        with pytest.raises(CapabilityNotSupported):
            await bananas_backend.queue.requeue_dead()
        with pytest.raises(CapabilityNotSupported):
            await bananas_backend.queue.purge_dead()

"""Conformance tests of unique jobs: :class:`~bananas.protocols.UniqueEnqueue`, under the
``unique_jobs`` capability marker.

The rule is :func:`bananas.unique.key_held`: a key stays taken while its job is pending,
scheduled, running or waiting for a retry, and for ``unique_for`` seconds after it
completed; a dead job releases it. Racing submits of one key store exactly one job.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bananas.backend import Backend
from bananas.capabilities import Capability
from bananas.clock import ManualClock
from bananas.errors import DuplicateJob, JobNotFound
from bananas.job import Job, JobStatus
from bananas.protocols import UniqueEnqueue
from bananas.testing.plugin import BackendFactory, required_capabilities, skip_unless_capable
from bananas.testing.suite._helpers import claim_ids, new_job
from bananas.unique import UniqueKey, key_held

__all__ = ["UniqueJobTests", "UniquePropertyTests"]

UNIQUE_JOBS = pytest.mark.bananas_capability(Capability.UNIQUE_JOBS)

RACERS = 8
"""Connections that submit one key at the same moment in the race test."""


def unique_queue(backend: Backend) -> UniqueEnqueue:
    """The backend's queue as a :class:`UniqueEnqueue` (asserting that it is one)."""
    queue = backend.queue
    assert isinstance(queue, UniqueEnqueue), "the backend declares unique_jobs, but its queue is not a UniqueEnqueue"
    return queue


async def submit(backend: Backend, job: Job, key: str | None, unique_for: float = 0.0) -> str:
    """Enqueue one job with ``key``; the id it stands for."""
    unique = None if key is None else UniqueKey(key, unique_for)
    [answer] = await unique_queue(backend).enqueue_unique([(job, unique)])
    return answer


async def _exists(backend: Backend, job_id: str) -> bool:
    try:
        await backend.queue.get_job(job_id)
    except JobNotFound:
        return False
    return True


class UniqueJobTests:
    """enqueue_unique: one job per key while the key is held."""

    async def test_unique_jobs_declared_means_offered(self, bananas_backend: Backend) -> None:
        if bananas_backend.supports(Capability.UNIQUE_JOBS):
            unique_queue(bananas_backend)

    @UNIQUE_JOBS
    async def test_unique_a_held_key_returns_the_holder_and_writes_nothing(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        first, second = new_job(bananas_clock), new_job(bananas_clock)
        assert await submit(bananas_backend, first, "invoice:42") == first.id
        assert await submit(bananas_backend, second, "invoice:42") == first.id
        assert not await _exists(bananas_backend, second.id), "a submit of a held key stored its job"
        assert await claim_ids(bananas_backend, limit=10) == [first.id]

    @UNIQUE_JOBS
    async def test_unique_the_key_is_held_while_scheduled_running_and_retrying(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        queue, holder = bananas_backend.queue, new_job(bananas_clock, delay=10, max_retries=3)
        assert await submit(bananas_backend, holder, "k") == holder.id
        assert await submit(bananas_backend, new_job(bananas_clock), "k") == holder.id, "held while scheduled"
        bananas_clock.advance(11)
        await queue.move_scheduled()
        assert await submit(bananas_backend, new_job(bananas_clock), "k") == holder.id, "held while pending"
        [claimed] = await queue.claim(["default"], lease=30)
        assert await submit(bananas_backend, new_job(bananas_clock), "k") == holder.id, "held while running"
        await queue.fail(claimed, "boom", retry_at=bananas_clock.now() + timedelta(seconds=60))
        assert await submit(bananas_backend, new_job(bananas_clock), "k") == holder.id, "held while retrying"
        assert await claim_ids(bananas_backend, limit=10) == []

    @UNIQUE_JOBS
    async def test_unique_a_completed_job_holds_its_key_for_unique_for(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        holder = new_job(bananas_clock)
        await submit(bananas_backend, holder, "k", 60)
        bananas_clock.advance(30)  # the window counts from completion, not from submission
        [claimed] = await bananas_backend.queue.claim(["default"])
        await bananas_backend.queue.complete(claimed)
        bananas_clock.advance(59)
        assert await submit(bananas_backend, new_job(bananas_clock), "k", 60) == holder.id
        bananas_clock.advance(2)
        later = new_job(bananas_clock)
        assert await submit(bananas_backend, later, "k", 60) == later.id, "the key outlived its window"
        assert await claim_ids(bananas_backend, limit=10) == [later.id]

    @UNIQUE_JOBS
    async def test_unique_without_unique_for_completion_releases_the_key(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        await submit(bananas_backend, new_job(bananas_clock), "k")
        [claimed] = await bananas_backend.queue.claim(["default"])
        await bananas_backend.queue.complete(claimed)
        again = new_job(bananas_clock)
        assert await submit(bananas_backend, again, "k") == again.id

    @UNIQUE_JOBS
    async def test_unique_a_dead_job_releases_its_key(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        await submit(bananas_backend, new_job(bananas_clock, max_retries=3), "k", 3600)
        [claimed] = await bananas_backend.queue.claim(["default"])
        dead = await bananas_backend.queue.fail(claimed, "gave up", retry_at=None)
        assert dead.status is JobStatus.FAILED
        again = new_job(bananas_clock)
        assert await submit(bananas_backend, again, "k", 3600) == again.id
        assert await claim_ids(bananas_backend) == [again.id]

    @UNIQUE_JOBS
    async def test_unique_other_keys_and_plain_jobs_are_independent(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        jobs = [new_job(bananas_clock) for _ in range(4)]
        entries = [(jobs[0], UniqueKey("a")), (jobs[1], UniqueKey("b")), (jobs[2], None), (jobs[3], None)]
        assert await unique_queue(bananas_backend).enqueue_unique(entries) == [j.id for j in jobs]
        assert sorted(await claim_ids(bananas_backend, limit=10)) == sorted(j.id for j in jobs)

    @UNIQUE_JOBS
    async def test_unique_one_key_twice_in_a_batch_stores_one_job(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        first, second, plain = new_job(bananas_clock), new_job(bananas_clock), new_job(bananas_clock)
        answers = await unique_queue(bananas_backend).enqueue_unique(
            [(first, UniqueKey("k")), (plain, None), (second, UniqueKey("k"))]
        )
        assert answers == [first.id, plain.id, first.id]
        assert not await _exists(bananas_backend, second.id)
        assert await claim_ids(bananas_backend, limit=10) == [first.id, plain.id]

    @UNIQUE_JOBS
    async def test_unique_a_refused_batch_takes_no_key(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        taken = new_job(bananas_clock)
        await bananas_backend.queue.enqueue(taken)
        fresh = new_job(bananas_clock)
        clash = new_job(bananas_clock, job_id=taken.id)
        with pytest.raises(DuplicateJob):
            await unique_queue(bananas_backend).enqueue_unique([(fresh, UniqueKey("x")), (clash, UniqueKey("y"))])
        assert not await _exists(bananas_backend, fresh.id), "a refused batch stored a job"
        for key in ("x", "y"):
            job = new_job(bananas_clock)
            assert await submit(bananas_backend, job, key) == job.id, f"a refused batch took key {key!r}"

    @UNIQUE_JOBS
    async def test_unique_keys_belong_to_their_namespace(
        self, bananas_backend: Backend, bananas_backend_factory: BackendFactory, bananas_clock: ManualClock
    ) -> None:
        tag = uuid.uuid4().hex[:12]
        one = bananas_backend_factory(bananas_clock, namespace=f"ua{tag}")
        two = bananas_backend_factory(bananas_clock, namespace=f"ub{tag}")
        try:
            a, b = new_job(bananas_clock), new_job(bananas_clock)
            assert await submit(one, a, "k") == a.id
            assert await submit(two, b, "k") == b.id, "a key of one namespace was held in another"
        finally:
            await one.close()
            await two.close()

    @UNIQUE_JOBS
    async def test_unique_racing_submits_store_exactly_one_job(
        self, bananas_backend: Backend, bananas_backend_factory: BackendFactory, bananas_clock: ManualClock
    ) -> None:
        """Several connections submit one key at once: one job is stored, every answer names it."""
        namespace = "ur" + uuid.uuid4().hex
        racers = [bananas_backend_factory(bananas_clock, namespace=namespace) for _ in range(RACERS)]
        try:
            for racer in racers:  # connected and ready before the start, so they really race
                await racer.queue.ping()
            jobs = [new_job(bananas_clock) for _ in racers]
            start = asyncio.Event()

            async def race(backend: Backend, job: Job) -> str:
                await start.wait()
                return await submit(backend, job, "payment:7")

            tasks = [asyncio.create_task(race(b, j)) for b, j in zip(racers, jobs, strict=True)]
            await asyncio.sleep(0)
            start.set()
            answers = await asyncio.gather(*tasks)
            assert len(set(answers)) == 1, f"racing submits stood for different jobs: {sorted(set(answers))}"
            stored = [j.id for j in jobs if await _exists(racers[0], j.id)]
            assert stored == [answers[0]], f"racing submits of one key stored {len(stored)} jobs"
            assert await claim_ids(racers[0], limit=RACERS * 2) == stored
        finally:
            for racer in racers:
                await racer.close()


# -- hypothesis: any sequence of submits, completions, deaths and waits matches the rule ----

_Op = tuple[str, Any]
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.tuples(st.sampled_from("ab"), st.sampled_from([0.0, 5.0, 30.0]))),
        st.tuples(st.just("complete"), st.none()),
        st.tuples(st.just("die"), st.none()),
        st.tuples(st.just("wait"), st.sampled_from([1.0, 4.0, 10.0])),
    ),
    max_size=12,
)


class _Model:
    """What the rule says: per key, its holder's state; jobs ready and running in order."""

    def __init__(self) -> None:
        self.holders: dict[str, tuple[str, float]] = {}  # key -> (holder id, unique_for)
        self.status: dict[str, JobStatus] = {}
        self.finished: dict[str, float] = {}
        self.ready: list[str] = []

    def answer(self, key: str, job_id: str, unique_for: float, now: float) -> str:
        held = self.holders.get(key)
        if held is not None:
            holder, window = held
            if key_held(self.status.get(holder), self.finished.get(holder), window, now):
                return holder
        self.holders[key] = (job_id, unique_for)
        self.status[job_id] = JobStatus.PENDING
        self.ready.append(job_id)
        return job_id


class UniquePropertyTests:
    """Hypothesis: enqueue_unique agrees with :func:`~bananas.unique.key_held` over any history."""

    @pytest.fixture
    def unique_capable(self, bananas_backend_factory: BackendFactory, request: pytest.FixtureRequest) -> None:
        """Skip (naming the capability) unless the backend declares what the test is marked with."""
        backend = bananas_backend_factory(ManualClock())
        try:
            skip_unless_capable(backend, required_capabilities(request.node))
        finally:
            asyncio.run(backend.close())

    @UNIQUE_JOBS
    @settings(
        max_examples=20,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors],
    )
    @given(ops=_OPS)
    def test_unique_keys_follow_the_rule(
        self, unique_capable: None, bananas_backend_factory: BackendFactory, ops: Sequence[_Op]
    ) -> None:
        async def check() -> None:
            clock = ManualClock()
            backend = bananas_backend_factory(clock)
            try:
                await _replay(backend, clock, ops)
            finally:
                await backend.close()

        asyncio.run(check())


async def _replay(backend: Backend, clock: ManualClock, ops: Sequence[_Op]) -> None:
    model, queue = _Model(), backend.queue
    for op, arg in ops:
        now = clock()
        if op == "submit":
            key, unique_for = arg
            job = new_job(clock, max_retries=3)
            expected = model.answer(key, job.id, unique_for, now)
            assert await submit(backend, job, key, unique_for) == expected, f"submit of key {key!r}"
        elif op == "wait":
            clock.advance(arg)
        elif model.ready:
            claimed = await queue.claim(["default"])
            assert [j.id for j in claimed] == model.ready[:1]
            job_id = model.ready.pop(0)
            if op == "complete":
                await queue.complete(claimed[0])
                model.status[job_id], model.finished[job_id] = JobStatus.COMPLETED, now
            else:
                await queue.fail(claimed[0], "dead", retry_at=None)
                model.status[job_id] = JobStatus.FAILED

"""Conformance tests of the optional fast paths: :class:`~bananas.protocols.HandOff` and
:class:`~bananas.protocols.CompleteAndStore` (each under its capability marker), and that a
backend declares exactly the optional protocols its queue offers."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from bananas.backend import Backend
from bananas.capabilities import Capability
from bananas.clock import ManualClock
from bananas.errors import LeaseLost
from bananas.job import Job, JobResult, JobStatus
from bananas.protocols import CompleteAndStore, HandOff
from bananas.testing.plugin import BackendFactory
from bananas.testing.suite._helpers import new_job

WAIT = 10.0  # real seconds a test waits at most for something that should come at once


def _hand_off(backend: Backend) -> HandOff:
    queue = backend.queue
    assert isinstance(queue, HandOff), "the backend declares hand_off, but its queue is not a HandOff"
    return queue


def _waiter() -> str:
    return "w" + uuid.uuid4().hex


HAND_OFF = pytest.mark.bananas_capability(Capability.HAND_OFF)
COMPLETE_AND_STORE = pytest.mark.bananas_capability(Capability.COMPLETE_AND_STORE)


class HandOffTests:
    """claim_or_wait / wake_waiter / stop_waiting."""

    @HAND_OFF
    async def test_claim_or_wait_claims_what_is_ready(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        job = new_job(bananas_clock)
        await bananas_backend.queue.enqueue(job)
        got = await _hand_off(bananas_backend).claim_or_wait(
            ["default"], limit=5, lease=30, waiter=_waiter(), timeout=1
        )
        assert [j.id for j in got] == [job.id]
        assert got[0].status is JobStatus.PROCESSING and got[0].lease_token
        assert await bananas_backend.queue.claim(["default"]) == [], "a job returned by claim_or_wait stayed claimable"
        assert (await bananas_backend.queue.complete(got[0])).status is JobStatus.COMPLETED

    @HAND_OFF
    async def test_a_job_enqueued_during_the_wait_is_handed_over(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        queue = _hand_off(bananas_backend)
        waiting = asyncio.create_task(
            queue.claim_or_wait(["default"], limit=5, lease=30, waiter=_waiter(), timeout=WAIT)
        )
        await asyncio.sleep(0.2)  # let it register as a waiter (a late registration only costs a poll)
        job = new_job(bananas_clock)
        await bananas_backend.queue.enqueue(job)
        got = await asyncio.wait_for(waiting, WAIT + 5)
        if not got:  # handed over between two waits: the next call returns it
            got = await queue.claim_or_wait(["default"], limit=5, lease=30, waiter=_waiter(), timeout=1)
        assert [j.id for j in got] == [job.id]
        assert got[0].lease_token and got[0].status is JobStatus.PROCESSING
        assert await bananas_backend.queue.claim(["default"]) == []

    @HAND_OFF
    async def test_the_wait_ends_empty_after_its_timeout(self, bananas_backend: Backend) -> None:
        got = await asyncio.wait_for(
            _hand_off(bananas_backend).claim_or_wait(["default"], limit=1, lease=30, waiter=_waiter(), timeout=0.3),
            WAIT,
        )
        assert got == []

    @HAND_OFF
    async def test_wake_waiter_ends_the_wait(self, bananas_backend: Backend) -> None:
        queue, waiter = _hand_off(bananas_backend), _waiter()
        waiting = asyncio.create_task(queue.claim_or_wait(["default"], limit=1, lease=30, waiter=waiter, timeout=60))
        await asyncio.sleep(0.2)
        await queue.wake_waiter(waiter)
        assert await asyncio.wait_for(waiting, WAIT) == []

    @HAND_OFF
    async def test_stop_waiting_loses_nothing(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        """Jobs enqueued after a wait ended are either handed back by stop_waiting or still ready."""
        queue, waiter = _hand_off(bananas_backend), _waiter()
        assert await queue.claim_or_wait(["default"], limit=5, lease=30, waiter=waiter, timeout=0.1) == []
        jobs = [new_job(bananas_clock) for _ in range(3)]
        await bananas_backend.queue.enqueue_many(jobs)
        for held in await queue.stop_waiting(waiter):
            assert held.lease_token, "a job stop_waiting returns must be claimed (with its lease token)"
            await bananas_backend.queue.release(held)
        claimed = await bananas_backend.queue.claim(["default"], limit=10)
        assert sorted(j.id for j in claimed) == sorted(j.id for j in jobs)

    @HAND_OFF
    async def test_handed_over_jobs_are_fenced(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        queue = _hand_off(bananas_backend)
        job = new_job(bananas_clock)
        await bananas_backend.queue.enqueue(job)
        [first] = await queue.claim_or_wait(["default"], limit=1, lease=10, waiter=_waiter(), timeout=1)
        bananas_clock.advance(11)
        assert await bananas_backend.queue.reap_expired() == 1
        with pytest.raises(LeaseLost):
            await bananas_backend.queue.complete(first)
        assert (await bananas_backend.queue.get_job(job.id)).status is JobStatus.PENDING


def _combined(backend: Backend) -> CompleteAndStore:
    queue = backend.queue
    assert isinstance(queue, CompleteAndStore), "the backend declares complete_and_store, but its queue is not one"
    return queue


def _result(job: Job, clock: ManualClock) -> JobResult:
    return JobResult(job_id=job.id, status=JobStatus.COMPLETED, result={"sum": 3, "parts": [1, 2]},
                     completed_at=clock.now())  # fmt: skip


class CompleteAndStoreTests:
    """complete_and_store / shares_store_with."""

    @COMPLETE_AND_STORE
    async def test_completes_and_stores_together(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        queue = _combined(bananas_backend)
        assert queue.shares_store_with(bananas_backend.results)
        job = new_job(bananas_clock)
        await bananas_backend.queue.enqueue(job)
        [claimed] = await bananas_backend.queue.claim(["default"])
        done = await queue.complete_and_store(claimed, _result(job, bananas_clock))
        assert done.status is JobStatus.COMPLETED
        assert done == await bananas_backend.queue.get_job(job.id)  # the job as stored, every field
        stored = await bananas_backend.results.get(job.id)
        assert stored is not None and (stored.status, stored.result) == (
            JobStatus.COMPLETED,
            {"sum": 3, "parts": [1, 2]},
        )

    @COMPLETE_AND_STORE
    async def test_another_store_is_not_shared(
        self, bananas_backend: Backend, bananas_clock: ManualClock, bananas_backend_factory: BackendFactory
    ) -> None:
        other = bananas_backend_factory(bananas_clock)
        try:
            assert not _combined(bananas_backend).shares_store_with(other.results)
        finally:
            await other.close()

    @COMPLETE_AND_STORE
    async def test_a_stale_complete_and_store_writes_nothing(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        queue = _combined(bananas_backend)
        job = new_job(bananas_clock, max_retries=3)
        await bananas_backend.queue.enqueue(job)
        [first] = await bananas_backend.queue.claim(["default"], lease=10)
        bananas_clock.advance(11)
        assert await bananas_backend.queue.reap_expired() == 1
        with pytest.raises(LeaseLost):
            await queue.complete_and_store(first, _result(job, bananas_clock))
        assert await bananas_backend.results.get(job.id) is None, "a stale completion stored a result"
        assert (await bananas_backend.queue.get_job(job.id)).status is JobStatus.PENDING


class OptionalProtocolTests:
    """What a backend declares and what its queue offers agree."""

    async def test_declared_optional_protocols_are_offered(self, bananas_backend: Backend) -> None:
        if bananas_backend.supports(Capability.HAND_OFF):
            assert isinstance(bananas_backend.queue, HandOff), "declares hand_off but its queue is not a HandOff"
        if bananas_backend.supports(Capability.COMPLETE_AND_STORE):
            assert isinstance(bananas_backend.queue, CompleteAndStore), (
                "declares complete_and_store but its queue is not a CompleteAndStore"
            )

    async def test_an_offered_complete_and_store_is_declared(self, bananas_backend: Backend) -> None:
        """The worker completes through it whenever the queue offers it: it must be declared (and so tested)."""
        if isinstance(bananas_backend.queue, CompleteAndStore) and bananas_backend.queue.shares_store_with(
            bananas_backend.results
        ):
            assert bananas_backend.supports(Capability.COMPLETE_AND_STORE), (
                "the queue offers complete_and_store (the worker will use it) but the backend does not declare "
                "the complete_and_store capability, so the suite never tests it"
            )

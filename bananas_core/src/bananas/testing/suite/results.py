"""Conformance tests: results (round trip, wait, delete, TTLs)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from bananas.backend import Backend
from bananas.capabilities import Capability
from bananas.clock import system_clock
from bananas.errors import JobNotFound, Timeout
from bananas.job import Job, JobResult, JobStatus
from bananas.testing.plugin import BackendFactory, skip_unless_capable

AT = datetime(2025, 11, 10, 9, 15, 2, 123456, tzinfo=UTC)


def success(job_id: str, value: object = None) -> JobResult:
    return JobResult(job_id=job_id, status=JobStatus.COMPLETED, result=value, completed_at=AT,
                     duration=timedelta(milliseconds=1500))  # fmt: skip


class ResultTests:
    """store / get / wait / delete."""

    async def test_result_round_trip_success(self, bananas_backend: Backend) -> None:
        result = success("job-1", {"sum": 3, "items": ["a", None, 1.5, True], "nested": {"ok": False}})
        await bananas_backend.results.store(result)
        assert await bananas_backend.results.get("job-1") == result

    async def test_result_round_trip_failure(self, bananas_backend: Backend) -> None:
        result = JobResult(job_id="job-2", status=JobStatus.FAILED, error="ValueError: bad input",
                           completed_at=AT, duration=timedelta(milliseconds=20))  # fmt: skip
        await bananas_backend.results.store(result)
        stored = await bananas_backend.results.get("job-2")
        assert stored == result and stored is not None and stored.is_failed()

    async def test_result_none_value(self, bananas_backend: Backend) -> None:
        await bananas_backend.results.store(success("job-3", None))
        stored = await bananas_backend.results.get("job-3")
        assert stored is not None and stored.is_success() and stored.result is None

    @pytest.mark.parametrize("value", [0, "", [], {}, False, "text", -1.25, [[{"a": [None]}]]])
    async def test_result_json_values(self, bananas_backend: Backend, value: object) -> None:
        await bananas_backend.results.store(success("job-4", value))
        stored = await bananas_backend.results.get("job-4")
        assert stored is not None and stored.result == value and type(stored.result) is type(value)

    @pytest.mark.parametrize("millis", [0, 1, 16217, 86_400_123])
    async def test_result_duration_milliseconds(self, bananas_backend: Backend, millis: int) -> None:
        result = JobResult(job_id=f"job-d{millis}", status=JobStatus.COMPLETED, completed_at=AT,
                           duration=timedelta(milliseconds=millis))  # fmt: skip
        await bananas_backend.results.store(result)
        stored = await bananas_backend.results.get(result.job_id)
        assert stored is not None
        assert stored.duration == result.duration, "duration must survive to the millisecond (wire: duration_ms)"

    async def test_result_missing_is_none(self, bananas_backend: Backend) -> None:
        assert await bananas_backend.results.get("never-ran") is None

    async def test_result_store_replaces(self, bananas_backend: Backend) -> None:
        await bananas_backend.results.store(success("job-5", 1))
        await bananas_backend.results.store(success("job-5", 2))
        stored = await bananas_backend.results.get("job-5")
        assert stored is not None and stored.result == 2

    async def test_wait_returns_stored_result(self, bananas_backend: Backend) -> None:
        await bananas_backend.results.store(success("job-6", "done"))
        assert (await bananas_backend.results.wait("job-6", timeout=5)).result == "done"

    async def test_wait_is_woken_by_store(self, bananas_backend: Backend) -> None:
        async def store_later() -> None:
            await asyncio.sleep(0.1)
            await bananas_backend.results.store(success("job-7", [1, 2]))

        waiter = asyncio.ensure_future(bananas_backend.results.wait("job-7", timeout=10))
        await asyncio.gather(store_later(), waiter)
        assert waiter.result().result == [1, 2]

    async def test_many_waiters_all_woken(self, bananas_backend: Backend) -> None:
        waiters = [asyncio.ensure_future(bananas_backend.results.wait("job-8", timeout=10)) for _ in range(5)]
        await asyncio.sleep(0.05)
        await bananas_backend.results.store(success("job-8", "x"))
        assert [r.result for r in await asyncio.gather(*waiters)] == ["x"] * 5

    async def test_wait_timeout_raises(self, bananas_backend: Backend) -> None:
        with pytest.raises(Timeout):
            await bananas_backend.results.wait("never-stored", timeout=0.2)
        with pytest.raises(TimeoutError):  # Timeout is also the built-in TimeoutError
            await bananas_backend.results.wait("never-stored", timeout=0.05)

    async def test_delete_result(self, bananas_backend: Backend) -> None:
        await bananas_backend.results.store(success("job-9", 1))
        await bananas_backend.results.delete("job-9")
        assert await bananas_backend.results.get("job-9") is None
        await bananas_backend.results.delete("job-9")  # deleting nothing is fine


class ResultTTLTests:
    """Expiry of results and finished jobs, in real time (capability ``result_ttl``)."""

    @pytest.mark.bananas_realtime
    @pytest.mark.bananas_capability(Capability.RESULT_TTL)
    async def test_result_ttl_expires(self, bananas_backend_factory: BackendFactory) -> None:
        backend = bananas_backend_factory(system_clock, result_success_ttl=1.0, result_failure_ttl=30.0)
        try:
            skip_unless_capable(backend, [Capability.RESULT_TTL])
            await backend.results.store(success("ttl-ok", 1))
            failed = JobResult(job_id="ttl-failed", status=JobStatus.FAILED, error="e", completed_at=AT)
            await backend.results.store(failed)
            assert await backend.results.get("ttl-ok") is not None
            await asyncio.sleep(2.2)
            assert await backend.results.get("ttl-ok") is None
            assert await backend.results.get("ttl-failed") == failed
        finally:
            await backend.close()

    @pytest.mark.bananas_realtime
    @pytest.mark.bananas_capability(Capability.RESULT_TTL)
    async def test_completed_job_ttl_expires(self, bananas_backend_factory: BackendFactory) -> None:
        backend = bananas_backend_factory(system_clock, completed_job_ttl=1.0)
        try:
            skip_unless_capable(backend, [Capability.RESULT_TTL])
            done, live = Job.create("task", 1), Job.create("task", 2)
            await backend.queue.enqueue_many([done, live])
            [claimed] = await backend.queue.claim(["default"])
            assert claimed.id == done.id
            await backend.queue.complete(claimed)
            await asyncio.sleep(2.2)
            with pytest.raises(JobNotFound):
                await backend.queue.get_job(done.id)
            assert (await backend.queue.get_job(live.id)).status is JobStatus.PENDING
        finally:
            await backend.close()

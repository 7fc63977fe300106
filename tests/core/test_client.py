"""The clients on ``memory://``: submissions, validation before any write, reads, waits,
bulk submission, the synchronous client from threads and after fork."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
from bananas import (
    AsyncClient,
    Backend,
    Client,
    ConfigError,
    HandlerNotFound,
    InvalidJob,
    InvalidRoutingKey,
    Job,
    JobNotFound,
    JobPriority,
    JobResult,
    JobStatus,
    ManualClock,
    PayloadError,
    Registry,
    ResultNotReady,
    Timeout,
    connect,
)
from bananas.timefmt import from_timestamp

pytestmark = pytest.mark.anyio


@pytest.fixture
def url() -> str:
    return f"memory://client-{uuid.uuid4().hex}"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def client(url: str, clock: ManualClock) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(url, clock=clock) as c:
        yield c


async def nothing_stored(backend: Backend) -> bool:
    depths = await backend.queue.depths()
    return depths.total_ready == depths.scheduled == depths.processing == depths.dead == 0


async def test_submit_job_stores_a_pending_job_with_the_given_fields(client: AsyncClient) -> None:
    job_id = await client.submit_job("send_email", {"to": "a@example.com"}, JobPriority.HIGH, "welcome")
    job = await client.get_job(job_id)
    assert (job.name, job.payload, job.priority, job.description) == (
        "send_email",
        {"to": "a@example.com"},
        JobPriority.HIGH,
        "welcome",
    )
    assert (job.status, job.routing_key, job.max_retries, job.attempts) == (JobStatus.PENDING, "default", 3, 0)
    depths = await client.backend.queue.depths()
    assert depths.ready == {("default", JobPriority.HIGH): 1}


@pytest.mark.parametrize("priority", ["high", "NORMAL", " low ", JobPriority.LOW])
async def test_priority_accepts_the_enum_or_its_string(client: AsyncClient, priority: Any) -> None:
    job = await client.get_job(await client.submit_job("x", None, priority))
    assert job.priority is JobPriority.parse(priority)


async def test_job_id_and_max_retries_can_be_chosen(client: AsyncClient) -> None:
    job_id = await client.submit_job("x", max_retries=7, job_id="order-42")
    assert job_id == "order-42"
    assert (await client.get_job("order-42")).max_retries == 7


async def test_submit_with_route(client: AsyncClient) -> None:
    job_id = await client.submit_job_with_route("render", {"frame": 1}, "high", "gpu")
    assert (await client.get_job(job_id)).routing_key == "gpu"
    assert (await client.backend.queue.depths()).ready_for("gpu") == 1


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda c: c.submit_job("x", {1, 2}), PayloadError, "not JSON-serialisable"),
        (lambda c: c.submit_job("x", {"n": float("nan")}), PayloadError, "numbers must be finite"),
        (lambda c: c.submit_job("x", object()), PayloadError, "not JSON-serialisable"),
        (lambda c: c.submit_job("", None), InvalidJob, "non-empty"),
        (lambda c: c.submit_job("   ", None), InvalidJob, "non-empty"),
        (lambda c: c.submit_job("x", None, "urgent"), InvalidJob, "high, normal, low"),
        (lambda c: c.submit_job_with_route("x", None, "high", "bad key!"), InvalidRoutingKey, "1-64 characters"),
        (lambda c: c.submit_job_with_route("x", None, "high", ""), InvalidRoutingKey, "empty"),
        (lambda c: c.submit_job_with_route("x", None, "high", "k" * 65), InvalidRoutingKey, "65 characters"),
        (lambda c: c.submit_job_scheduled("x", None, "low", datetime(2030, 1, 1)), InvalidJob, "time zone"),
        (lambda c: c.submit_job_scheduled("x", None, "low", "tomorrow"), InvalidJob, "delay in seconds"),
        (lambda c: c.submit_job_scheduled("x", None, "low", True), InvalidJob, "delay in seconds"),
        (lambda c: c.submit_job("x", max_retries=-1), InvalidJob, "max_retries"),
    ],
)
async def test_bad_submissions_raise_clear_errors_and_write_nothing(
    client: AsyncClient, call: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        await call(client)
    assert await nothing_stored(client.backend)


async def test_scheduled_job_waits_until_its_time(client: AsyncClient, clock: ManualClock) -> None:
    at = from_timestamp(clock() + 3600)
    by_time = await client.submit_job_scheduled("later", None, "normal", at)
    by_delta = await client.submit_job_scheduled("later", None, "normal", timedelta(minutes=30))
    by_seconds = await client.submit_job_scheduled("later", None, "normal", 90.5)
    jobs = {i: await client.get_job(i) for i in (by_time, by_delta, by_seconds)}
    assert {j.status for j in jobs.values()} == {JobStatus.SCHEDULED}
    assert jobs[by_time].scheduled_for == at
    assert jobs[by_delta].scheduled_for == from_timestamp(clock() + 1800)
    assert jobs[by_seconds].scheduled_for == from_timestamp(clock() + 90.5)
    queue = client.backend.queue
    assert await queue.move_scheduled() == 0
    clock.advance(91)
    assert await queue.move_scheduled() == 1
    assert [j.id for j in await queue.claim(["default"], limit=5)] == [by_seconds]


@pytest.mark.parametrize("when", ["past-datetime", "negative-delay", "zero"])
async def test_scheduling_in_the_past_runs_now(client: AsyncClient, clock: ManualClock, when: str) -> None:
    value: Any = {"past-datetime": from_timestamp(clock() - 10), "negative-delay": -5.0, "zero": 0}[when]
    job_id = await client.submit_job_scheduled("x", None, "normal", value)
    job = await client.get_job(job_id)
    assert job.status is JobStatus.PENDING
    assert job.scheduled_for is None
    assert (await client.backend.queue.depths()).total_ready == 1


async def test_aware_datetime_in_another_zone_is_understood(client: AsyncClient, clock: ManualClock) -> None:
    from zoneinfo import ZoneInfo

    at = from_timestamp(clock() + 7200).astimezone(ZoneInfo("Asia/Tokyo"))
    job = await client.get_job(await client.submit_job_scheduled("x", None, "normal", at))
    assert job.scheduled_for == at.astimezone(UTC)


async def test_get_job_of_unknown_id_raises_job_not_found(client: AsyncClient) -> None:
    with pytest.raises(JobNotFound, match="nope"):
        await client.get_job("nope")


async def test_get_result_is_none_until_stored(client: AsyncClient) -> None:
    job_id = await client.submit_job("x")
    assert await client.get_result(job_id) is None
    await client.backend.results.store(JobResult(job_id=job_id, status=JobStatus.COMPLETED, result=[1, 2]))
    result = await client.get_result(job_id)
    assert result is not None
    assert result.result == [1, 2]


async def test_submit_and_wait_returns_the_result_once_a_worker_stores_it(client: AsyncClient) -> None:
    backend = client.backend

    async def fake_worker() -> None:
        jobs: list[Job] = []
        while not jobs:
            await backend.queue.wait_for_work(["default"], 0.05)
            jobs = await backend.queue.claim(["default"])
        await backend.queue.complete(jobs[0])
        await backend.results.store(JobResult(job_id=jobs[0].id, status=JobStatus.COMPLETED, result=jobs[0].payload))

    worker = asyncio.ensure_future(fake_worker())
    result = await client.submit_and_wait("echo", {"hello": "world"}, "high", timeout=5)
    await worker
    assert result.is_success()
    assert result.result == {"hello": "world"}


async def test_submit_and_wait_times_out_with_the_library_timeout(client: AsyncClient) -> None:
    with pytest.raises(Timeout):
        await client.submit_and_wait("nobody_runs_this", timeout=0.1)
    assert (await client.backend.queue.depths()).total_ready == 1  # the job stays queued


async def test_submit_many_writes_in_batches_and_keeps_order(client: AsyncClient) -> None:
    batches: list[int] = []
    real = client.backend.queue.enqueue_many

    async def counting(jobs: Any) -> None:
        batches.append(len(jobs))
        await real(jobs)

    client.backend.queue.enqueue_many = counting  # type: ignore[method-assign]
    specs: list[Any] = [{"name": "n", "payload": i} for i in range(7)]
    specs.append(Job.create("prebuilt", "ready-made"))
    specs.append({"name": "routed", "routing_key": "gpu", "priority": "high"})
    ids = await client.submit_many(specs, batch_size=4)
    assert batches == [4, 4, 1]
    assert len(ids) == len(set(ids)) == 9
    assert [(await client.get_job(i)).payload for i in ids[:7]] == list(range(7))
    assert (await client.get_job(ids[8])).routing_key == "gpu"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"name": "x", "payload": {1}}, r"job #2: .*not JSON"),
        ({"payload": 1}, "job #2 has no 'name'"),
        ({"name": "x", "colour": "red"}, "job #2 has unknown field"),
        ({"name": "x", "routing_key": "no spaces"}, "job #2: invalid routing key"),
        ("just a string", "job #2 must be a Job or a mapping"),
    ],
)
async def test_submit_many_validates_everything_before_writing(client: AsyncClient, bad: Any, message: str) -> None:
    with pytest.raises(InvalidJob, match=message):
        await client.submit_many([{"name": "ok"}, {"name": "ok"}, bad, {"name": "ok"}])
    assert await nothing_stored(client.backend)


async def test_client_ttls_reach_the_backend(url: str) -> None:
    async with AsyncClient(url, result_success_ttl=timedelta(minutes=5), result_failure_ttl=60) as c:
        assert c.backend.options.result_success_ttl == 300
        assert c.backend.options.result_failure_ttl == 60


async def test_a_passed_in_backend_is_not_closed(url: str) -> None:
    backend = connect(url)
    async with AsyncClient(backend=backend) as c:
        await c.submit_job("x")
    assert (await backend.queue.depths()).total_ready == 1  # still usable
    with pytest.raises(TypeError, match="either a url or a backend"):
        AsyncClient(url, backend=backend)
    await backend.close()


async def test_closed_client_refuses_work(url: str) -> None:
    c = AsyncClient(url)
    await c.close()
    await c.close()
    with pytest.raises(RuntimeError, match="closed"):
        await c.submit_job("x")


async def test_client_uses_bananas_url_when_no_url_is_given(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("BANANAS_URL", url)
    async with AsyncClient() as c:
        job_id = await c.submit_job("x")
    async with AsyncClient(url) as c:
        assert (await c.get_job(job_id)).name == "x"


# -- the synchronous client --------------------------------------------------------------------


def test_sync_client_round_trip(url: str) -> None:
    with Client(url) as c:
        job_id = c.submit_job("x", {"a": 1}, "low", "desc")
        routed = c.submit_job_with_route("x", None, "high", "gpu")
        later = c.submit_job_scheduled("x", None, "normal", timedelta(hours=1))
        many = c.submit_many([{"name": "y"}, {"name": "z"}])
        assert c.get_job(job_id).payload == {"a": 1}
        assert c.get_job(routed).routing_key == "gpu"
        assert c.get_job(later).status is JobStatus.SCHEDULED
        assert [c.get_job(i).name for i in many] == ["y", "z"]
        assert c.get_result(job_id) is None
        with pytest.raises(Timeout):
            c.submit_and_wait("x", timeout=0.05)
        with pytest.raises(PayloadError):
            c.submit_job("x", {1})
        assert c.backend.name == "memory"
    with pytest.raises(RuntimeError, match="closed"):
        c.submit_job("x")


def test_sync_client_is_safe_from_many_threads(url: str) -> None:
    ids: list[str] = []
    errors: list[BaseException] = []
    with Client(url) as c:

        def submit() -> None:
            try:
                for _ in range(20):
                    ids.append(c.submit_job("t"))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=submit) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert len(set(ids)) == 160
        assert all(c.get_job(i).name == "t" for i in ids)


async def test_sync_client_works_inside_a_running_event_loop(url: str) -> None:
    with Client(url) as c:  # e.g. called from sync code that an async app runs
        assert c.get_job(c.submit_job("x")).name == "x"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sync_client_works_after_fork(url: str) -> None:
    with Client(url) as c:
        parent_job = c.submit_job("before-fork")
        pid = os.fork()
        if pid == 0:  # the child: its own loop thread and connections, on first use
            code = 1
            try:
                child_job = c.submit_job("in-child")
                code = 0 if c.get_job(child_job).name == "in-child" else 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert c.get_job(parent_job).name == "before-fork"  # the parent's client still works


def test_sync_client_with_a_bad_url_fails_at_once() -> None:
    from bananas import UnknownBackendScheme

    with pytest.raises(UnknownBackendScheme, match="nosuch://"):
        Client("nosuch://host")


# -- compatibility with the original SDK ----------------------------------------------------


async def test_timeouts_accept_a_timedelta(client: AsyncClient) -> None:
    with pytest.raises(Timeout):
        await client.submit_and_wait("nobody_runs_this", timeout=timedelta(milliseconds=50))
    job_id = await client.submit_job("x")
    with pytest.raises(Timeout):
        await client.wait_for_result(job_id, timedelta(milliseconds=50))
    with pytest.raises(ValueError, match="timeout"):
        await client.wait_for_result(job_id, timedelta(seconds=-1))


def test_sync_submit_and_wait_accepts_a_timedelta(url: str) -> None:
    with Client(url) as client, pytest.raises(Timeout):
        client.submit_and_wait("nobody_runs_this", timeout=timedelta(milliseconds=50))


async def test_ttls_accept_timedelta_and_the_original_names(url: str) -> None:
    async with AsyncClient(url, result_success_ttl=timedelta(hours=2), failure_ttl=timedelta(days=2)) as client:
        assert client.backend.options.result_success_ttl == 7200.0
        assert client.backend.options.result_failure_ttl == 172800.0
    async with AsyncClient(url, success_ttl=60) as client:
        assert client.backend.options.result_success_ttl == 60
    with pytest.raises(TypeError, match="not both"):
        AsyncClient(url, success_ttl=60, result_success_ttl=60)


@pytest.mark.parametrize("cls", [AsyncClient, Client])
def test_unknown_keyword_arguments_are_an_error_naming_the_accepted_ones(url: str, cls: Any) -> None:
    with pytest.raises(
        TypeError, match=r"unknown option\(s\) sucess_ttl for the memory backend; accepted: .*namespace"
    ):
        cls(url, sucess_ttl=5)


def test_connect_refuses_unknown_keywords_but_not_url_query_or_extra(url: str) -> None:
    with pytest.raises(TypeError, match="retry_fro"):
        connect(url, retry_fro=3)
    assert connect(url + "?anything=1").options.extra["anything"] == "1"
    assert connect(url, extra={"anything": 1}).options.extra["anything"] == 1
    assert connect(url, connect_timeout=timedelta(seconds=2)).options.extra["connect_timeout"] == 2.0


async def test_keyword_options_with_a_passed_in_backend_are_refused(url: str) -> None:
    backend = connect(url)
    with pytest.raises(TypeError, match="result_success_ttl cannot be used with backend="):
        AsyncClient(backend=backend, result_success_ttl=5)
    await backend.close()


async def test_submit_job_takes_a_routing_key(client: AsyncClient) -> None:
    job_id = await client.submit_job("resize", {"url": "x"}, routing_key="gpu")
    assert (await client.get_job(job_id)).routing_key == "gpu"
    with pytest.raises(InvalidRoutingKey):
        await client.submit_job("resize", routing_key="no spaces")


def test_sync_submit_job_takes_a_routing_key(url: str) -> None:
    with Client(url) as client:
        assert client.get_job(client.submit_job("resize", routing_key="gpu")).routing_key == "gpu"


async def test_max_retries_default_comes_from_the_environment(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_RETRIES", "7")
    async with AsyncClient(url) as client:
        assert (await client.get_job(await client.submit_job("x"))).max_retries == 7
        assert (await client.get_job(await client.submit_job("x", max_retries=1))).max_retries == 1
        [spec_id] = await client.submit_many([{"name": "x"}])
        assert (await client.get_job(spec_id)).max_retries == 7
    monkeypatch.setenv("MAX_RETRIES", "lots")
    with pytest.raises(ConfigError, match="MAX_RETRIES='lots'"):
        AsyncClient(url)


@dataclasses.dataclass
class Email:
    to: str
    tags: list[str]


@attrs.define
class Resize:
    width: int
    email: Email


async def test_dataclass_and_attrs_payloads_round_trip_through_payload_as(client: AsyncClient) -> None:
    job = await client.get_job(await client.submit_job("send", Email("a@example.com", ["x"])))
    assert job.payload == {"to": "a@example.com", "tags": ["x"]}
    assert job.payload_as(Email) == Email("a@example.com", ["x"])
    nested = Resize(3, Email("b@example.com", []))
    job = await client.get_job(await client.submit_job("resize", nested))
    assert job.payload_as(Resize) == nested
    with pytest.raises(PayloadError):
        await client.submit_job("send", object())


async def test_a_registry_makes_unknown_job_names_handler_not_found(url: str) -> None:
    registry = Registry()

    @registry.handler("known")
    async def known(ctx: Any, job: Job) -> None:
        return None

    async with AsyncClient(url, registry=registry) as client:
        await client.submit_job("known")
        with pytest.raises(HandlerNotFound, match="'unknown'"):
            await client.submit_job("unknown")
        assert (await client.backend.queue.depths()).total_ready == 1


async def test_get_result_strict_raises_not_found_and_not_ready(client: AsyncClient) -> None:
    with pytest.raises(JobNotFound):
        await client.get_result("nope", missing_ok=False)
    job_id = await client.submit_job("x")
    with pytest.raises(ResultNotReady, match="status: pending"):
        await client.get_result(job_id, missing_ok=False)
    assert await client.get_result(job_id) is None
    await client.backend.results.store(JobResult(job_id=job_id, status=JobStatus.COMPLETED, result=1))
    result = await client.get_result(job_id, missing_ok=False)
    assert result is not None and result.result == 1

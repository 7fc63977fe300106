"""Per-job timeouts: submit_job(timeout=...) overrides the worker's job timeout for that job."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from bananas import AsyncClient, Backend, Client, InvalidJob, Job, JobStatus, connect
from bananas.timeouts import with_timeout
from bananas.worker import Executor, JobContext, Registry
from hypothesis import given, settings
from hypothesis import strategies as st


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = connect(f"memory://timeouts-{uuid.uuid4().hex}")
    yield b
    await b.close()


def _registry() -> Registry:
    registry = Registry()

    async def nap(ctx: JobContext, job: Job) -> str:
        await asyncio.sleep(job.payload["seconds"])
        return "rested"

    registry.register("nap", nap)
    return registry


async def _outcome(backend: Backend, job: Job, worker_timeout: float) -> Job:
    await backend.queue.enqueue(job)
    [claimed] = await backend.queue.claim(["default"])
    executor = Executor(_registry(), backend.queue, 2, clock=backend.clock)
    executor.set_result_backend(backend.results)
    outcome = await executor.run(claimed, timeout=worker_timeout)  # as the worker pool calls it
    stored = await executor.record(claimed, outcome)
    assert stored is not None
    return stored


@pytest.mark.anyio
async def test_a_shorter_job_timeout_cuts_the_handler_off(backend: Backend) -> None:
    job = with_timeout(Job.create("nap", {"seconds": 30}), 0.2)
    stored = await _outcome(backend, job, worker_timeout=60)
    assert stored.status is JobStatus.PENDING and stored.error.startswith("Timeout")
    assert "0.2s" in stored.error


@pytest.mark.anyio
async def test_a_longer_job_timeout_lets_the_handler_finish(backend: Backend) -> None:
    job = with_timeout(Job.create("nap", {"seconds": 0.5}), 30)
    stored = await _outcome(backend, job, worker_timeout=0.1)
    assert stored.status is JobStatus.COMPLETED


@pytest.mark.anyio
async def test_without_its_own_timeout_the_worker_timeout_applies(backend: Backend) -> None:
    stored = await _outcome(backend, Job.create("nap", {"seconds": 30}), worker_timeout=0.2)
    assert stored.status is JobStatus.PENDING and "0.2s" in stored.error


@pytest.mark.anyio
@pytest.mark.parametrize("written", ["soon", -5, 0, 1e12, True])
async def test_an_unusable_stored_timeout_is_ignored_and_logged(
    backend: Backend, caplog: pytest.LogCaptureFixture, written: object
) -> None:
    """A record written elsewhere with a timeout no worker can use runs with the worker's."""
    job = Job.from_json(json.dumps(json.loads(Job.create("nap", {"seconds": 30}).to_json()) | {"timeout": written}))
    with caplog.at_level(logging.WARNING, "bananas.worker"):
        stored = await _outcome(backend, job, worker_timeout=0.2)
    assert "0.2s" in stored.error
    assert "its own timeout is ignored" in caplog.text


def test_every_submit_path_stores_the_timeout() -> None:
    url = f"memory://timeouts-{uuid.uuid4().hex}"
    with Client(url) as client:
        ids = [
            client.submit_job("nap", timeout=5),
            client.submit_job_with_route("nap", None, "normal", "default", timeout=timedelta(minutes=1)),
            client.submit_job_scheduled("nap", None, "normal", 30, timeout=2.5),
            *client.submit_many([{"name": "nap", "timeout": 7}, {"name": "nap"}]),
        ]
        stored = [json.loads(client.get_job(job_id).to_json()).get("timeout") for job_id in ids]
    assert stored == [5, 60, 2.5, 7, None]


@settings(max_examples=30, deadline=None)
@given(
    timeout=st.one_of(
        st.floats(max_value=0),
        st.just(math.nan),
        st.just(math.inf),
        st.floats(min_value=7 * 24 * 3600 + 1, allow_infinity=False),
        st.text(max_size=3),
        st.booleans(),
    )
)
def test_an_unusable_timeout_is_refused_before_writing(timeout: object) -> None:
    async def check() -> None:
        async with AsyncClient(f"memory://timeouts-{uuid.uuid4().hex}") as client:
            with pytest.raises(InvalidJob, match="timeout must be"):
                await client.submit_job("nap", timeout=timeout)  # type: ignore[arg-type]
            with pytest.raises(InvalidJob, match="job #0: timeout must be"):
                await client.submit_many([{"name": "nap", "timeout": timeout}])
            assert (await client.backend.queue.depths()).total_ready == 0

    asyncio.run(check())


def test_the_command_line_takes_a_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    from bananas.cli import main

    url = f"memory://timeouts-{uuid.uuid4().hex}"
    assert main(["submit", "nap", "--timeout", "90", "--url", url]) == 0
    job_id = capsys.readouterr().out.strip()

    async def stored() -> object:
        async with connect(url) as backend:
            return json.loads((await backend.queue.get_job(job_id)).to_json()).get("timeout")

    assert asyncio.run(stored()) == 90
    assert main(["submit", "nap", "--timeout", "9999999", "--url", url]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "--timeout must be" in err[0] and "a week" in err[0], err

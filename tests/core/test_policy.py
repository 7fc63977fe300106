"""bananas.policy: the one retry rule, the record helpers, and the worker telling the queue its decision."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bananas import Backend, InvalidJob, Job, JobStatus, ManualClock, Registry, connect, policy
from bananas.job import MAX_BACKOFF_EXPONENT
from bananas.policy import BY_POLICY, LEASE_EXPIRED_ERROR, RetryAt
from bananas.worker import Executor, JobContext
from hypothesis import given
from hypothesis import strategies as st

NOW = 1_750_000_000.0

attempts_and_retries = st.integers(min_value=0, max_value=120).flatmap(
    lambda attempts: st.tuples(st.just(attempts), st.integers(min_value=0, max_value=100))
)


def claimed_job(attempts: int, max_retries: int) -> Job:
    return Job.create("task", None, max_retries=max_retries).evolve(
        status=JobStatus.PROCESSING, attempts=attempts, lease_token="claim-1"
    )


@given(attempts_and_retries)
def test_next_retry_backs_off_while_retries_remain(pair: tuple[int, int]) -> None:
    attempts, max_retries = pair
    when = policy.next_retry(claimed_job(attempts, max_retries), NOW)
    if attempts + 1 < max_retries:
        exponent = min(attempts + 1, MAX_BACKOFF_EXPONENT)
        assert when == datetime.fromtimestamp(NOW + 2**exponent, UTC)
    else:
        assert when is None


@given(attempts_and_retries)
def test_lease_expired_is_ready_at_once_or_dead(pair: tuple[int, int]) -> None:
    attempts, max_retries = pair
    job = claimed_job(attempts, max_retries)
    record = policy.lease_expired(job, NOW)
    retried = attempts + 1 < max_retries
    assert policy.retries_left(job) is retried
    assert (record.status, record.attempts, record.error, record.scheduled_for, record.lease_token) == (
        JobStatus.PENDING if retried else JobStatus.FAILED, attempts + 1, LEASE_EXPIRED_ERROR, None, ""
    )  # fmt: skip


@pytest.mark.parametrize(
    ("retry_at", "status", "scheduled_for"),
    [
        (datetime(2030, 1, 1, tzinfo=UTC), JobStatus.PENDING, datetime(2030, 1, 1, tzinfo=UTC)),
        (None, JobStatus.FAILED, None),
        (BY_POLICY, JobStatus.PENDING, datetime.fromtimestamp(NOW + 2, UTC)),
    ],
)
def test_failed_attempt_stores_the_decision(
    retry_at: RetryAt, status: JobStatus, scheduled_for: datetime | None
) -> None:
    record = policy.failed_attempt(claimed_job(0, 3), "boom", NOW, retry_at)
    assert (record.status, record.attempts, record.error, record.scheduled_for) == (status, 1, "boom", scheduled_for)
    assert record.updated_at == datetime.fromtimestamp(NOW, UTC)
    assert record.lease_token == ""


def test_failed_attempt_with_a_time_ignores_the_retries_left() -> None:
    later = datetime(2030, 1, 1, tzinfo=UTC)
    assert policy.failed_attempt(claimed_job(7, 1), "x", NOW, later).scheduled_for == later
    assert policy.failed_attempt(claimed_job(0, 100), "x", NOW, None).status is JobStatus.FAILED


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (datetime(2030, 1, 1), "retry_at"),  # naive: no time zone
        (datetime(1960, 1, 1, tzinfo=UTC), "retry_at"),  # before the epoch
        (12.5, "aware datetime or None"),
        ("tomorrow", "aware datetime or None"),
    ],
)
def test_a_bad_retry_at_is_refused(bad: Any, message: str) -> None:
    with pytest.raises(InvalidJob, match=message):
        policy.decide_retry(claimed_job(0, 3), bad, NOW)


def test_other_records() -> None:
    job = claimed_job(2, 3).evolve(scheduled_for=datetime(2030, 1, 1, tzinfo=UTC))
    done = policy.completed(job, NOW)
    assert (done.status, done.attempts, done.scheduled_for, done.lease_token) == (JobStatus.COMPLETED, 2, None, "")
    back = policy.released(job, NOW)
    assert (back.status, back.attempts, back.lease_token) == (JobStatus.PENDING, 2, "")
    assert done.updated_at == back.updated_at == datetime.fromtimestamp(NOW, UTC)


# -- the worker decides; the queue stores -------------------------------------------------


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = connect(f"memory://policy-{uuid.uuid4().hex}", clock=ManualClock(NOW))
    yield b
    await b.close()


class Recording:
    """Wraps a queue and records what ``fail`` was told."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue
        self.told: list[RetryAt] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)

    async def fail(self, job: Job, error: str, *, retry_at: RetryAt = BY_POLICY) -> Job:
        self.told.append(retry_at)
        return await self._queue.fail(job, error, retry_at=retry_at)


@pytest.mark.anyio
@pytest.mark.parametrize("max_retries", [0, 1, 2, 5])
async def test_the_worker_tells_fail_the_core_decision(backend: Backend, max_retries: int) -> None:
    registry = Registry()

    @registry.handler("broken")
    async def broken(ctx: JobContext, job: Job) -> None:
        raise ValueError("nope")

    await backend.queue.enqueue(Job.create("broken", None, max_retries=max_retries))
    [job] = await backend.queue.claim(["default"])
    queue = Recording(backend.queue)
    executor = Executor(registry, queue, 1, clock=backend.clock)  # type: ignore[arg-type]
    executor.set_result_backend(backend.results)
    stored = await executor.execute_job(job)
    expected = policy.next_retry(job, backend.clock())
    assert queue.told == [expected], "the worker must pass the core's decision, not leave it to the backend"
    assert stored is not None and stored.scheduled_for == expected
    result = await backend.results.get(job.id)
    if expected is None:  # a result only on a final state
        assert result is not None and result.status is JobStatus.FAILED
    else:
        assert result is None
        assert expected == datetime.fromtimestamp(NOW, UTC) + timedelta(seconds=2)

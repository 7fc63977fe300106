"""The conformance suite: :class:`BackendConformance`, every contract test in one base class.

Subclass it in a test module (the class name must start with ``Test``) and point it at
your backend, by URL or by factory::

    from bananas.testing.suite import BackendConformance

    class TestMyBackend(BackendConformance):
        bananas_url = "mine://localhost/0"

Test names are stable, so you can list known failures with ``pytest.mark.xfail`` in your
subclass (override the method and decorate it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bananas.clock import ManualClock
from bananas.job import JSON, Job, JobResult
from bananas.testing import stateful, strategies
from bananas.testing.plugin import BackendFactory, RecordOverwriter, overwrite_memory_record
from bananas.testing.suite._helpers import new_job
from bananas.testing.suite.cancel import CancelTests
from bananas.testing.suite.checkpoints import CheckpointTests
from bananas.testing.suite.extras import (
    BlockingEnqueueTests,
    CapabilityTests,
    CronTests,
    WakeupTests,
    WorkerRegistryTests,
)
from bananas.testing.suite.fencing import FencingTests, PoisonRecordTests
from bananas.testing.suite.groups import GroupTests
from bananas.testing.suite.lifecycle import CompleteFailTests, DeadLetterTests, ScheduledTests
from bananas.testing.suite.namespaces import NamespaceTests
from bananas.testing.suite.optional import CompleteAndStoreTests, HandOffTests, OptionalProtocolTests
from bananas.testing.suite.policy import ReaperRuleTests, RetryDecisionTests
from bananas.testing.suite.queue import ClaimTests, EnqueueTests, LeaseTests
from bananas.testing.suite.results import ResultTests, ResultTTLTests
from bananas.testing.suite.timeouts import JobTimeoutTests
from bananas.testing.suite.unique import UniqueJobTests, UniquePropertyTests
from bananas.testing.suite.workflow_cancel import WorkflowCancelTests, WorkflowExpiryTests
from bananas.testing.suite.workflows import WorkflowCapabilityTests, WorkflowTests

__all__ = ["BackendConformance"]

# One test method runs on every backend class of a session (differing executors); no
# example database, so nothing is replayed across them.
_PROPERTY_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors],
)


class PropertyTests:
    """Hypothesis: every JSON payload and result survives; the queue matches a model."""

    stateful_settings: ClassVar[settings] = stateful.DEFAULT_SETTINGS
    """Settings of :meth:`test_state_machine`; override for more (or fewer) examples and steps."""

    @_PROPERTY_SETTINGS
    @given(payloads=st.lists(strategies.json_values(), min_size=1, max_size=4))
    def test_payload_round_trip(self, bananas_backend_factory: BackendFactory, payloads: list[JSON]) -> None:
        async def check() -> None:
            clock = ManualClock()
            async with bananas_backend_factory(clock) as backend:
                jobs = [new_job(clock, payload=p) for p in payloads]
                await backend.queue.enqueue_many(jobs)
                for job in jobs:
                    assert (await backend.queue.get_job(job.id)).payload == job.payload
                claimed = await backend.queue.claim(["default"], limit=len(jobs))
                assert [j.payload for j in claimed] == payloads

        _run(check())

    @_PROPERTY_SETTINGS
    @given(job=strategies.jobs())
    def test_job_fields_round_trip(self, bananas_backend_factory: BackendFactory, job: Job) -> None:
        async def check() -> None:
            async with bananas_backend_factory(ManualClock()) as backend:
                await backend.queue.enqueue(job)
                stored = await backend.queue.get_job(job.id)
                assert stored.to_dict() == job.to_dict()

        _run(check())

    @_PROPERTY_SETTINGS
    @given(result=strategies.job_results())
    def test_result_values_round_trip(self, bananas_backend_factory: BackendFactory, result: JobResult) -> None:
        async def check() -> None:
            async with bananas_backend_factory(ManualClock()) as backend:
                await backend.results.store(result)
                assert await backend.results.get(result.job_id) == result

        _run(check())

    def test_state_machine(
        self, bananas_backend_factory: BackendFactory, bananas_overwrite_record: RecordOverwriter
    ) -> None:
        overwrite: RecordOverwriter | None = bananas_overwrite_record
        if overwrite is overwrite_memory_record and _backend_name(bananas_backend_factory) != "memory":
            overwrite = None  # no way to plant a poison record here: the machine runs without them
        stateful.run_state_machine(bananas_backend_factory, self.stateful_settings, overwrite)


def _backend_name(factory: BackendFactory) -> str:
    backend = factory(ManualClock())
    _run(backend.close())
    return backend.name


def _run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


@pytest.mark.anyio
class BackendConformance(
    EnqueueTests,
    ClaimTests,
    LeaseTests,
    FencingTests,
    PoisonRecordTests,
    NamespaceTests,
    HandOffTests,
    CompleteAndStoreTests,
    OptionalProtocolTests,
    UniqueJobTests,
    UniquePropertyTests,
    JobTimeoutTests,
    CompleteFailTests,
    RetryDecisionTests,
    ReaperRuleTests,
    ScheduledTests,
    DeadLetterTests,
    ResultTests,
    ResultTTLTests,
    CronTests,
    WorkerRegistryTests,
    WakeupTests,
    BlockingEnqueueTests,
    CapabilityTests,
    WorkflowTests,
    WorkflowCapabilityTests,
    WorkflowCancelTests,
    WorkflowExpiryTests,
    CheckpointTests,
    CancelTests,
    GroupTests,
    PropertyTests,
):
    """Every contract of :mod:`bananas.protocols`, for one backend.

    Point it at the backend by setting ``bananas_url``, or by overriding the
    ``bananas_url`` or ``bananas_backend_factory`` fixture (see :mod:`bananas.testing.plugin`).
    """

    bananas_url: ClassVar[str | None] = None

    @pytest.fixture(params=["asyncio"])
    def anyio_backend(self, request: pytest.FixtureRequest) -> str:
        """The suite runs on asyncio, as backends do (anyio before 4.12 would run it on trio too)."""
        return str(request.param)

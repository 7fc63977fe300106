"""The conformance suite catches broken backends: deliberately broken memory:// variants fail
the tests (and the state machine) that guard the broken contract, by name."""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

VARIANTS = '''
from bananas.backend import BackendOptions
from bananas.backends import memory
from bananas.capabilities import Capability
from bananas.job import JobPriority
from bananas.testing.stateful import DEFAULT_SETTINGS
from bananas.testing.suite import BackendConformance
from hypothesis import Phase, settings
import pytest

NO_SHRINKING = settings(DEFAULT_SETTINGS, phases=[Phase.generate])


class PriorityBlindStore(memory.MemoryStore):
    """Ignores priority: one FIFO line per routing key."""

    def push_ready(self, job, *, front=False):
        line = self.ready.setdefault((job.routing_key, JobPriority.NORMAL), __import__("collections").deque())
        line.appendleft(job.id) if front else line.append(job.id)


class LosesReapedJobs(memory.MemoryQueue):
    """reap_expired forgets the jobs whose lease ran out instead of retrying them."""

    async def reap_expired(self):
        s = self._store
        with s.lock:
            now = self._now()
            expired = [i for i, deadline in s.processing.items() if deadline <= now]
            for job_id in expired:
                del s.processing[job_id]
        return len(expired)


class DoubleClaims(memory.MemoryQueue):
    """A claimed job stays claimable."""

    async def claim(self, routing_keys, priorities=tuple(JobPriority), **kwargs):
        jobs = await super().claim(routing_keys, priorities, **kwargs)
        with self._store.lock:
            for job in jobs:
                self._store.push_ready(job, front=True)
        return jobs


class RetriesEarly(memory.MemoryQueue):
    """Failed jobs are retried at once, without the 2**attempts backoff."""

    async def fail(self, job, error):
        stored = await super().fail(job, error)
        with self._store.lock:
            if job.id in self._store.scheduled:
                self._store.scheduled[job.id] = self._now()
        return stored


class IgnoresNameFilter(memory.MemoryQueue):
    """Does not declare job_name_filter, yet silently ignores job_names instead of raising."""

    async def claim(self, routing_keys, priorities=tuple(JobPriority), *, job_names=None, **kwargs):
        return await super().claim(routing_keys, priorities, **kwargs)


def factory_of(store_class=memory.MemoryStore, queue_class=memory.MemoryQueue, capabilities=memory.CAPABILITIES):
    @pytest.fixture
    def bananas_backend_factory(self):
        def make(clock, **options):
            return memory.memory_backend(store_class(), BackendOptions(clock=clock, **options),
                                         queue_class=queue_class, capabilities=capabilities)
        return make
    return bananas_backend_factory


class TestCorrect(BackendConformance):
    bananas_backend_factory = factory_of()


class TestPriorityBlind(BackendConformance):
    stateful_settings = NO_SHRINKING
    bananas_backend_factory = factory_of(store_class=PriorityBlindStore)


class TestLosesReaped(BackendConformance):
    stateful_settings = NO_SHRINKING
    bananas_backend_factory = factory_of(queue_class=LosesReapedJobs)


class TestDoubleClaims(BackendConformance):
    stateful_settings = NO_SHRINKING
    bananas_backend_factory = factory_of(queue_class=DoubleClaims)


class TestRetriesEarly(BackendConformance):
    stateful_settings = NO_SHRINKING
    bananas_backend_factory = factory_of(queue_class=RetriesEarly)


class TestNoCronNoNameFilter(BackendConformance):
    stateful_settings = NO_SHRINKING
    bananas_backend_factory = factory_of(
        queue_class=IgnoresNameFilter,
        capabilities=memory.CAPABILITIES - {Capability.CRON, Capability.JOB_NAME_FILTER},
    )
'''

SELECTED = [
    "test_claim_strict_priority",
    "test_lease_expired_job_is_claimed_again",
    "test_no_double_claim",
    "test_fail_retry_not_claimable_before_backoff",
    "test_state_machine",
    "test_cron_fire_once_per_tick",
    "test_claim_job_names_filter",
    "test_without_cron_scheduler_raises",
    "test_without_job_name_filter_claim_raises",
]

EXPECTED_FAILURES = {
    "TestCorrect": set(),
    "TestPriorityBlind": {"test_claim_strict_priority", "test_state_machine"},
    "TestLosesReaped": {"test_lease_expired_job_is_claimed_again", "test_state_machine"},
    "TestDoubleClaims": {
        "test_no_double_claim", "test_no_double_claim_concurrent_claimers", "test_state_machine",
        "test_claim_strict_priority", "test_claim_job_names_filter",  # their drain() sees a job claimed twice
    },
    "TestRetriesEarly": {"test_fail_retry_not_claimable_before_backoff", "test_state_machine"},
    "TestNoCronNoNameFilter": {"test_without_job_name_filter_claim_raises"},
}


def run_variants(pytester: pytest.Pytester) -> dict[str, dict[str, str]]:
    """``{class: {test: outcome}}`` of the selected suite tests on every variant."""
    pytester.makepyfile(test_variants=textwrap.dedent(VARIANTS))
    reprec = pytester.inline_run("-p", "no:cacheprovider", "-k", " or ".join(SELECTED))
    result: dict[str, dict[str, str]] = {}
    for report in reprec.getreports("pytest_runtest_logreport"):
        if report.when == "call" or report.outcome != "passed":
            _, cls, test = report.nodeid.split("::")
            result.setdefault(cls, {})[test.split("[")[0]] = report.outcome
    return result


def test_suite_fails_exactly_where_a_variant_is_broken(pytester: pytest.Pytester) -> None:
    outcomes = run_variants(pytester)
    failed = {
        variant: {test for test, outcome in outcomes[variant].items() if outcome == "failed"}
        for variant in EXPECTED_FAILURES
    }
    assert failed == EXPECTED_FAILURES
    # an undeclared capability's tests are skipped, never passed; its "raises" check runs instead
    no_cron = outcomes["TestNoCronNoNameFilter"]
    assert no_cron["test_cron_fire_once_per_tick"] == "skipped"
    assert no_cron["test_claim_job_names_filter"] == "skipped"
    assert no_cron["test_without_cron_scheduler_raises"] == "passed"
    assert outcomes["TestCorrect"]["test_without_cron_scheduler_raises"] == "skipped"
    assert outcomes["TestCorrect"]["test_state_machine"] == "passed"

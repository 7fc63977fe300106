"""The conformance suite catches broken backends.

Deliberately broken memory:// variants are installed as a plugin distribution of their own
(a ``bananas`` entry point serving one URL scheme per variant), the suite is run against
each URL exactly as a third party would, and the tests (and state machine) guarding the
broken contract must fail, by name, while the others pass.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from broken_backends import failed, install_plugin, run_suite

pytest_plugins = ["pytester"]

BROKEN_PLUGIN = '''
"""Broken variants of memory://, each under its own URL scheme."""

import collections

from bananas import policy
from bananas.backends import memory
from bananas.capabilities import Capability
from bananas.job import JobPriority, JobStatus
from bananas.plugins import BackendSpec, hookimpl


class PriorityBlindStore(memory.MemoryStore):
    """Ignores priority: one FIFO line per routing key."""

    def push_ready(self, job, *, front=False):
        line = self.ready.setdefault((job.routing_key, JobPriority.NORMAL), collections.deque())
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


class ReapsToDead(memory.MemoryQueue):
    """reap_expired sends every job it takes back to the dead letter queue, retries left or not."""

    async def reap_expired(self):
        s = self._store
        with s.lock:
            now = self._now()
            expired = [i for i, deadline in s.processing.items() if deadline <= now]
            for job_id in expired:
                s.unlink(job_id)
                dead = policy.lease_expired(s.load(job_id), now).evolve(status=JobStatus.FAILED)
                self._store_failed(dead, now)
        return len(expired)


class ReapsWithoutResult(memory.MemoryQueue):
    """reap_expired applies the rule but stores no failed result for the jobs it kills."""

    async def reap_expired(self):
        before = set(self._store.results)
        reaped = await super().reap_expired()
        for job_id in set(self._store.results) - before:
            del self._store.results[job_id]
        return reaped


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

    async def fail(self, job, error, **decision):
        stored = await super().fail(job, error, **decision)
        with self._store.lock:
            if job.id in self._store.scheduled:
                self._store.scheduled[job.id] = self._now()
        return stored


class IgnoresRetryAt(memory.MemoryQueue):
    """fail ignores the retry time (or dead letter) its caller decided and applies its own rule."""

    async def fail(self, job, error, **decision):
        return await super().fail(job, error)


class IgnoresNameFilter(memory.MemoryQueue):
    """Does not declare job_name_filter, yet silently ignores job_names instead of raising."""

    async def claim(self, routing_keys, priorities=tuple(JobPriority), *, job_names=None, **kwargs):
        return await super().claim(routing_keys, priorities, **kwargs)


class HandsNothingOver(memory.MemoryQueue):
    """claim_or_wait only ever waits: it never returns a job, not even a ready one."""

    async def claim_or_wait(self, routing_keys, priorities=tuple(JobPriority), *, waiter, timeout, **kwargs):
        return []


class ForgetsTheResult(memory.MemoryQueue):
    """complete_and_store completes the job but drops its result."""

    async def complete_and_store(self, job, result):
        return await self.complete(job)


NO_CRON_NO_FILTER = memory.CAPABILITIES - {Capability.CRON, Capability.JOB_NAME_FILTER}
VARIANTS = {
    "broken-priority": (PriorityBlindStore, memory.MemoryQueue, memory.CAPABILITIES),
    "broken-reap": (memory.MemoryStore, LosesReapedJobs, memory.CAPABILITIES),
    "broken-double": (memory.MemoryStore, DoubleClaims, memory.CAPABILITIES),
    "broken-reap-rule": (memory.MemoryStore, ReapsToDead, memory.CAPABILITIES),
    "broken-reap-result": (memory.MemoryStore, ReapsWithoutResult, memory.CAPABILITIES),
    "broken-retry": (memory.MemoryStore, RetriesEarly, memory.CAPABILITIES),
    "broken-retry-at": (memory.MemoryStore, IgnoresRetryAt, memory.CAPABILITIES),
    "broken-caps": (memory.MemoryStore, IgnoresNameFilter, NO_CRON_NO_FILTER),
    "broken-handoff": (memory.MemoryStore, HandsNothingOver, memory.CAPABILITIES),
    "broken-combined": (memory.MemoryStore, ForgetsTheResult, memory.CAPABILITIES),
}


def connect(url, options):
    """A fresh store per connection (the suite connects once per namespace)."""
    store_class, queue_class, capabilities = VARIANTS[url.split("://")[0]]
    return memory.memory_backend(store_class(), options, url=url, queue_class=queue_class, capabilities=capabilities)


@hookimpl
def bananas_backends():
    return [BackendSpec(name=scheme, schemes=(scheme,), factory=connect, capabilities=caps)
            for scheme, (_, _, caps) in VARIANTS.items()]
'''

SUITE_RUNS = """
from bananas.plugins import reload_plugins
from bananas.testing.stateful import DEFAULT_SETTINGS
from bananas.testing.suite import BackendConformance
from hypothesis import Phase, settings

reload_plugins()  # pick up the broken-bananas distribution installed next to this file
NO_SHRINKING = settings(DEFAULT_SETTINGS, phases=[Phase.generate])


class TestCorrect(BackendConformance):
    bananas_url = "memory://"


class TestPriorityBlind(BackendConformance):
    bananas_url = "broken-priority://"
    stateful_settings = NO_SHRINKING


class TestLosesReaped(BackendConformance):
    bananas_url = "broken-reap://"
    stateful_settings = NO_SHRINKING


class TestReapsToDead(BackendConformance):
    bananas_url = "broken-reap-rule://"
    stateful_settings = NO_SHRINKING


class TestReapsWithoutResult(BackendConformance):
    bananas_url = "broken-reap-result://"


class TestDoubleClaims(BackendConformance):
    bananas_url = "broken-double://"
    stateful_settings = NO_SHRINKING


class TestRetriesEarly(BackendConformance):
    bananas_url = "broken-retry://"
    stateful_settings = NO_SHRINKING


class TestIgnoresRetryAt(BackendConformance):
    bananas_url = "broken-retry-at://"
    stateful_settings = NO_SHRINKING


class TestNoCronNoNameFilter(BackendConformance):
    bananas_url = "broken-caps://"
    stateful_settings = NO_SHRINKING


class TestHandsNothingOver(BackendConformance):
    bananas_url = "broken-handoff://"


class TestForgetsTheResult(BackendConformance):
    bananas_url = "broken-combined://"
"""

SELECTED = [
    "test_claim_strict_priority",
    "test_lease_expired_job_is_claimed_again",
    "test_no_double_claim",
    "test_fail_retry_not_claimable_before_backoff",
    "test_fail_retry_at_retries_even_without_retries_left",
    "test_fail_retry_at_is_the_time_given_not_the_backoff",
    "test_fail_none_is_dead_with_retries_left",
    "test_attempts_and_error_recorded_on_every_decision",
    "test_by_policy_is_the_core_rule",
    "test_reaped_record_is_the_core_rule",
    "test_reaped_to_dead_has_a_failed_result",
    "test_state_machine",
    "test_cron_fire_once_per_tick",
    "test_claim_job_names_filter",
    "test_without_cron_scheduler_raises",
    "test_without_job_name_filter_claim_raises",
    "test_claim_or_wait_claims_what_is_ready",
    "test_completes_and_stores_together",
]

EXPECTED_FAILURES = {
    "TestCorrect": set(),
    "TestPriorityBlind": {"test_claim_strict_priority", "test_state_machine"},
    "TestLosesReaped": {
        "test_lease_expired_job_is_claimed_again",
        "test_reaped_record_is_the_core_rule",
        "test_reaped_to_dead_has_a_failed_result",
        "test_state_machine",
    },
    "TestReapsToDead": {
        "test_lease_expired_job_is_claimed_again",
        "test_reaped_record_is_the_core_rule",
        "test_reaped_to_dead_has_a_failed_result",
        "test_state_machine",
    },
    "TestReapsWithoutResult": {"test_reaped_to_dead_has_a_failed_result"},
    "TestDoubleClaims": {
        "test_no_double_claim",
        "test_no_double_claim_concurrent_claimers",
        "test_state_machine",
        "test_claim_strict_priority",
        "test_claim_job_names_filter",  # their drain() sees a job claimed twice
        "test_claim_or_wait_claims_what_is_ready",  # it claims through the same broken claim
    },
    "TestRetriesEarly": {
        "test_fail_retry_not_claimable_before_backoff",
        "test_fail_retry_at_retries_even_without_retries_left",  # made due at once, not at the time given
        "test_fail_retry_at_is_the_time_given_not_the_backoff",
        "test_state_machine",
    },
    "TestIgnoresRetryAt": {
        "test_fail_retry_at_retries_even_without_retries_left",
        "test_fail_retry_at_is_the_time_given_not_the_backoff",
        "test_fail_none_is_dead_with_retries_left",
        "test_attempts_and_error_recorded_on_every_decision",
        "test_state_machine",
    },
    "TestNoCronNoNameFilter": {"test_without_job_name_filter_claim_raises"},
    "TestHandsNothingOver": {"test_claim_or_wait_claims_what_is_ready"},
    "TestForgetsTheResult": {"test_completes_and_stores_together"},
}


@pytest.fixture
def broken_plugin(pytester: pytest.Pytester) -> Iterator[pytest.Pytester]:
    """The broken variants installed as distribution ``broken-bananas`` with a ``bananas`` entry point."""
    yield from install_plugin(pytester, "broken_bananas", BROKEN_PLUGIN)


def test_suite_fails_exactly_where_a_variant_is_broken(broken_plugin: pytest.Pytester) -> None:
    outcomes = run_suite(broken_plugin, SUITE_RUNS, " or ".join(SELECTED))
    assert failed(outcomes, list(EXPECTED_FAILURES)) == EXPECTED_FAILURES
    # an undeclared capability's tests are skipped, never passed; its "raises" check runs instead
    no_cron = outcomes["TestNoCronNoNameFilter"]
    assert no_cron["test_cron_fire_once_per_tick"] == "skipped"
    assert no_cron["test_claim_job_names_filter"] == "skipped"
    assert no_cron["test_without_cron_scheduler_raises"] == "passed"
    assert outcomes["TestCorrect"]["test_without_cron_scheduler_raises"] == "skipped"
    assert outcomes["TestCorrect"]["test_state_machine"] == "passed"


def test_no_code_run_by_url(broken_plugin: pytest.Pytester) -> None:
    """``pytest --pyargs bananas.testing.run --bananas-url URL``: passes on memory://, fails on a broken URL.

    Runs in a subprocess whose working directory holds the broken-bananas distribution.
    """
    pytester = broken_plugin
    run = ["--pyargs", "bananas.testing.run", "-p", "no:cacheprovider"]
    selected = [*run, "-k", "test_claim_strict_priority or test_claim_fifo_within_priority"]
    good = pytester.runpytest_subprocess("--bananas-url", "memory://", *selected)
    good.assert_outcomes(passed=2)
    bad = pytester.runpytest_subprocess("--bananas-url", "broken-priority://", *selected)
    bad.assert_outcomes(passed=1, failed=1)
    bad.stdout.fnmatch_lines(["*FAILED*test_claim_strict_priority*"])
    missing = pytester.runpytest_subprocess("-rs", *selected)
    assert missing.ret == pytest.ExitCode.USAGE_ERROR  # not skips: a misconfigured run must not pass
    missing.stdout.fnmatch_lines(["*no backend URL; pass --bananas-url*"])


def test_a_run_with_no_url_is_a_usage_error_not_skips(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--pyargs", "bananas.testing.run")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["*bananas conformance suite: no backend URL; pass --bananas-url URL*"])
    assert "skipped" not in result.stdout.str()


def test_an_unknown_scheme_is_one_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--pyargs", "bananas.testing.run", "--bananas-url", "nosuch://x"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stdout.str().count("no installed backend serves nosuch://") == 1

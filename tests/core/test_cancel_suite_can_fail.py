"""The cancellation conformance tests catch backends that get cancelling wrong.

Deliberately broken memory:// variants (one URL scheme each, installed as a plugin
distribution) run the suite's cancel tests exactly as a third party would; the tests guarding
the broken part must fail, by name, and the others pass.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from broken_backends import MEMORY_VARIANTS, failed, install_plugin, run_suite

pytest_plugins = ["pytester"]

BROKEN_PLUGIN = '''
"""Memory variants that get cancellation wrong."""

from bananas.backends import memory
from bananas.cancel import CancelOutcome
from bananas.errors import JobNotFound
from bananas.job import JobStatus
from bananas.plugins import BackendSpec, hookimpl


class MarksOnly(memory.MemoryQueue):
    """Writes the cancelled status but leaves the job in its ready line or the scheduled set."""

    async def cancel(self, job_id):
        s = self._store
        with s.lock:
            job = s.load(job_id)
            waiting = not job.status.is_final and job_id not in s.processing
            if waiting:
                s.save(job.evolve(status=JobStatus.CANCELLED))
        return CancelOutcome.CANCELLED if waiting else await super().cancel(job_id)


class CancelsFinished(memory.MemoryQueue):
    """Overwrites a finished job as cancelled."""

    async def cancel(self, job_id):
        s = self._store
        with s.lock:
            if job_id in s.jobs and s.load(job_id).status.is_final:
                s.unlink(job_id)
                s.save(s.load(job_id).evolve(status=JobStatus.CANCELLED))
                return CancelOutcome.CANCELLED
        return await super().cancel(job_id)


class UnfencedSettle(memory.MemoryQueue):
    """Settles a cancelled attempt whoever holds the job now."""

    async def settle_cancelled(self, job, error):
        with self._store.lock:
            self._store.holders[job.id] = job.lease_token
            self._store.processing.setdefault(job.id, 0.0)
        return await super().settle_cancelled(job, error)


class ForgetsRequests(memory.MemoryQueue):
    """Answers 'requested' for a running job but never tells its worker."""

    async def cancel_requested(self, jobs):
        return set()


class QuietUnknown(memory.MemoryQueue):
    """Answers 'already finished' for an id it does not know."""

    async def cancel(self, job_id):
        try:
            return await super().cancel(job_id)
        except JobNotFound:
            return CancelOutcome.ALREADY_FINISHED


VARIANTS = {
    "cancel-marks-only": MarksOnly,
    "cancel-finished": CancelsFinished,
    "cancel-unfenced": UnfencedSettle,
    "cancel-forgets": ForgetsRequests,
    "cancel-quiet": QuietUnknown,
}
'''

SUITE_RUNS = """
from bananas.plugins import reload_plugins
from bananas.testing.suite import BackendConformance

reload_plugins()


class TestCorrect(BackendConformance):
    bananas_url = "memory://"


class TestMarksOnly(BackendConformance):
    bananas_url = "cancel-marks-only://"


class TestCancelsFinished(BackendConformance):
    bananas_url = "cancel-finished://"


class TestUnfencedSettle(BackendConformance):
    bananas_url = "cancel-unfenced://"


class TestForgetsRequests(BackendConformance):
    bananas_url = "cancel-forgets://"


class TestQuietUnknown(BackendConformance):
    bananas_url = "cancel-quiet://"
"""

EXPECTED_FAILURES = {
    "TestCorrect": set(),
    "TestMarksOnly": {
        "test_cancel_a_pending_job_never_runs",
        "test_cancel_a_scheduled_or_retrying_job_never_runs",
    },
    "TestCancelsFinished": {"test_cancel_a_finished_job_changes_nothing"},
    "TestUnfencedSettle": {"test_cancel_settle_is_fenced_by_the_claim"},
    "TestForgetsRequests": {"test_cancel_a_running_job_is_requested_then_settled"},
    "TestQuietUnknown": {"test_cancel_an_unknown_job_raises_job_not_found"},
}


@pytest.fixture
def broken_plugin(pytester: pytest.Pytester) -> Iterator[pytest.Pytester]:
    yield from install_plugin(pytester, "broken_cancel", BROKEN_PLUGIN + MEMORY_VARIANTS)


@pytest.mark.slow
def test_the_cancel_tests_fail_exactly_where_a_variant_is_broken(broken_plugin: pytest.Pytester) -> None:
    # the workflow-cancellation tests have their own self-test (test_workflow_cancel_suite_can_fail)
    outcomes = run_suite(broken_plugin, SUITE_RUNS, "test_cancel_ and not workflow")
    assert failed(outcomes, list(EXPECTED_FAILURES)) == EXPECTED_FAILURES, outcomes
    assert all(o == "passed" for o in outcomes["TestCorrect"].values()), outcomes["TestCorrect"]

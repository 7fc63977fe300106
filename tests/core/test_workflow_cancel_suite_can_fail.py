"""The conformance tests of cancelled workflow steps, cancel_workflow, the repeated cancelled
settle and the expiry of finished workflows catch broken backends: deliberately broken
memory:// variants, installed as a plugin distribution of their own, fail the tests guarding
what they break."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from broken_backends import failed, install_plugin, run_suite

pytest_plugins = ["pytester"]

BROKEN_PLUGIN = '''
"""Broken workflow-cancellation variants of memory://, each under its own URL scheme."""

from bananas.backends import _memory_workflows as wf
from bananas.backends import memory
from bananas.errors import LeaseLost
from bananas.plugins import BackendSpec, hookimpl
from bananas.workflows.plan import WorkflowStop


class CancelFollowsNothing(memory.MemoryQueue):
    """A cancelled step is stored cancelled but follows no link (its workflow never hears of it)."""

    async def _settle_step(self, job, state, value, error=""):
        if state == "cancelled":
            return False
        return await super()._settle_step(job, state, value, error)


class RepeatRaises(memory.MemoryQueue):
    """A second settle_cancelled of a job already cancelled raises LeaseLost."""

    async def settle_cancelled(self, job, error):
        with self._store.lock:
            held = self._store.holds(job)
        if not held:
            raise LeaseLost(job.id)
        return await super().settle_cancelled(job, error)


class StopLeavesWaiting(memory.MemoryQueue):
    """stop_workflow names the running steps but leaves the steps not created yet to be created."""

    async def stop_workflow(self, workflow_id):
        record = await self.workflow_record(workflow_id)
        if record is None:
            return None
        return WorkflowStop((), tuple(k for k, v in record.steps.items() if v.state == "created"))


class KeptSteps(wf._Steps):
    async def expire(self, ttl):
        pass


class NeverExpires(memory.MemoryQueue):
    """A finished workflow's record is kept for ever."""

    def _steps_of(self, job):
        steps = super()._steps_of(job)
        return None if steps is None else KeptSteps(steps.store, steps.wf, steps.now)


VARIANTS = {
    "broken-wfc-nofollow": CancelFollowsNothing,
    "broken-wfc-repeat": RepeatRaises,
    "broken-wfc-stop": StopLeavesWaiting,
    "broken-wfc-kept": NeverExpires,
}


def connect(url, options):
    return memory.memory_backend(memory.MemoryStore(), options, url=url, queue_class=VARIANTS[url.split("://")[0]])


@hookimpl
def bananas_backends():
    return [BackendSpec(name=s, schemes=(s,), factory=connect, capabilities=memory.CAPABILITIES) for s in VARIANTS]
'''

SUITE_RUNS = """
from bananas.plugins import reload_plugins
from bananas.testing.suite import BackendConformance

reload_plugins()


class TestCorrect(BackendConformance):
    bananas_url = "memory://"


class TestCancelFollowsNothing(BackendConformance):
    bananas_url = "broken-wfc-nofollow://"


class TestRepeatRaises(BackendConformance):
    bananas_url = "broken-wfc-repeat://"


class TestStopLeavesWaiting(BackendConformance):
    bananas_url = "broken-wfc-stop://"


class TestNeverExpires(BackendConformance):
    bananas_url = "broken-wfc-kept://"
"""

RANDOM = "test_random_shapes_with_cancelled_steps_match_the_model"

SELECTED = [
    "test_a_step_cancelled_while_it_waits_stops_the_chain",
    "test_a_running_step_settled_cancelled_stops_the_chain",
    "test_a_chord_with_a_cancelled_member_never_runs_its_callback",
    "test_allow_failures_gives_the_callback_a_cancelled_outcome",
    "test_a_cancel_racing_the_steps_completion_continues_once",
    "test_cancel_workflow_cancels_what_has_not_run",
    "test_cancel_workflow_of_a_finished_or_unknown_workflow",
    "test_a_repeated_cancelled_settle_answers_like_the_first",
    "test_a_running_workflow_record_never_expires",
    "test_a_finished_workflow_record_expires_after_its_longest_result",
    RANDOM,
]

EXPECTED_FAILURES = {
    "TestCorrect": set(),
    "TestCancelFollowsNothing": {
        "test_a_step_cancelled_while_it_waits_stops_the_chain",
        "test_a_running_step_settled_cancelled_stops_the_chain",
        "test_allow_failures_gives_the_callback_a_cancelled_outcome",
        "test_cancel_workflow_cancels_what_has_not_run",
    },
    "TestRepeatRaises": {
        "test_a_running_step_settled_cancelled_stops_the_chain",
        "test_a_repeated_cancelled_settle_answers_like_the_first",
    },
    "TestStopLeavesWaiting": {"test_cancel_workflow_cancels_what_has_not_run"},
    "TestNeverExpires": {"test_a_finished_workflow_record_expires_after_its_longest_result"},
}


@pytest.fixture
def broken_plugin(pytester: pytest.Pytester) -> Iterator[pytest.Pytester]:
    yield from install_plugin(pytester, "broken_workflow_cancel", BROKEN_PLUGIN)


@pytest.mark.slow  # runs the suite's workflow-cancellation tests on five backends
def test_workflow_cancel_tests_fail_exactly_where_a_variant_is_broken(broken_plugin: pytest.Pytester) -> None:
    outcomes = run_suite(broken_plugin, SUITE_RUNS, " or ".join(SELECTED))
    # the random-shapes test is a hypothesis search: a broken variant may fail it or not on one
    # run; the deterministic tests carry the requirement (and the correct store must pass it)
    found = {cls: tests - {RANDOM} for cls, tests in failed(outcomes, list(EXPECTED_FAILURES)).items()}
    assert found == EXPECTED_FAILURES
    assert outcomes["TestCorrect"][RANDOM] == "passed"
    assert outcomes["TestCorrect"]["test_a_finished_workflow_record_expires_after_its_longest_result"] == "passed"

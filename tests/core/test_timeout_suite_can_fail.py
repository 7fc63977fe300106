"""The per-job timeout conformance test fails on a backend that drops the job's own fields."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from broken_backends import install_plugin, run_suite

pytest_plugins = ["pytester"]

BROKEN_PLUGIN = '''
from bananas.backends import memory
from bananas.plugins import BackendSpec, hookimpl


class ForgetsUnknownFields(memory.MemoryStore):
    """Rewrites a job without the fields it does not know (its own timeout among them)."""

    def save(self, job):
        self.jobs[job.id] = job.evolve(extra={}).to_json()


def connect(url, options):
    return memory.memory_backend(ForgetsUnknownFields(), options, url=url)


@hookimpl
def bananas_backends():
    return [BackendSpec(name="forgetful", schemes=("forgetful",), factory=connect, capabilities=memory.CAPABILITIES)]
'''

SUITE_RUNS = """
from bananas.plugins import reload_plugins
from bananas.testing.suite import BackendConformance

reload_plugins()


class TestCorrect(BackendConformance):
    bananas_url = "memory://"


class TestForgetful(BackendConformance):
    bananas_url = "forgetful://"
"""


@pytest.fixture
def broken_plugin(pytester: pytest.Pytester) -> Iterator[pytest.Pytester]:
    yield from install_plugin(pytester, "forgetful_bananas", BROKEN_PLUGIN)


def test_the_timeout_test_fails_where_fields_are_dropped(broken_plugin: pytest.Pytester) -> None:
    outcomes = run_suite(broken_plugin, SUITE_RUNS, "timeout_travels")
    outcomes = {cls: per["test_job_timeout_travels_with_the_job"] for cls, per in outcomes.items()}
    assert outcomes == {"TestCorrect": "passed", "TestForgetful": "failed"}

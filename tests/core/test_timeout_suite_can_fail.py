"""The per-job timeout conformance test fails on a backend that drops the job's own fields."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator

import pytest
from bananas.plugins import reload_plugins

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
    pytester.makepyfile(forgetful_bananas=textwrap.dedent(BROKEN_PLUGIN))
    info = pytester.mkdir("forgetful_bananas-1.0.dist-info")
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: forgetful-bananas\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[bananas]\nforgetful = forgetful_bananas\n")
    pytester.syspathinsert()
    yield pytester
    reload_plugins()


def test_the_timeout_test_fails_where_fields_are_dropped(broken_plugin: pytest.Pytester) -> None:
    broken_plugin.makepyfile(test_variants=textwrap.dedent(SUITE_RUNS))
    result = broken_plugin.inline_run("-p", "no:cacheprovider", "-k", "timeout_travels")
    outcomes = {
        r.nodeid.split("::")[1]: r.outcome for r in result.getreports("pytest_runtest_logreport") if r.when == "call"
    }
    assert outcomes == {"TestCorrect": "passed", "TestForgetful": "failed"}

"""Running the conformance suite on deliberately broken backends, as a third party would.

A self-test writes its broken variants as the source of a plugin module, installs it as a
distribution of its own (a ``bananas`` entry point) with :func:`install_plugin`, writes the
suite classes to run with :func:`run_suite`, and compares which tests failed, by name.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator

import bananas.testing.suite  # noqa: F401  (see below)
import pytest
from bananas.plugins import reload_plugins

# Imported here, before any inline run: pytester's inline runs drop the modules first
# imported inside them, and a second run would then import part of hypothesis and the suite's
# strategies again beside the old copies ("Cannot | a SearchStrategy with booleans()").

MEMORY_VARIANTS = '''


def connect(url, options):
    """One store per variant and namespace (the connections of one test share it)."""
    scheme = url.split("://")[0]
    store = memory.store_for(scheme, options.extra.get("namespace", ""))
    return memory.memory_backend(store, options, url=url, queue_class=VARIANTS[scheme])


@hookimpl
def bananas_backends():
    return [BackendSpec(name=scheme, schemes=(scheme,), factory=connect, capabilities=memory.CAPABILITIES,
                        options=("namespace",)) for scheme in VARIANTS]
'''
"""The end of a plugin whose broken variants are memory:// queue classes: the plugin source
imports ``memory``, ``BackendSpec`` and ``hookimpl``, defines ``VARIANTS`` (scheme: queue
class) and ends with this."""


def install_plugin(pytester: pytest.Pytester, module: str, source: str) -> Iterator[pytest.Pytester]:
    """Install ``source`` as module ``module`` of distribution ``module`` (a ``bananas`` entry
    point); yield ``pytester``, then forget the plugin. For a fixture: ``yield from``."""
    pytester.makepyfile(**{module: textwrap.dedent(source)})
    dist = module.replace("_", "-")
    info = pytester.mkdir(f"{module}-1.0.dist-info")
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[bananas]\n{module} = {module}\n")
    pytester.syspathinsert()
    yield pytester
    reload_plugins()  # forget the variants once the run is over


def run_suite(pytester: pytest.Pytester, classes: str, keyword: str) -> dict[str, dict[str, str]]:
    """Run the suite classes in ``classes`` (test source) selected by ``-k keyword``:
    ``{class: {test: outcome}}``, a test counted failed when any of its parametrizations failed."""
    pytester.makepyfile(test_variants=textwrap.dedent(classes))
    reprec = pytester.inline_run("-p", "no:cacheprovider", "-k", keyword)
    outcomes: dict[str, dict[str, str]] = {}
    for report in reprec.getreports("pytest_runtest_logreport"):
        if report.when == "call" or report.outcome != "passed":
            _, cls, test = report.nodeid.split("::")
            per = outcomes.setdefault(cls, {})
            name = test.split("[")[0]
            if per.get(name) != "failed":
                per[name] = report.outcome
    return outcomes


def failed(outcomes: dict[str, dict[str, str]], classes: Iterator[str] | list[str]) -> dict[str, set[str]]:
    """The failed tests of each of ``classes`` in ``outcomes``."""
    return {cls: {t for t, o in outcomes.get(cls, {}).items() if o == "failed"} for cls in classes}

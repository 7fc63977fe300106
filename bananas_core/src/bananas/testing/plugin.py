"""The pytest plugin of the conformance suite (loaded through the ``pytest11`` entry point).

It adds the ``--bananas-url`` option, the ``bananas_capability(cap)`` marker and the
fixtures the suite runs on. Override ``bananas_url`` or ``bananas_backend_factory`` (in a
conftest or in your :class:`~bananas.testing.suite.BackendConformance` subclass) to point
the suite at your backend.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator, Iterable
from typing import Any, Protocol

import pytest

from bananas.backend import Backend
from bananas.capabilities import Capability
from bananas.clock import Clock, ManualClock
from bananas.errors import PluginError, UnknownBackendScheme

__all__ = ["BackendFactory", "RecordOverwriter", "skip_unless_capable"]

MARKER = "bananas_capability"


class BackendFactory(Protocol):
    """What the ``bananas_backend_factory`` fixture returns.

    Each call returns a FRESH, ISOLATED backend (its own empty namespace) reading time from
    ``clock``; keyword ``options`` are :class:`~bananas.backend.BackendOptions` fields such
    as ``result_success_ttl`` and must be honoured. A ``namespace=`` option names the
    namespace instead: two calls with the same name reach the same store.
    """

    def __call__(self, clock: Clock, /, **options: Any) -> Backend: ...


class RecordOverwriter(Protocol):
    """What the ``bananas_overwrite_record`` fixture returns: ``await overwrite(backend, job_id, text)``
    replaces the stored record of an existing job with ``text`` exactly, as a foreign or buggy
    producer would write it (for the tests of records nobody can read)."""

    def __call__(self, backend: Backend, job_id: str, text: str, /) -> Coroutine[Any, Any, None]: ...


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bananas", "Bananas backend conformance suite")
    group.addoption(
        "--bananas-url",
        dest="bananas_url",
        default=None,
        help="backend URL the conformance suite runs against, e.g. memory:// or redis://localhost:6380/0",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(capability): the test needs this optional bananas Capability; "
        "it is skipped (with a reason) when the backend does not declare it",
    )
    config.addinivalue_line(
        "markers", "bananas_realtime: the test sleeps in real time (TTL expiry) instead of using the ManualClock"
    )


def required_capabilities(node: pytest.Item) -> list[Capability]:
    """The capabilities a test's ``bananas_capability`` markers ask for."""
    return [Capability(arg) for mark in node.iter_markers(MARKER) for arg in mark.args]


def skip_unless_capable(backend: Backend, capabilities: Iterable[Capability]) -> None:
    """Skip the running test, naming the capability, unless ``backend`` declares them all (the
    skip is reported at the test's node id: see :func:`pytest_runtest_makereport`)."""
    for cap in capabilities:
        if not backend.supports(cap):
            pytest.skip(f"needs the {cap.value!r} capability, which the {backend.name!r} backend does not declare")


def _is_suite_test(item: pytest.Item) -> bool:
    function = getattr(item, "function", None)
    return getattr(function, "__module__", "").startswith("bananas.testing.")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A skip in a suite test is reported at the test (its node id), not at the suite's file and
    line where ``pytest.skip`` ran: ``SKIPPED [1] tests/test_mine.py::TestMine::test_cron_...: reason``."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.skipped and isinstance(report.longrepr, tuple) and _is_suite_test(item):
        _path, _line, reason = report.longrepr
        # No line: pytest prints "node id: reason". A --pyargs run outside the rootdir has node
        # ids with an empty path ("::TestX::test_y"): the class and test name are what matter.
        at_the_test: Any = (item.nodeid.lstrip(":"), None, reason)
        report.longrepr = at_the_test


@pytest.fixture
def bananas_url(request: pytest.FixtureRequest) -> str:
    """The URL under test: the test class's ``bananas_url`` attribute, else ``--bananas-url``."""
    url = getattr(request.cls, "bananas_url", None) if request.cls is not None else None
    url = url if isinstance(url, str) and url else request.config.getoption("bananas_url")
    if not url:  # a usage error, not skips: a misconfigured run must not pass
        pytest.exit(
            "bananas conformance suite: no backend URL; pass --bananas-url URL, set bananas_url on "
            "the test class, or override the bananas_url or bananas_backend_factory fixture",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )
    return str(url)


@pytest.fixture
def bananas_backend_factory(bananas_url: str) -> BackendFactory:
    """``factory(clock, **options) -> Backend``: a fresh backend in a new namespace on each call.

    Default: ``bananas.connect(bananas_url, clock=clock, namespace="t" + uuid hex, **options)``,
    then the backend's migration (its :attr:`~bananas.plugins.BackendSpec.migrate`, what
    ``bananas db upgrade`` runs) when it has one, so a backend with a schema needs no code.
    An explicit ``namespace=`` option overrides the fresh one: the same name reaches the
    same store (the namespace tests rely on it).
    """
    from bananas.plugins import connect, resolve

    try:
        spec = resolve(bananas_url)
    except (UnknownBackendScheme, PluginError) as exc:  # one line, once, instead of an error per test
        pytest.exit(f"bananas conformance suite: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)
    migrate = spec.migrate

    def factory(clock: Clock, /, **options: Any) -> Backend:
        options.setdefault("namespace", "t" + uuid.uuid4().hex)
        try:
            backend = connect(bananas_url, clock=clock, **options)
        except PluginError as exc:  # a missing client library or a broken plugin: the same for every test
            pytest.exit(f"bananas conformance suite: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)
        if migrate is not None:  # the schema of the namespace, as `bananas db upgrade` creates it
            try:
                _run_apart(lambda: migrate(bananas_url, backend.options))
            except BaseException:
                _run_apart(backend.close)
                raise
        return backend

    return factory


def _run_apart(make: Callable[[], Awaitable[object]]) -> None:
    """Await ``make()`` on an event loop of its own, in a thread: the factory is synchronous
    and may be called from a running loop."""

    async def main() -> None:
        await make()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, main()).result()


async def overwrite_memory_record(backend: Backend, job_id: str, text: str) -> None:
    """The default ``bananas_overwrite_record``: knows ``memory://`` only, skips the test elsewhere."""
    if backend.name != "memory":
        pytest.skip(
            f"the suite cannot plant an unreadable record in the {backend.name!r} backend: "
            "override the bananas_overwrite_record fixture to run the poison-record tests"
        )
    store = backend.queue._store  # type: ignore[attr-defined]  # memory:// keeps JSON text by id
    with store.lock:
        assert job_id in store.jobs, f"no stored job {job_id!r} to overwrite"
        store.jobs[job_id] = text


@pytest.fixture
def bananas_overwrite_record() -> RecordOverwriter:
    """How to plant an unreadable record in the backend under test.

    The default knows ``memory://``; override it for your backend (a backend's record store
    is its own business) so that the poison-record tests run instead of being skipped.
    """
    return overwrite_memory_record


@pytest.fixture
def bananas_clock() -> ManualClock:
    """A clock that moves only when the test says so."""
    return ManualClock()


@pytest.fixture
async def bananas_backend(
    anyio_backend: object,
    request: pytest.FixtureRequest,
    bananas_backend_factory: BackendFactory,
    bananas_clock: ManualClock,
) -> AsyncIterator[Backend]:
    """A fresh backend on the test's :func:`bananas_clock`, closed afterwards.

    Skips the test when it is marked with a capability the backend does not declare.
    """
    b = bananas_backend_factory(bananas_clock)
    try:
        skip_unless_capable(b, required_capabilities(request.node))
        yield b
    finally:
        await b.close()

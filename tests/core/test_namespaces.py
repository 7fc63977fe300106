"""The namespace rule (validate_namespace), memory:// isolation, and that NamespaceTests can fail."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from bananas.backend import Backend, BackendOptions, validate_namespace
from bananas.backends.memory import connect_memory, memory_backend, store_for
from bananas.clock import Clock, ManualClock
from bananas.errors import ConfigError, JobNotFound
from bananas.plugins import connect
from bananas.testing.suite.namespaces import INVALID_NAMESPACES, NamespaceTests
from hypothesis import given
from hypothesis import strategies as st

ALLOWED = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.{}"


@given(st.text(ALLOWED, min_size=1, max_size=64))
def test_every_name_of_the_rule_is_accepted(name: str) -> None:
    assert validate_namespace(name) == name


@given(st.text(ALLOWED, max_size=30), st.characters().filter(lambda c: c not in ALLOWED), st.text(ALLOWED, max_size=30))
def test_any_other_character_is_refused_and_named(before: str, bad: str, after: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_namespace(before + bad + after)
    assert repr(bad) in str(info.value) and "namespace" in str(info.value)


@pytest.mark.parametrize("name", INVALID_NAMESPACES, ids=repr)
def test_invalid_names_say_what_is_wrong_and_what_is_allowed(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_namespace(name)
    message = str(info.value)
    assert repr(name) in message and "1 to 64 characters" in message and "'{'" in message


@pytest.mark.parametrize("value", [None, 3, b"ns"])
def test_a_namespace_is_a_string(value: object) -> None:
    with pytest.raises(ConfigError, match="must be a string"):
        validate_namespace(value)


@pytest.mark.parametrize("name", INVALID_NAMESPACES, ids=repr)
def test_memory_factory_refuses_invalid_names_itself(name: str) -> None:
    """Not only through connect(): the memory:// factory checks the option it reads."""
    with pytest.raises(ConfigError):
        connect_memory("memory://", BackendOptions(extra={"namespace": name}))


def test_invalid_name_in_the_url_is_refused() -> None:
    with pytest.raises(ConfigError, match="'a b'"):
        connect("memory://?namespace=a%20b")


def _factory(clock: Clock, /, **options: Any) -> Backend:
    options.setdefault("namespace", "t" + uuid.uuid4().hex)
    return connect("memory://", clock=clock, **options)


@pytest.mark.anyio
class TestMemoryNamespaces(NamespaceTests):
    """The conformance tests of namespaces on memory://."""

    @pytest.fixture
    def bananas_backend_factory(self) -> Any:
        return _factory


# -- NamespaceTests fails on backends that break the contract ------------------------------

_TESTS = NamespaceTests()


def _ignores_namespace(clock: Clock, /, **options: Any) -> Backend:
    """Every namespace in one store (the namespace option is dropped)."""
    options.pop("namespace", None)
    return memory_backend(store_for("ignores-" + _RUN), BackendOptions(clock=clock))


def _folds_namespace(clock: Clock, /, **options: Any) -> Backend:
    """What SQL did before: case and punctuation folded away."""
    ns = "".join(c if c.isalnum() else "_" for c in str(options.pop("namespace")).lower())
    return memory_backend(store_for("folds", ns), BackendOptions(clock=clock))


def _fresh_store_per_call(clock: Clock, /, **options: Any) -> Backend:
    options.pop("namespace", None)
    return memory_backend(store_for("fresh-" + uuid.uuid4().hex), BackendOptions(clock=clock))


def _accepts_anything(clock: Clock, /, **options: Any) -> Backend:
    return memory_backend(store_for("any", str(options.pop("namespace"))), BackendOptions(clock=clock))


_RUN = uuid.uuid4().hex


@pytest.mark.anyio
@pytest.mark.parametrize("broken", [_ignores_namespace, _folds_namespace])
async def test_isolation_tests_catch_shared_storage(broken: Any) -> None:
    with pytest.raises(AssertionError):
        await _TESTS.test_look_alike_namespaces_are_isolated(broken, ManualClock())
    with pytest.raises(AssertionError):
        await _TESTS.test_look_alike_namespaces_keep_their_own_results(broken, ManualClock())


@pytest.mark.anyio
async def test_shared_storage_test_catches_a_store_per_call() -> None:
    with pytest.raises(JobNotFound):
        await _TESTS.test_same_namespace_shares_storage(_fresh_store_per_call, ManualClock())


@pytest.mark.anyio
async def test_invalid_name_test_catches_a_backend_without_the_rule() -> None:
    with pytest.raises(pytest.fail.Exception):
        await _TESTS.test_invalid_namespace_is_refused(_accepts_anything, ManualClock(), "a*b")

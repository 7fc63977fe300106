"""Plugin discovery through the ``bananas`` entry point group (pluggy)."""

from __future__ import annotations

import inspect
import logging
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import bananas
import pytest
from bananas.errors import PluginError, UnknownBackendScheme
from bananas.plugins import hookspecs, manager

PLUGIN_TEMPLATE = """
from bananas.plugins import BackendSpec, hookimpl

def _factory(url, options):
    raise RuntimeError("not used")

@hookimpl
def bananas_backends():
    return [BackendSpec(name={name!r}, schemes={schemes!r}, factory=_factory)]
"""

MakePlugin = Callable[..., None]


@pytest.fixture
def make_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakePlugin]:
    """Install a fake distribution with a ``bananas`` entry point onto sys.path."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(dist: str, module: str, *, body: str | None = None, name: str = "", schemes: tuple[str, ...] = ()) -> None:
        (tmp_path / f"{module}.py").write_text(
            body if body is not None else PLUGIN_TEMPLATE.format(name=name, schemes=schemes)
        )
        info = tmp_path / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[bananas]\n{module} = {module}\n")
        manager.reload_plugins()

    yield make
    manager.reload_plugins()


def test_memory_backend_is_found_through_its_entry_point() -> None:
    spec = manager.resolve("memory://")
    assert spec.name == "memory"
    assert spec.distribution == "bananas-core"


def test_unknown_scheme_lists_installed_schemes_and_names_the_distribution() -> None:
    with pytest.raises(UnknownBackendScheme) as info:
        manager.resolve("mongodb://localhost")
    assert "mongodb://" in str(info.value) and "memory://" in str(info.value)


@pytest.mark.parametrize(
    ("url", "extra"), [("redis://localhost", "bananas[redis]"), ("postgres://x/y", "bananas[postgres]")]
)
def test_well_known_schemes_say_what_to_install(
    url: str, extra: str, make_plugin: MakePlugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(manager.DISABLE_ENV, "*")  # as if only the core were installed
    manager.reload_plugins()
    with pytest.raises(UnknownBackendScheme) as info:
        bananas.connect(url)
    assert f"pip install {extra}" in str(info.value)


def test_url_without_scheme_is_explained() -> None:
    with pytest.raises(UnknownBackendScheme, match="SCHEME://"):
        manager.resolve("localhost:6379")


def test_third_party_plugin_registers_its_scheme(make_plugin: MakePlugin) -> None:
    make_plugin("bananas-acme", "bananas_acme_plugin", name="acme", schemes=("acme", "acme+tls"))
    spec = manager.resolve("ACME+tls://host")
    assert spec.name == "acme"
    assert spec.distribution == "bananas-acme"
    assert "acme" in [s.name for s in bananas.backend_specs()]


def test_duplicate_scheme_is_an_error_naming_both_distributions(make_plugin: MakePlugin) -> None:
    make_plugin("bananas-one", "bananas_one_plugin", name="one", schemes=("dup",))
    make_plugin("bananas-two", "bananas_two_plugin", name="two", schemes=("dup",))
    with pytest.raises(PluginError) as info:
        manager.resolve("dup://x")
    assert "bananas-one" in str(info.value) and "bananas-two" in str(info.value)


def test_broken_plugin_is_logged_not_fatal(make_plugin: MakePlugin, caplog: pytest.LogCaptureFixture) -> None:
    make_plugin("bananas-broken", "bananas_broken_plugin", body="raise ImportError('no such luck')\n")
    with caplog.at_level(logging.WARNING, logger="bananas.plugins"):
        assert manager.resolve("memory://").name == "memory"
    assert "bananas_broken_plugin" in caplog.text and "no such luck" in caplog.text


def test_environment_variable_blocks_a_plugin(make_plugin: MakePlugin, monkeypatch: pytest.MonkeyPatch) -> None:
    make_plugin("bananas-acme", "bananas_acme_plugin", name="acme", schemes=("acme",))
    monkeypatch.setenv(manager.DISABLE_ENV, "bananas_acme_plugin")
    manager.reload_plugins()
    with pytest.raises(UnknownBackendScheme):
        manager.resolve("acme://x")


def test_missing_client_library_says_what_to_install(make_plugin: MakePlugin) -> None:
    body = textwrap.dedent("""
        from bananas.plugins import BackendSpec, hookimpl

        def _factory(url, options):
            import bananas_surely_missing_client  # noqa: F401

        @hookimpl
        def bananas_backends():
            return [BackendSpec(name="needy", schemes=("needy",), factory=_factory)]
    """)
    make_plugin("bananas-needy", "bananas_needy_plugin", body=body)
    with pytest.raises(PluginError, match=r"bananas_surely_missing_client.*pip install bananas-needy"):
        bananas.connect("needy://x")


def test_connect_passes_options_and_url_query_to_the_factory(make_plugin: MakePlugin) -> None:
    body = textwrap.dedent("""
        from bananas.plugins import BackendSpec, hookimpl
        SEEN = []

        def _factory(url, options):
            SEEN.append((url, options))
            raise LookupError("stop here")

        @hookimpl
        def bananas_backends():
            return [BackendSpec(name="spy", schemes=("spy",), factory=_factory)]
    """)
    make_plugin("bananas-spy", "bananas_spy_plugin", body=body)
    with pytest.raises(LookupError):
        bananas.connect("spy://h/?namespace=abc", result_success_ttl=5, table_prefix="t_")
    import bananas_spy_plugin  # type: ignore[import-not-found]

    url, options = bananas_spy_plugin.SEEN[0]
    assert url == "spy://h/?namespace=abc"
    assert options.result_success_ttl == 5
    assert options.extra == {"namespace": "abc", "table_prefix": "t_"}


def test_every_hookspec_is_documented_and_tested() -> None:
    specs = [name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("bananas_")]
    assert specs == ["bananas_backends"]
    this_file = Path(__file__).read_text()
    for name in specs:
        assert (getattr(hookspecs, name).__doc__ or "").strip(), f"hookspec {name} has no docstring"
        assert name in this_file, f"hookspec {name} has no test here"


# -- declared options --------------------------------------------------------------------

OPTIONS_PLUGIN = """
from bananas.backends.memory import connect_memory
from bananas.plugins import BackendSpec, hookimpl

@hookimpl
def bananas_backends():
    return [BackendSpec(name={name!r}, schemes=({scheme!r},), factory=connect_memory, options={options!r})]
"""


def test_a_spec_without_options_accepts_any_keyword(make_plugin: MakePlugin) -> None:
    make_plugin("old-plugin", "old_plugin", body=OPTIONS_PLUGIN.format(name="old", scheme="old", options=None))
    assert manager.connect("old://x", whatever=1).options.extra["whatever"] == 1


def test_a_spec_with_options_refuses_others_naming_the_accepted_ones(make_plugin: MakePlugin) -> None:
    make_plugin("new-plugin", "new_plugin", body=OPTIONS_PLUGIN.format(name="new", scheme="new", options=("depth",)))
    assert manager.connect("new://x", depth=3).options.extra["depth"] == 3
    assert manager.connect("new://x", connect_timeout=1, namespace="a").options.extra["namespace"] == "a"
    with pytest.raises(TypeError) as info:
        manager.connect("new://x", dpeth=3)
    message = str(info.value)
    assert "dpeth" in message and "depth" in message and "result_success_ttl" in message
    assert "connect_timeout" in message and "namespace" in message


def test_options_must_be_a_collection_not_one_string() -> None:
    from bananas.plugins import BackendSpec

    with pytest.raises(TypeError, match="not one string"):
        BackendSpec(name="x", schemes=("x",), factory=lambda u, o: None, options="depth")  # type: ignore[arg-type,return-value]


def test_installed_backends_declare_what_they_read() -> None:
    assert manager.resolve("memory://").options == frozenset({"namespace"})
    for url, expected in [
        ("redis://h", {"namespace", "retry_for", "connect_timeout"}),
        ("postgresql://h/db", {"pool_size", "retry_seconds", "table_prefix", "schema", "connect_timeout"}),
        ("sqlite:///x.db", {"busy_timeout", "poll_interval", "write_gap", "retry_seconds"}),
        ("example://x", {"namespace"}),
    ]:
        try:
            spec = manager.resolve(url)
        except UnknownBackendScheme:
            continue
        assert spec.options is not None and expected <= spec.options, url


def test_redis_connect_timeout_becomes_socket_timeout_and_retry_budget() -> None:
    plugin = pytest.importorskip("bananas_redis.plugin")
    from bananas import BackendOptions

    url, opts = plugin.with_connect_timeout("redis://h:1/0", BackendOptions(extra={"connect_timeout": 2.5}))
    assert url == "redis://h:1/0?socket_connect_timeout=2.5" and opts.extra["retry_for"] == 2.5
    url, opts = plugin.with_connect_timeout(
        "redis://h:1/0?connect_timeout=3&socket_connect_timeout=1", BackendOptions(extra={"connect_timeout": "3"})
    )
    assert url == "redis://h:1/0?socket_connect_timeout=1" and opts.extra["retry_for"] == 3.0
    with pytest.raises(bananas.ConfigError, match="connect_timeout must be a number of seconds > 0"):
        plugin.with_connect_timeout("redis://h", BackendOptions(extra={"connect_timeout": "soon"}))


def test_postgres_connect_timeout_reaches_libpq_and_the_retry_budget() -> None:
    plugin = pytest.importorskip("bananas_sql.plugin")
    from bananas import BackendOptions

    url, opts = plugin.with_connect_timeout("postgresql://u@h/db", BackendOptions(extra={"connect_timeout": 2.5}))
    assert url == "postgresql://u@h/db?connect_timeout=3" and opts.extra["retry_seconds"] == 2.5
    url, _ = plugin.with_connect_timeout(
        "postgresql://u@h/db?connect_timeout=9", BackendOptions(extra={"connect_timeout": 9})
    )
    assert url == "postgresql://u@h/db?connect_timeout=9"


def test_a_client_for_an_unreachable_redis_fails_within_its_connect_timeout() -> None:
    pytest.importorskip("bananas_redis")
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with (
        bananas.Client(f"redis://127.0.0.1:{port}/0", connect_timeout=1) as client,
        pytest.raises(bananas.BackendUnavailable),
    ):
        client.submit_job("x")
    assert time.monotonic() - started < 5  # the default budget is 30 s

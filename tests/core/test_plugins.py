"""Plugin discovery through the ``bananas`` entry point group (pluggy)."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import subprocess
import sys
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


def test_a_broken_import_in_a_factory_is_not_called_a_missing_package(make_plugin: MakePlugin) -> None:
    body = textwrap.dedent("""
        from bananas.plugins import BackendSpec, hookimpl

        def _factory(url, options):
            from json import no_such_name  # noqa: F401  (an ImportError, not a missing module)

        @hookimpl
        def bananas_backends():
            return [BackendSpec(name="buggy", schemes=("buggy",), factory=_factory)]
    """)
    make_plugin("bananas-buggy", "bananas_buggy_plugin", body=body)
    with pytest.raises(ImportError, match="no_such_name") as info:
        bananas.connect("buggy://x")
    assert not isinstance(info.value, PluginError) and "pip install" not in str(info.value)


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
from bananas.backends.memory import CAPABILITIES, connect_memory
from bananas.plugins import BackendSpec, hookimpl

@hookimpl
def bananas_backends():
    return [BackendSpec(name={name!r}, schemes=({scheme!r},), factory=connect_memory, capabilities=CAPABILITIES,
                        options={options!r})]
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


# -- hooks dispatched through pluggy -------------------------------------------------------


def test_a_hookimpl_is_dispatched_by_pluggy_whatever_its_name(make_plugin: MakePlugin) -> None:
    """``@hookimpl(specname=...)`` works only if the manager calls ``pm.hook``: the marker means something."""
    body = textwrap.dedent("""
        from bananas.plugins import BackendSpec, hookimpl

        @hookimpl(specname="bananas_backends")
        def my_backends():
            return [BackendSpec(name="named", schemes="named", factory=lambda url, options: None)]
    """)
    make_plugin("bananas-named", "bananas_named_plugin", body=body)
    assert manager.resolve("named://x").distribution == "bananas-named"


def test_an_unmarked_hook_function_still_counts(make_plugin: MakePlugin) -> None:
    """A plugin written without ``@hookimpl`` keeps working: a function named after a hook is one."""
    body = textwrap.dedent("""
        from bananas.plugins import BackendSpec

        def bananas_backends():
            return [BackendSpec(name="plain", schemes=("plain",), factory=lambda url, options: None)]

        def bananas_helper():  # named like a hook but no hook: not taken as one
            raise AssertionError("called")
    """)
    make_plugin("bananas-plain", "bananas_plain_plugin", body=body)
    assert manager.resolve("plain://x").name == "plain"


@pytest.mark.parametrize(
    ("body", "logged"),
    [
        ("VALUE = 1\n", "implements no hook: define bananas_backends"),
        (
            "from bananas.plugins import hookimpl\n@hookimpl\ndef bananas_backends(unknown_argument):\n    return []\n",
            "unknown_argument",
        ),
        ("def bananas_backends():\n    raise RuntimeError('listing broke')\n", "listing broke"),
        ("def bananas_backends():\n    return ['memory://']\n", "must return BackendSpec records, got 'memory://'"),
    ],
    ids=["no-hook", "bad-signature", "hook-raises", "not-a-spec"],
)
def test_a_plugin_with_a_broken_hook_is_logged_not_fatal(
    make_plugin: MakePlugin, caplog: pytest.LogCaptureFixture, body: str, logged: str, request: pytest.FixtureRequest
) -> None:
    module = f"bananas_odd_{request.node.callspec.id.replace('-', '_')}_plugin"  # one module per case
    make_plugin("bananas-odd", module, body=body)
    with caplog.at_level(logging.WARNING, logger="bananas.plugins"):
        assert manager.resolve("memory://").name == "memory"
    assert module in caplog.text and logged in caplog.text


# -- capabilities: declared once, in the spec ----------------------------------------------

CAPS_PLUGIN = """
from bananas.backends.memory import memory_backend
from bananas.backends._memory_store import MemoryStore
from bananas.plugins import BackendSpec, hookimpl

def _factory(url, options):
    return memory_backend(MemoryStore(), options, url=url, **{backend_kwargs})

@hookimpl
def bananas_backends():
    return [BackendSpec(name="caps", schemes=("caps",), factory=_factory, capabilities={spec_caps!r})]
"""


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_backend_gets_the_capabilities_its_spec_declares(make_plugin: MakePlugin, anyio_backend: str) -> None:
    body = CAPS_PLUGIN.format(backend_kwargs="{'capabilities': frozenset()}", spec_caps=("cron", "job_name_filter"))
    make_plugin("bananas-caps", "bananas_caps_given_plugin", body=body)
    async with bananas.connect("caps://") as backend:
        assert backend.capabilities == manager.resolve("caps://").capabilities
        assert backend.capabilities == {bananas.Capability.CRON, bananas.Capability.JOB_NAME_FILTER}


def test_a_backend_declaring_other_capabilities_than_its_spec_is_refused(make_plugin: MakePlugin) -> None:
    """The bug this prevents: ``bananas backends`` listing cron, then the worker refusing it."""
    body = CAPS_PLUGIN.format(
        backend_kwargs="{'capabilities': frozenset({Capability.DEAD_LETTER_ADMIN})}", spec_caps=("cron",)
    ).replace("from bananas.plugins", "from bananas.capabilities import Capability\nfrom bananas.plugins")
    make_plugin("bananas-caps", "bananas_caps_differ_plugin", body=body)
    with pytest.raises(PluginError) as info:
        bananas.connect("caps://")
    message = str(info.value)
    assert "bananas-caps" in message and "{dead_letter_admin}" in message and "{cron}" in message
    assert "declare them once, in the BackendSpec" in message


def test_capabilities_are_checked_when_the_spec_is_written() -> None:
    from bananas.plugins import BackendSpec

    assert BackendSpec(name="x", schemes="x", factory=bananas.connect, capabilities=["cron"]).capabilities == {
        bananas.Capability.CRON
    }
    with pytest.raises(ValueError, match="'crn' is not a valid Capability; the capabilities are cron, "):
        BackendSpec(name="x", schemes="x", factory=bananas.connect, capabilities=["crn"])
    with pytest.raises(TypeError, match="not one string"):
        BackendSpec(name="x", schemes="x", factory=bananas.connect, capabilities="cron")


def test_every_installed_backend_lists_what_it_connects_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``bananas backends`` and a connected Backend (what the worker checks) agree, for every plugin."""
    from bananas.cli import main

    assert main(["backends", "--json"]) == 0
    listed = {row["name"]: set(row["capabilities"]) for row in json.loads(capsys.readouterr().out)}
    urls = {  # connections open on first use: nothing here needs a server
        "memory": "memory://",
        "redis": "redis://127.0.0.1:1/0",
        "postgresql": "postgresql://u@127.0.0.1:1/db",
        "sqlite": f"sqlite:///{tmp_path}/caps.db",
        "example": "example://caps",
    }
    assert set(listed) <= set(urls), f"a backend this test does not know: {set(listed) - set(urls)}"

    async def connected(url: str) -> set[str]:
        async with bananas.connect(url) as backend:
            return {c.value for c in backend.capabilities}

    for name, caps in listed.items():
        assert asyncio.run(connected(urls[name])) == caps, name


AUTHOR_PLUGIN = """
from bananas import Backend, BackendOptions, Capability
from bananas.plugins import BackendSpec, hookimpl


def _create(url: str, options: BackendOptions) -> Backend:
    raise NotImplementedError(url)


async def _migrate(url: str, options: BackendOptions) -> None:
    return None


@hookimpl
def bananas_backends() -> list[BackendSpec]:
    return [
        BackendSpec(name="a", schemes="a", factory=_create, capabilities={Capability.CRON}),
        BackendSpec(name="b", schemes=("b", "b+tls"), factory=_create, capabilities=frozenset({Capability.CRON}),
                    migrate=_migrate, options=["depth"], description="b"),
        BackendSpec(name="c", schemes=["c"], factory=_create, capabilities=["cron", Capability.RESULT_TTL]),
    ]
"""


def test_a_plugin_module_type_checks_with_no_ignores(tmp_path: Path) -> None:
    """What a plugin author writes (and the example backend's plugin) passes ``mypy --strict``
    with no ``type: ignore``; an ignore left in would be reported as unused."""
    (tmp_path / "author_plugin.py").write_text(AUTHOR_PLUGIN)
    example = Path(__file__).parents[2] / "contrib/example_backend/src/bananas_example/plugin.py"
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--warn-unused-ignores", "--no-incremental",
         "author_plugin.py", str(example)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "type: ignore" not in example.read_text()

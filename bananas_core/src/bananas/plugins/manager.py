"""The plugin manager: built once, fed by the ``bananas`` entry point group."""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import logging
import os
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import attrs
import pluggy

from bananas.backend import Backend, BackendOptions, redact_url, validate_namespace
from bananas.errors import PluginError, UnknownBackendScheme
from bananas.plugins import hookspecs
from bananas.plugins.types import BackendSpec

__all__ = [
    "DISABLE_ENV",
    "HOOK_NAMES",
    "UNIVERSAL_OPTIONS",
    "accepted_options",
    "backend_specs",
    "check_options",
    "connect",
    "get_plugin_manager",
    "reload_plugins",
    "resolve",
    "with_spec_capabilities",
]

log = logging.getLogger("bananas.plugins")

ENTRY_POINT_GROUP = "bananas"
DISABLE_ENV = "BANANAS_DISABLE_PLUGINS"
"""Comma-separated entry point names not to load (``*`` for every third-party plugin)."""

BUILTIN_PLUGINS = frozenset({"memory"})

WELL_KNOWN = {
    "redis": "bananas[redis]",
    "rediss": "bananas[redis]",
    "redis+sentinel": "bananas[redis]",
    "redis+cluster": "bananas[redis]",
    "postgresql": "bananas[postgres]",
    "postgres": "bananas[postgres]",
    "postgresql+psycopg": "bananas[postgres]",
    "sqlite": "bananas[sqlite]",
}


def _disabled() -> set[str]:
    return {name.strip() for name in os.environ.get(DISABLE_ENV, "").split(",") if name.strip()}


HOOK_NAMES = frozenset(
    name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("bananas_")
)
"""Every hook a plugin may implement (the functions of :mod:`bananas.plugins.hookspecs`)."""


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager, also taking an unmarked module-level function named after a hook
    (``def bananas_backends()``) as its implementation, as pytest takes ``pytest_*`` functions:
    plugins written before ``@hookimpl`` was required keep working."""

    def parse_hookimpl_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name in HOOK_NAMES and inspect.isfunction(inspect.getattr_static(plugin, name, None)):
            plain: pluggy.HookimplOpts = {  # a dict literal: no runtime use of the typing-only name
                "wrapper": False, "hookwrapper": False, "optionalhook": False,
                "tryfirst": False, "trylast": False, "specname": None,
            }  # fmt: skip
            opts = plain
        return opts


@functools.cache
def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, loading every ``bananas`` entry point once.

    A plugin that fails to import, or whose hooks do not match their specs, is logged and
    skipped, never fatal.
    """
    pm = _PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    disabled = _disabled()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in disabled or ("*" in disabled and ep.name not in BUILTIN_PLUGINS):
            log.info("bananas plugin %r disabled by %s", ep.name, DISABLE_ENV)
            continue
        if pm.get_plugin(ep.name) is not None:
            continue
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin must not take the others down
            log.warning("could not load bananas plugin %r (%s): %s", ep.name, ep.value, exc)
            continue
        try:
            pm.register(plugin, name=ep.name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            log.warning("could not register bananas plugin %r (%s): %s", ep.name, ep.value, exc)
            continue
        if not pm.get_hookcallers(plugin):
            log.warning(
                "bananas plugin %r (%s) implements no hook: define %s (marked with @bananas.hookimpl)",
                ep.name, ep.value, " or ".join(sorted(HOOK_NAMES)),
            )  # fmt: skip
        _DISTRIBUTIONS[ep.name] = ep.dist.name if ep.dist is not None else ""
    return pm


_DISTRIBUTIONS: dict[str, str] = {}


def reload_plugins() -> None:
    """Forget the loaded plugins; the next lookup scans the entry points again."""
    get_plugin_manager.cache_clear()
    _schemes.cache_clear()
    _DISTRIBUTIONS.clear()


def _specs_by_plugin(pm: pluggy.PluginManager) -> Iterator[tuple[str, list[BackendSpec]]]:
    """Each plugin's ``bananas_backends()``, called through ``pm.hook`` one plugin at a time, so
    that every spec is credited to its distribution and a failing plugin is logged and skipped."""
    plugins = pm.get_plugins()
    for impl in reversed(pm.hook.bananas_backends.get_hookimpls()):  # pluggy's own call order
        others = [p for p in plugins if p is not impl.plugin]
        hook = pm.subset_hook_caller("bananas_backends", remove_plugins=others)
        try:
            specs = [spec for result in hook() for spec in result]
        except Exception as exc:
            log.warning("bananas plugin %r failed to list its backends: %s", impl.plugin_name, exc)
            continue
        wrong = [spec for spec in specs if not isinstance(spec, BackendSpec)]
        if wrong:
            log.warning(
                "bananas plugin %r ignored: bananas_backends() must return BackendSpec records, got %r",
                impl.plugin_name, wrong[0],
            )  # fmt: skip
            continue
        yield impl.plugin_name, specs


@functools.cache
def _schemes() -> dict[str, BackendSpec]:
    table: dict[str, BackendSpec] = {}
    for plugin_name, specs in _specs_by_plugin(get_plugin_manager()):
        for spec in specs:
            spec = attrs.evolve(spec, distribution=_DISTRIBUTIONS.get(plugin_name, plugin_name))
            for scheme in spec.schemes:
                other = table.get(scheme)
                if other is not None and other.name != spec.name:
                    raise PluginError(
                        f"URL scheme {scheme!r} is claimed by two backends: {other.name!r} "
                        f"(from {other.distribution}) and {spec.name!r} (from {spec.distribution}); "
                        f"uninstall one, or block it with {DISABLE_ENV}"
                    )
                table[scheme] = spec
    return table


def backend_specs() -> list[BackendSpec]:
    """Every installed backend, once each, ordered by name."""
    unique = {spec.name: spec for spec in _schemes().values()}
    return [unique[name] for name in sorted(unique)]


def _scheme_of(url: str) -> str:
    if "://" not in url:
        raise UnknownBackendScheme(
            f"{redact_url(url)!r} is not a backend URL; expected SCHEME://..., for example "
            "redis://localhost:6379/0, postgresql://localhost/app, sqlite:///jobs.db or memory://"
        )
    return url.split("://", 1)[0].lower()


def resolve(url: str) -> BackendSpec:
    """The installed backend serving ``url``'s scheme; raises :class:`UnknownBackendScheme`."""
    scheme = _scheme_of(url)
    table = _schemes()
    spec = table.get(scheme)
    if spec is not None:
        return spec
    installed = ", ".join(f"{s}://" for s in sorted(table)) or "none"
    hint = f"; install it with: pip install {WELL_KNOWN[scheme]}" if scheme in WELL_KNOWN else ""
    raise UnknownBackendScheme(f"no installed backend serves {scheme}:// URLs{hint} (installed schemes: {installed})")


UNIVERSAL_OPTIONS = frozenset({"namespace", "connect_timeout"})
"""Keyword options every backend accepts (backends without a network connection ignore
``connect_timeout``)."""


def accepted_options(spec: BackendSpec) -> frozenset[str] | None:
    """Every keyword argument :func:`connect` takes for ``spec`` (``None``: anything)."""
    if spec.options is None:
        return None
    known = {f.name for f in attrs.fields(BackendOptions)} - {"extra"}
    return frozenset(known | UNIVERSAL_OPTIONS | spec.options | {"extra"})


def _duration(value: Any) -> Any:
    """A timedelta as seconds; anything else unchanged (the backend checks it)."""
    return value.total_seconds() if isinstance(value, timedelta) else value


def check_options(url: str, options: Mapping[str, Any]) -> None:
    """Raise ``TypeError`` naming the accepted options if ``options`` has a keyword the
    backend serving ``url`` does not declare (see :attr:`BackendSpec.options`)."""
    accepted = accepted_options(resolve(url))
    if accepted is None:
        return
    unknown = sorted(set(options) - accepted)
    if unknown:
        spec = resolve(url)
        raise TypeError(
            f"unknown option(s) {', '.join(unknown)} for the {spec.name} backend; "
            f"accepted: {', '.join(sorted(accepted - {'extra'}))} (or extra={{...}} for anything else)"
        )


def connect(url: str, **options: Any) -> Backend:
    """A :class:`Backend` for ``url``, built by the plugin that serves its scheme.

    Keyword arguments set :class:`BackendOptions` fields (``clock``, ``result_success_ttl``,
    ...; durations in seconds or as ``timedelta``) or the backend's own options (those its
    :class:`BackendSpec` declares, plus ``namespace`` and ``connect_timeout``); any other
    keyword raises ``TypeError`` naming the accepted ones. ``extra={...}`` and the URL's
    query parameters reach the backend unchecked. Connections are opened on first use.
    """
    spec = resolve(url)
    check_options(url, options)
    known = {f.name for f in attrs.fields(BackendOptions)} - {"extra"}
    extra: dict[str, Any] = dict(parse_qsl(urlsplit(url).query))
    extra.update(options.pop("extra", {}) or {})
    extra.update({k: _duration(v) for k, v in options.items() if k not in known})
    if extra.get("namespace") is not None:  # one rule for every backend, third-party ones too
        validate_namespace(extra["namespace"])
    opts = BackendOptions(**{k: _duration(v) for k, v in options.items() if k in known}, extra=extra)
    try:
        backend = spec.factory(url, opts)
    except ModuleNotFoundError as exc:  # not any ImportError: a circular or broken import is a bug to show
        hint = WELL_KNOWN.get(_scheme_of(url), spec.distribution)
        raise PluginError(
            f"the {spec.name!r} backend for {redact_url(url)} needs a package that is not installed "
            f"({exc.name or exc}); install it with: pip install {hint}"
        ) from exc
    return with_spec_capabilities(spec, backend)


def with_spec_capabilities(spec: BackendSpec, backend: Backend) -> Backend:
    """``backend`` with the capabilities its :class:`BackendSpec` declares: the one declaration,
    so ``bananas backends`` and the worker see the same set.

    A factory leaves ``capabilities`` out of ``Backend(...)``; one that passes a different,
    non-empty set is a plugin bug, refused with :class:`PluginError` naming both sets.
    """
    if backend.capabilities and backend.capabilities != spec.capabilities:
        names = ", ".join(sorted(backend.capabilities)), ", ".join(sorted(spec.capabilities)) or "none"
        raise PluginError(
            f"the {spec.name!r} backend (from {spec.distribution or 'an unknown distribution'}) declares its "
            f"capabilities twice and they differ: its Backend says {{{names[0]}}}, its BackendSpec says "
            f"{{{names[1]}}}; declare them once, in the BackendSpec, and leave capabilities out of Backend(...)"
        )
    backend.capabilities = spec.capabilities
    return backend

"""Plugin discovery: backends come from the ``bananas`` entry point group, through pluggy."""

from bananas.plugins.hookspecs import hookimpl
from bananas.plugins.manager import backend_specs, connect, get_plugin_manager, reload_plugins, resolve
from bananas.plugins.types import BackendFactory, BackendSpec, SchemaMigrator

__all__ = [
    "BackendFactory",
    "BackendSpec",
    "SchemaMigrator",
    "backend_specs",
    "connect",
    "get_plugin_manager",
    "hookimpl",
    "reload_plugins",
    "resolve",
]

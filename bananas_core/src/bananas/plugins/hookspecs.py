"""The hooks a Bananas plugin may implement. Mark implementations with :data:`hookimpl`."""

from __future__ import annotations

from collections.abc import Iterable

import pluggy

from bananas.plugins.types import BackendSpec

PROJECT = "bananas"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def bananas_backends() -> Iterable[BackendSpec]:  # type: ignore[empty-body]
    """Return the storage backends this plugin provides, one :class:`BackendSpec` each."""

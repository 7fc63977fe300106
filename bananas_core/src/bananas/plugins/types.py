"""Plain records that plugins hand to the core."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import attrs

from bananas.backend import Backend, BackendOptions
from bananas.capabilities import Capability

__all__ = ["BackendFactory", "BackendSpec", "SchemaMigrator"]

BackendFactory = Callable[[str, BackendOptions], Backend]
"""Builds a backend for a URL. Imports its storage client inside, so discovery stays light;
connections are opened lazily, on first use."""

SchemaMigrator = Callable[[str, BackendOptions], Awaitable[str | None]]
"""Creates or upgrades the backend's storage schema for a URL (``bananas db upgrade``); may
return what it did, in one line (``applied 3 -> 4: ...``), which the command prints."""


def _schemes(value: str | Iterable[str]) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str) else tuple(value)
    return tuple(str(s).lower() for s in items)


def _capabilities(values: Iterable[Capability | str]) -> frozenset[Capability]:
    if isinstance(values, str):
        raise TypeError("BackendSpec.capabilities must be a collection of capabilities, not one string")
    try:
        return frozenset(Capability(v) for v in values)
    except ValueError as exc:
        known = ", ".join(c.value for c in Capability)
        raise ValueError(f"BackendSpec.capabilities: {exc}; the capabilities are {known}") from None


def _options(values: Iterable[str] | None) -> frozenset[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        raise TypeError("BackendSpec.options must be a collection of option names, not one string")
    return frozenset(str(v) for v in values)


@attrs.frozen(kw_only=True)
class BackendSpec:
    """A storage backend a plugin offers: its name, URL schemes, factory and capabilities.

    ``capabilities`` is the one declaration of what the backend offers (members of
    :class:`~bananas.capabilities.Capability`, or their names): :func:`bananas.connect` gives
    it to the :class:`~bananas.backend.Backend` the factory builds, and ``bananas backends``
    lists it. Every field is typed for plain values (a tuple or set of schemes, capabilities
    or options), so a plugin needs no ``type: ignore``.
    """

    name: str
    schemes: tuple[str, ...] = attrs.field(converter=_schemes)
    factory: BackendFactory
    capabilities: frozenset[Capability] = attrs.field(default=frozenset(), converter=_capabilities)
    description: str = ""
    migrate: SchemaMigrator | None = None
    distribution: str = ""
    """Filled in by the plugin manager: the distribution the plugin came from."""
    options: frozenset[str] | None = attrs.field(default=None, converter=_options)
    """The backend-specific keyword options the backend reads from ``BackendOptions.extra``
    (``namespace`` and ``connect_timeout`` are always accepted). :func:`bananas.connect`
    refuses any other keyword argument, naming the accepted ones. ``None`` (the default,
    for specs written before this field existed) accepts anything. URL query parameters are
    never checked: backends pass unknown ones on to their driver."""

    @schemes.validator
    def _check_schemes(self, _attr: object, value: tuple[str, ...]) -> None:
        if not value:
            raise ValueError(f"backend {self.name!r} must serve at least one URL scheme")

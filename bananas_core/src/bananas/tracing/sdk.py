"""Setting up the OpenTelemetry SDK from the standard ``OTEL_*`` variables (``bananas worker``)."""

from __future__ import annotations

import logging
import os
from importlib.metadata import entry_points
from typing import Any

from bananas.errors import ConfigError

__all__ = ["configure"]

log = logging.getLogger("bananas.tracing")

_GROUP = "opentelemetry_traces_exporter"
"""The entry point group where exporter packages register their span exporters (by name)."""
_OTLP_BY_PROTOCOL = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
DEFAULT_SERVICE_NAME = "bananas-worker"


def configure(names: str) -> bool:
    """Set a tracer provider exporting through the exporters ``names`` lists (the value of
    ``OTEL_TRACES_EXPORTER``, comma-separated), unless the application has set one.

    Returns True if it set one. Raises :class:`ConfigError` if the SDK is not installed or
    an exporter name is not provided by any installed package.
    """
    from opentelemetry import trace

    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        log.debug("the application set its own tracer provider: OTEL_TRACES_EXPORTER is left to it")
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER={names} needs the OpenTelemetry SDK: pip install 'bananas-core[otel]' "
            "(or unset OTEL_TRACES_EXPORTER)"
        ) from None
    exporters = [_exporter(name.strip()) for name in names.split(",") if name.strip()]
    attributes: dict[str, Any] = {}
    if not os.environ.get("OTEL_SERVICE_NAME") and "service.name=" not in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        attributes["service.name"] = DEFAULT_SERVICE_NAME
    provider = TracerProvider(resource=Resource.create(attributes))  # sampler: OTEL_TRACES_SAMPLER
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_* tune it
    trace.set_tracer_provider(provider)
    log.info(
        "tracing: spans of service %s go to %s",
        provider.resource.attributes.get("service.name"),
        ", ".join(name.strip() for name in names.split(",") if name.strip()),
    )
    return True


def _exporter(name: str) -> Any:
    """A new span exporter registered under ``name`` (``otlp``: by ``OTEL_EXPORTER_OTLP_PROTOCOL``)."""
    wanted = name
    if name == "otlp":
        protocol = (
            os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
        ).strip() or "grpc"
        if protocol not in _OTLP_BY_PROTOCOL:
            allowed = ", ".join(_OTLP_BY_PROTOCOL)
            raise ConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL {protocol!r} is not supported for traces: use {allowed}")
        wanted = _OTLP_BY_PROTOCOL[protocol]
    found = {ep.name: ep for ep in entry_points(group=_GROUP)}
    if wanted not in found:
        hint = " (pip install opentelemetry-exporter-otlp)" if wanted.startswith("otlp") else ""
        known = ", ".join(sorted({"none", *found})) or "none"
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER names {name!r}, which no installed package provides{hint}; installed: {known}"
        )
    try:
        return found[wanted].load()()
    except Exception as exc:  # the exporter's own configuration (endpoint, headers) is wrong
        raise ConfigError(f"OTEL_TRACES_EXPORTER {name!r}: the exporter could not start: {exc}") from None

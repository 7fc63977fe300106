"""OpenTelemetry tracing of jobs, from the code that submits them to the worker that runs them.

When ``opentelemetry-api`` is installed (``pip install bananas-core[otel]``), Bananas traces
by itself; nothing is imported from OpenTelemetry until the first submit or attempt, and
nothing at all when the API is absent. Spans go wherever the application's tracer provider
sends them (none set: nowhere); ``bananas worker`` sets one up from the standard ``OTEL_*``
variables when ``opentelemetry-sdk`` is installed (see :func:`configure_from_environment`).

- every submit makes a PRODUCER span (``send <routing key>``; a batch of ``submit_many``
  makes a ``create`` span per job and one CLIENT ``send`` span linked to them) and the job
  carries its context, W3C ``traceparent`` / ``tracestate``, in the wire field
  :data:`FIELD` (other implementations ignore it);
- every attempt runs in a CONSUMER span (``process <routing key>``), a child of that
  context: a job's retries are attempts in the trace of its submit; a failed attempt has
  ERROR status and an ``exception`` event; the handler's own spans nest under it;
- a cron schedule's job starts a new trace, linked to the span current when it fired.

Attributes follow the OpenTelemetry messaging semantic conventions: ``messaging.system``
``bananas``, ``messaging.operation.name`` / ``.type`` (``send``, ``create``, ``process``),
``messaging.destination.name`` (the routing key), ``messaging.message.id`` (the job id),
plus ``bananas.job.name``, ``bananas.job.priority`` and ``bananas.job.attempt``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bananas.observe import Observer

__all__ = ["FIELD", "api_available", "builtin_observer", "configure_from_environment", "log_fields"]

FIELD = "trace_context"
"""The job's wire field that carries the W3C trace context: ``{"traceparent": ..., "tracestate": ...}``."""


def api_available() -> bool:
    """True if the OpenTelemetry API is installed here (found without importing any of it)."""
    try:
        spec = importlib.util.find_spec("opentelemetry")
    except (ImportError, ValueError):  # a finder that refuses it, or a broken install
        return False
    places = spec.submodule_search_locations if spec is not None else None
    return any(os.path.isfile(os.path.join(place, "trace", "__init__.py")) for place in places or ())


def builtin_observer() -> Observer | None:
    """The tracing observer Bananas registers by itself (:mod:`bananas.observe`) when the
    OpenTelemetry API is installed and ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` does not
    name ``bananas``; else ``None``. It imports the API on its first use."""
    disabled = os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    if "bananas" in (name.strip() for name in disabled.split(",")) or not api_available():
        return None
    from bananas.tracing.lazy import LazyTracing

    return LazyTracing()


def log_fields(job_id: str | None = None) -> dict[str, str]:
    """``trace_id`` / ``span_id`` for a log line: of the current span, else of the latest traced
    attempt of job ``job_id`` (its outcome is logged after its span ended); empty when there is
    none or when tracing has not been loaded (so logging never imports OpenTelemetry)."""
    spans = sys.modules.get("bananas.tracing.spans")
    if spans is None:
        return {}
    ids: dict[str, str] = spans.current_ids(job_id)
    return ids


def configure_from_environment() -> bool:
    """Set up the OpenTelemetry SDK from the ``OTEL_*`` variables, as ``bananas worker`` does.

    Does something only when ``OTEL_TRACES_EXPORTER`` names exporters (``console``,
    ``otlp``, ...; ``none`` or unset: nothing), the application has not set a tracer
    provider of its own (it keeps it) and ``opentelemetry-sdk`` is installed. Returns True
    if it set a tracer provider. Raises :class:`~bananas.errors.ConfigError` for an exporter
    no installed package provides, or when the SDK is missing.
    """
    import os

    names = os.environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if not names or names.lower() == "none":
        return False  # the common case decides without importing anything
    from bananas.tracing.sdk import configure

    return configure(names)

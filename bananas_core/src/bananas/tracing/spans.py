"""The tracing observer: OpenTelemetry spans for submits and attempts, W3C trace context in the job.

Imports the OpenTelemetry API (only the API): it is loaded on the first submit or attempt
of a process where ``opentelemetry-api`` is installed, never otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from bananas.job import Job
from bananas.observe import Attempt, Observer
from bananas.timefmt import format_time
from bananas.tracing import FIELD

__all__ = ["TracingObserver", "current_ids", "extract", "inject"]

_W3C = TraceContextTextMapPropagator()
_ERROR_TEXT = 1000
"""Characters of a job's error kept in a span's status description."""

SYSTEM = "bananas"
SEND, CREATE, PROCESS = "send", "create", "process"


def inject(job: Job, context: Context | None = None) -> Job:
    """A copy of ``job`` carrying the trace context of ``context`` (default: the current one)
    in its ``trace_context`` field; ``job`` itself when that context holds no valid span."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context)
    if "traceparent" not in carrier:
        return job
    return job.evolve(extra={**job.extra, FIELD: carrier})


def extract(job: Job) -> Context:
    """The context ``job`` was submitted in (its producer span, a remote parent), or an empty
    context when it carries none: a job of another producer, or one whose field is malformed."""
    carrier = job.extra.get(FIELD)
    if not isinstance(carrier, Mapping):
        return Context()
    fields = {k: v for k, v in carrier.items() if k in ("traceparent", "tracestate") and isinstance(v, str)}
    if "traceparent" not in fields:
        return Context()
    return _W3C.extract(fields, Context())


_RECENT: dict[str, dict[str, str]] = {}
"""Job id -> the ids of its latest attempt's span, for the lines logged when the attempt is
recorded (after its span ended); the oldest go beyond :data:`_RECENT_LIMIT`."""
_RECENT_LIMIT = 4096
_RECENT_LOCK = threading.Lock()


def current_ids(job_id: str | None = None) -> dict[str, str]:
    """``trace_id`` and ``span_id`` (lower-case hex) for a log line: of the current span, else of
    the latest attempt of ``job_id`` if it was traced here; empty otherwise."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return _RECENT.get(job_id, {}) if job_id is not None else {}
    return _ids(span_context)


def _ids(span_context: trace.SpanContext) -> dict[str, str]:
    return {"trace_id": f"{span_context.trace_id:032x}", "span_id": f"{span_context.span_id:016x}"}


def _remember(job_id: str, span_context: trace.SpanContext) -> None:
    if not span_context.is_valid:
        return
    with _RECENT_LOCK:  # workers on several threads' loops
        _RECENT.pop(job_id, None)
        _RECENT[job_id] = _ids(span_context)
        if len(_RECENT) > _RECENT_LIMIT:
            del _RECENT[next(iter(_RECENT))]


def _attributes(job: Job, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": SYSTEM,
        "messaging.operation.name": operation,
        "messaging.operation.type": operation,  # send, create and process: names and types coincide
        "messaging.destination.name": job.routing_key,
        "messaging.message.id": job.id,
        "bananas.job.name": job.name,
        "bananas.job.priority": job.priority.value,
    }


def _fail(span: Span, error: str, exception: BaseException | None) -> None:
    """Mark ``span`` failed: ERROR status with ``error``, and an ``exception`` event."""
    if exception is not None:
        span.record_exception(exception)
        kind = type(exception).__qualname__
    else:  # a timeout, a missing handler, a result that is not JSON: no exception object
        kind = error.partition(":")[0].strip() or "Error"
        span.add_event("exception", {"exception.type": kind, "exception.message": error})
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, error[:_ERROR_TEXT]))


class _Submit(AbstractContextManager[Sequence[Job]]):
    """The spans of one write of jobs; their trace context is injected into the jobs written.

    One job: a PRODUCER ``send`` span, whose context the job carries. Several (a batch of
    ``submit_many``): a PRODUCER ``create`` span per job, which that job carries, and one
    CLIENT ``send`` span for the write, linked to each of them (the messaging semantic
    conventions for batches). The ``send`` span is current during the write, so the store
    client's own spans (an instrumented Redis or PostgreSQL driver) nest under it.
    """

    __slots__ = ("_batch", "_extra", "_jobs", "_links", "_root", "_spans", "_token", "_tracer")

    def __init__(
        self,
        tracer: trace.Tracer,
        jobs: Sequence[Job],
        *,
        root: bool = False,
        links: Sequence[Link] = (),
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        self._tracer = tracer
        self._extra = attributes or {}
        self._jobs = jobs
        self._root = root
        self._links = links
        self._spans: list[Span] = []
        self._batch: Span | None = None
        self._token: object = None

    def __enter__(self) -> Sequence[Job]:
        jobs = self._jobs
        parent = Context() if self._root else None  # a root: a new trace, not the caller's
        if len(jobs) == 1:
            job = jobs[0]
            span = self._tracer.start_span(
                f"{SEND} {job.routing_key}",
                context=parent,
                kind=SpanKind.PRODUCER,
                attributes={**_attributes(job, SEND), **self._extra},
                links=self._links,
            )
            self._spans.append(span)
            context = trace.set_span_in_context(span, parent)
            self._token = otel_context.attach(context)
            return [inject(job, context)]
        out = []
        for job in jobs:
            span = self._tracer.start_span(
                f"{CREATE} {job.routing_key}",
                context=parent,
                kind=SpanKind.PRODUCER,
                attributes={**_attributes(job, CREATE), **self._extra},
                links=self._links,
            )
            span.end()
            self._spans.append(span)
            out.append(inject(job, trace.set_span_in_context(span, parent)))
        keys = {job.routing_key for job in jobs}
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.name": SEND,
            "messaging.operation.type": SEND,
            "messaging.batch.message_count": len(jobs),
        }
        if len(keys) == 1:
            attributes["messaging.destination.name"] = next(iter(keys))
        self._batch = self._tracer.start_span(
            f"{SEND} {next(iter(keys))}" if len(keys) == 1 else SEND,
            context=parent,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            links=[Link(s.get_span_context()) for s in self._spans if s.get_span_context().is_valid],
        )
        self._token = otel_context.attach(trace.set_span_in_context(self._batch, parent))
        return out

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
        span = self._batch if self._batch is not None else (self._spans[0] if self._spans else None)
        if span is None:
            return
        if exc is not None:
            _fail(span, f"{type(exc).__name__}: {exc}", exc)
        span.end()


class _Process(AbstractContextManager[None]):
    """The CONSUMER ``process`` span of one attempt, current while the handler runs: a child
    of the context the job carries (so every attempt of a job is in the trace of its submit)."""

    __slots__ = ("_attempt", "_span", "_token", "_tracer")

    def __init__(self, tracer: trace.Tracer, attempt: Attempt) -> None:
        self._tracer = tracer
        self._attempt = attempt
        self._span: Span | None = None
        self._token: object = None

    def __enter__(self) -> None:
        job = self._attempt.job
        attributes = _attributes(job, PROCESS)
        attributes["bananas.job.attempt"] = job.attempts + 1
        if self._attempt.worker_id:
            attributes["bananas.worker.id"] = self._attempt.worker_id
        span = self._tracer.start_span(
            f"{PROCESS} {job.routing_key}", context=extract(job), kind=SpanKind.CONSUMER, attributes=attributes
        )
        self._span = span
        self._token = otel_context.attach(trace.set_span_in_context(span))

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        span, attempt = self._span, self._attempt
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
        if span is None:
            return
        if attempt.error:
            _fail(span, attempt.error, attempt.exception)
            if attempt.timed_out:
                span.set_attribute("bananas.job.timed_out", True)
        elif not attempt.finished:  # cancelled: the worker stopped; the job runs again
            span.set_attribute("bananas.job.cancelled", True)
        if span.is_recording():  # a span of a real tracer (not the no-op one's copy of the parent)
            _remember(attempt.job.id, span.get_span_context())
        span.end()


class TracingObserver(Observer):
    """Spans for every submit (PRODUCER) and every attempt (CONSUMER), following the
    OpenTelemetry messaging semantic conventions; the trace context travels in the job.

    ``tracer_provider`` defaults to the global one (followed as it is set, even later).
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        from bananas import __version__

        self.tracer = trace.get_tracer("bananas", __version__, tracer_provider=tracer_provider)

    def submitting(self, jobs: Sequence[Job]) -> AbstractContextManager[Sequence[Job] | None] | None:
        """PRODUCER span(s) around the write, their context injected into the jobs written."""
        return _Submit(self.tracer, jobs) if jobs else None

    def firing(self, schedule_id: str, tick: datetime, jobs: Sequence[Job]) -> AbstractContextManager[Any] | None:
        """A cron tick's job starts a new trace: a root PRODUCER span, linked to the span
        current when it fired, if there is one."""
        current = trace.get_current_span().get_span_context()
        links = [Link(current)] if current.is_valid else []
        attributes = {"bananas.cron.schedule_id": schedule_id, "bananas.cron.tick": format_time(tick)}
        return _Submit(self.tracer, jobs, root=True, links=links, attributes=attributes) if jobs else None

    def attempt(self, attempt: Attempt) -> AbstractContextManager[Any] | None:
        """The CONSUMER span of the attempt, current while the handler runs."""
        return _Process(self.tracer, attempt)

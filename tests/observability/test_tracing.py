"""Tracing in one process, on ``memory://``: the spans of submits, attempts and cron fires, and
the W3C trace context the job carries between them.

A test's own tracer provider (the SDK's, exporting to memory) is given to a
:class:`~bananas.tracing.spans.TracingObserver` registered for the test: the global provider
can be set only once per process, and the other tests must not trace.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from bananas import AsyncClient, Backend, Client, Job, JobContext, Registry, connect, observe
from bananas.clock import ManualClock
from bananas.scheduler import CronScheduler, Schedule
from bananas.tracing import FIELD
from bananas.tracing.spans import TracingObserver, extract, inject
from bananas.worker import Executor
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags, TraceState

pytestmark = pytest.mark.anyio


class Traced:
    """The test's tracer provider, its in-memory exporter and the observer registered with them."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")
        self.observer = TracingObserver(self.provider)

    def spans(self, kind: SpanKind | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if kind is None or s.kind is kind]

    def by_message(self, job_id: str, kind: SpanKind) -> list[ReadableSpan]:
        return [s for s in self.spans(kind) if (s.attributes or {}).get("messaging.message.id") == job_id]


@pytest.fixture
def traced() -> Iterator[Traced]:
    t = Traced()
    observe.add_observer(t.observer)
    try:
        yield t
    finally:
        observe.remove_observer(t.observer)
        t.provider.shutdown()


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = connect(f"memory://tracing-{uuid.uuid4().hex}")
    yield b
    await b.close()


def traceparent(span: ReadableSpan) -> str:
    ctx = span.get_span_context()
    assert ctx is not None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


async def test_a_submit_is_a_producer_span_and_the_job_carries_its_context(backend: Backend, traced: Traced) -> None:
    async with AsyncClient(backend=backend) as client:
        with traced.tracer.start_as_current_span("request") as request:
            job_id = await client.submit_job_with_route("send_email", {"to": "a"}, "high", "emails")
        stored = await client.get_job(job_id)
    [producer] = traced.spans(SpanKind.PRODUCER)
    assert producer.name == "send emails"
    assert dict(producer.attributes or {}) == {
        "messaging.system": "bananas",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": "emails",
        "messaging.message.id": job_id,
        "bananas.job.name": "send_email",
        "bananas.job.priority": "high",
    }
    assert producer.parent is not None and producer.parent.span_id == request.get_span_context().span_id
    assert producer.context is not None and producer.context.trace_id == request.get_span_context().trace_id
    assert stored.extra[FIELD] == {"traceparent": traceparent(producer)}


def test_the_sync_client_makes_the_calling_threads_span_the_parent(traced: Traced) -> None:
    seen: list[int] = []

    def caller(client: Client) -> None:
        with traced.tracer.start_as_current_span("in a thread") as span:
            seen.append(span.get_span_context().span_id)
            client.submit_job("a")
            client.submit_many([{"name": "b"}, {"name": "c"}])

    with Client(f"memory://tracing-sync-{uuid.uuid4().hex}") as client:
        thread = threading.Thread(target=caller, args=(client,))
        thread.start()
        thread.join()
    producers = traced.spans(SpanKind.PRODUCER)
    [batch] = traced.spans(SpanKind.CLIENT)
    assert len(producers) == 3
    assert all(s.parent is not None and s.parent.span_id == seen[0] for s in [*producers, batch])


async def test_a_batch_has_a_create_span_per_job_and_one_linked_send_span(backend: Backend, traced: Traced) -> None:
    async with AsyncClient(backend=backend) as client:
        ids = await client.submit_many([{"name": "a"}, {"name": "b", "routing_key": "gpu"}, {"name": "c"}])
        stored = {job_id: await client.get_job(job_id) for job_id in ids}
    creates = traced.spans(SpanKind.PRODUCER)
    [send] = traced.spans(SpanKind.CLIENT)
    assert sorted(s.name for s in creates) == ["create default", "create default", "create gpu"]
    assert all((s.attributes or {})["messaging.operation.type"] == "create" for s in creates)
    assert send.name == "send" and (send.attributes or {})["messaging.batch.message_count"] == 3
    assert "messaging.destination.name" not in (send.attributes or {})  # two routing keys
    assert {link.context.span_id for link in send.links} == {s.context.span_id for s in creates if s.context}
    for span in creates:
        job_id = (span.attributes or {})["messaging.message.id"]
        assert isinstance(job_id, str) and stored[job_id].extra[FIELD]["traceparent"] == traceparent(span)


def test_the_send_span_is_current_while_the_store_writes(traced: Traced, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    with Client(f"memory://tracing-current-{uuid.uuid4().hex}") as client:
        queue = client.backend.queue
        for name in ("enqueue", "enqueue_many"):
            write = getattr(queue, name)

            async def spying(*args: object, _write: Any = write) -> Any:
                seen.append(trace.get_current_span().get_span_context().span_id)
                return await _write(*args)

            monkeypatch.setattr(queue, name, spying)
        client.submit_job("a")
        client.submit_many([{"name": "b"}, {"name": "c"}])
    [single, *_] = traced.spans(SpanKind.PRODUCER)
    [batch] = traced.spans(SpanKind.CLIENT)
    writes = list(dict.fromkeys(seen))  # one write may call the other (enqueue -> enqueue_many)
    assert writes == [s.context.span_id for s in (single, batch) if s.context is not None]


async def test_a_failed_write_ends_the_producer_span_with_an_error(backend: Backend, traced: Traced) -> None:
    async with AsyncClient(backend=backend) as client:
        await client.submit_job("a", job_id="taken")
        with pytest.raises(Exception, match="taken"):
            await client.submit_job("a", job_id="taken")
    ok, failed = traced.spans(SpanKind.PRODUCER)
    assert ok.status.status_code is StatusCode.UNSET
    assert failed.status.status_code is StatusCode.ERROR and "taken" in (failed.status.description or "")
    assert [e.name for e in failed.events] == ["exception"]


def registry_for(seen: list[tuple[str, int, int]]) -> Registry:
    registry = Registry()

    @registry.handler("ok")
    async def ok(ctx: JobContext, job: Job) -> str:
        span = trace.get_current_span().get_span_context()
        seen.append(("ok", span.trace_id, span.span_id))
        return "done"

    @registry.handler("boom")
    def boom(ctx: JobContext, job: Job) -> None:  # a plain def: run on a thread
        span = trace.get_current_span().get_span_context()
        seen.append(("boom", span.trace_id, span.span_id))
        raise ValueError(f"broken on attempt {job.attempts + 1}")

    return registry


async def run_claimed(backend: Backend, executor: Executor) -> list[Job | None]:
    jobs = await backend.queue.claim(["default"], limit=10)
    return [await executor.execute_job(job) for job in jobs]


async def test_an_attempt_is_a_consumer_span_child_of_the_submit_current_in_the_handler(
    backend: Backend, traced: Traced
) -> None:
    seen: list[tuple[str, int, int]] = []
    executor = Executor(registry_for(seen), backend.queue, 2, clock=backend.clock)
    executor.worker_id = "w-1"
    async with AsyncClient(backend=backend) as client:
        job_id = await client.submit_job("ok")
    await run_claimed(backend, executor)
    [producer] = traced.spans(SpanKind.PRODUCER)
    [consumer] = traced.spans(SpanKind.CONSUMER)
    assert consumer.name == "process default" and consumer.status.status_code is StatusCode.UNSET
    assert consumer.parent is not None and producer.context is not None and consumer.context is not None
    assert consumer.parent.span_id == producer.context.span_id and consumer.parent.is_remote
    assert consumer.context.trace_id == producer.context.trace_id
    attributes = dict(consumer.attributes or {})
    assert attributes["messaging.operation.type"] == "process" and attributes["messaging.message.id"] == job_id
    assert attributes["bananas.job.attempt"] == 1 and attributes["bananas.worker.id"] == "w-1"
    assert seen == [("ok", consumer.context.trace_id, consumer.context.span_id)]  # the handler ran in it


async def test_retries_are_attempts_in_one_trace_and_failures_are_errors(traced: Traced) -> None:
    clock = ManualClock()
    backend = connect(f"memory://tracing-retry-{uuid.uuid4().hex}", clock=clock)
    seen: list[tuple[str, int, int]] = []
    executor = Executor(registry_for(seen), backend.queue, 1, clock=backend.clock)
    try:
        async with AsyncClient(backend=backend) as client:
            await client.submit_job("boom", max_retries=2)
        await run_claimed(backend, executor)
        clock.advance(2)  # the retry's backoff
        assert await backend.queue.move_scheduled() == 1
        await run_claimed(backend, executor)
    finally:
        await backend.close()
    [producer] = traced.spans(SpanKind.PRODUCER)
    consumers = traced.spans(SpanKind.CONSUMER)
    assert [(s.attributes or {})["bananas.job.attempt"] for s in consumers] == [1, 2]
    assert producer.context is not None
    for number, span in enumerate(consumers, start=1):
        assert span.context is not None and span.context.trace_id == producer.context.trace_id
        assert span.parent is not None and span.parent.span_id == producer.context.span_id
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == f"ValueError: broken on attempt {number}"
        [event] = span.events
        assert event.name == "exception" and (event.attributes or {})["exception.type"] == "ValueError"
        assert (span.attributes or {})["error.type"] == "ValueError"
    assert [s[1] for s in seen] == [producer.context.trace_id] * 2


async def test_a_timeout_is_an_error_with_an_exception_event(backend: Backend, traced: Traced) -> None:
    registry = Registry()

    @registry.handler("slow")
    async def slow(ctx: JobContext, job: Job) -> None:
        await ctx.wait_cancelled()

    executor = Executor(registry, backend.queue, 1, clock=backend.clock, job_timeout=0.05)
    async with AsyncClient(backend=backend) as client:
        await client.submit_job("slow")
    await run_claimed(backend, executor)
    [consumer] = traced.spans(SpanKind.CONSUMER)
    assert consumer.status.status_code is StatusCode.ERROR
    assert (consumer.attributes or {})["error.type"] == "Timeout"
    assert (consumer.attributes or {})["bananas.job.timed_out"] is True
    assert [(e.name, (e.attributes or {})["exception.type"]) for e in consumer.events] == [("exception", "Timeout")]


@pytest.mark.parametrize(
    "field",
    [
        None,  # a job of a producer that does not trace (the original services)
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # not an object
        {"traceparent": "not a traceparent"},
        {"traceparent": 17},
        {"tracestate": "a=b"},
    ],
)
async def test_a_job_without_a_usable_trace_context_runs_in_a_new_trace(
    backend: Backend, traced: Traced, field: object
) -> None:
    seen: list[tuple[str, int, int]] = []
    executor = Executor(registry_for(seen), backend.queue, 1, clock=backend.clock)
    job = Job.create("ok")
    if field is not None:
        job = job.evolve(extra={FIELD: field})
    await backend.queue.enqueue(job)  # straight to the store, as another producer would
    [stored] = await run_claimed(backend, executor)
    assert stored is not None and stored.status.value == "completed"
    [consumer] = traced.spans(SpanKind.CONSUMER)
    assert consumer.parent is None and consumer.context is not None
    assert seen == [("ok", consumer.context.trace_id, consumer.context.span_id)]


async def test_a_cron_job_starts_a_new_trace_linked_to_the_current_span(traced: Traced) -> None:
    clock = ManualClock(datetime(2026, 1, 5, 9, 0, 30, tzinfo=UTC).timestamp())
    backend = connect(f"memory://tracing-cron-{uuid.uuid4().hex}", clock=clock)
    seen: list[tuple[str, int, int]] = []
    try:
        scheduler = CronScheduler(backend, [Schedule(id="nightly", cron="0 9 * * *", job="ok")])
        with traced.tracer.start_as_current_span("maintenance") as ambient:
            assert await scheduler.tick() == 1
        [claimed] = await backend.queue.claim(["default"], limit=1)
        await Executor(registry_for(seen), backend.queue, 1, clock=backend.clock).execute_job(claimed)
    finally:
        await backend.close()
    [producer] = traced.spans(SpanKind.PRODUCER)
    [consumer] = traced.spans(SpanKind.CONSUMER)
    outer = ambient.get_span_context()
    assert producer.parent is None and producer.context is not None
    assert producer.context.trace_id != outer.trace_id  # a trace of its own ...
    assert [link.context.span_id for link in producer.links] == [outer.span_id]  # ... linked to the fire's context
    assert (producer.attributes or {})["bananas.cron.schedule_id"] == "nightly"
    assert (producer.attributes or {})["bananas.cron.tick"] == "2026-01-05T09:00:00Z"
    assert consumer.context is not None and consumer.context.trace_id == producer.context.trace_id
    assert consumer.parent is not None and consumer.parent.span_id == producer.context.span_id
    assert claimed.extra[FIELD] == {"traceparent": traceparent(producer)}


HEX = st.integers(min_value=1, max_value=2**64 - 1)
KEY = st.from_regex(r"[a-z][a-z0-9_\-*/]{0,10}", fullmatch=True)
VALUE = st.from_regex(r"[!-+\--<>-~]{1,12}", fullmatch=True)  # W3C tracestate: printable, no ',' or '='


@given(
    trace_id=st.integers(min_value=1, max_value=2**128 - 1),
    span_id=HEX,
    sampled=st.booleans(),
    state=st.lists(
        st.tuples(
            st.from_regex(r"[a-z][a-z0-9_\-*/]{0,10}", fullmatch=True),
            st.from_regex(r"[!-+\--<>-~]{1,12}", fullmatch=True),
        ),
        max_size=4,
        unique_by=lambda kv: kv[0],
    ),
)
def test_the_trace_context_survives_the_wire_format(
    trace_id: int, span_id: int, sampled: bool, state: list[tuple[str, str]]
) -> None:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    parent = SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags, trace_state=TraceState(state))
    job = inject(Job.create("a", {"n": 1}), trace.set_span_in_context(NonRecordingSpan(parent)))
    read = Job.from_json(job.to_json())
    assert read.extra == job.extra and set(read.extra[FIELD]) <= {"traceparent", "tracestate"}
    got = trace.get_current_span(extract(read)).get_span_context()
    assert (got.trace_id, got.span_id, got.trace_flags, got.is_remote) == (trace_id, span_id, flags, True)
    assert list(got.trace_state.items()) == state


def test_bananas_registers_tracing_unless_the_standard_variable_disables_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from bananas.tracing import builtin_observer
    from bananas.tracing.lazy import LazyTracing

    assert any(isinstance(o, LazyTracing) for o in observe.observers())  # registered at import: the API is here
    assert isinstance(builtin_observer(), LazyTracing)
    monkeypatch.setenv("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "redis, bananas")
    assert builtin_observer() is None

"""JSON log lines carry ``trace_id`` / ``span_id``: of the span current when the line is logged
(a handler's own lines), or of the attempt a job line is about (logged after its span ended)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator

import pytest
from bananas import AsyncClient, Job, JobContext, Registry, connect, observe
from bananas.tracing import log_fields
from bananas.tracing.spans import TracingObserver
from bananas.worker import Executor
from bananas.worker.command import JsonFormatter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

pytestmark = pytest.mark.anyio


class Lines(logging.Handler):
    """Every record of the ``bananas`` loggers and the test app, formatted as the JSON lines."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def traced() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observer = TracingObserver(provider)
    observe.add_observer(observer)
    try:
        yield provider, exporter
    finally:
        observe.remove_observer(observer)
        provider.shutdown()


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    loggers = [logging.getLogger("bananas"), logging.getLogger("app")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)


def test_a_line_logged_in_a_span_carries_its_ids(traced: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, _ = traced
    formatter = JsonFormatter()
    record = logging.LogRecord("bananas.worker", logging.INFO, __file__, 1, "hello", None, None)
    assert "trace_id" not in json.loads(formatter.format(record))
    with provider.get_tracer("tests").start_as_current_span("work") as span:
        line = json.loads(formatter.format(record))
        assert log_fields() == {"trace_id": line["trace_id"], "span_id": line["span_id"]}
    assert line["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert line["span_id"] == f"{span.get_span_context().span_id:016x}"


async def test_job_lines_carry_the_ids_of_their_attempt(
    traced: tuple[TracerProvider, InMemorySpanExporter], lines: Lines
) -> None:
    _, exporter = traced
    registry = Registry()
    app_log = logging.getLogger("app")

    @registry.handler("work")
    async def work(ctx: JobContext, job: Job) -> None:
        app_log.info("working on it")

    backend = connect(f"memory://tracing-logs-{uuid.uuid4().hex}")
    try:
        async with AsyncClient(backend=backend) as client:
            job_id = await client.submit_job("work")
        [claimed] = await backend.queue.claim(["default"], limit=1)
        executor = Executor(registry, backend.queue, 1, clock=backend.clock)
        executor.worker_id = "w-logs"
        await executor.execute_job(claimed)
    finally:
        await backend.close()
    [consumer] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER]
    assert consumer.context is not None
    ids = {"trace_id": f"{consumer.context.trace_id:032x}", "span_id": f"{consumer.context.span_id:016x}"}
    handler_line = next(line for line in lines.lines if line["message"] == "working on it")
    outcome_line = next(line for line in lines.lines if line.get("job_id") == job_id and "succeeded" in str(line))
    assert {k: handler_line[k] for k in ids} == ids  # logged inside the span
    assert {k: outcome_line[k] for k in ids} == ids  # logged after it ended, about that attempt
    assert outcome_line["worker_id"] == "w-logs"

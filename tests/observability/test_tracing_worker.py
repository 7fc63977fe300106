"""Tracing across processes: jobs submitted here (spans kept in memory) and run by a real
``bananas worker`` process on Redis, PostgreSQL and SQLite, set up by ``OTEL_TRACES_EXPORTER=console``
alone (its spans are read from its standard output, the console exporter's JSON)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bananas import Client, Job, JobStatus, observe
from bananas.plugins import connect
from bananas.tracing.spans import TracingObserver
from e2e_helpers import isolated_store, migrate, wait_for
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BANANAS = Path(sys.executable).with_name("bananas")


@pytest.fixture(params=["redis", "postgresql", "sqlite"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An isolated store on one server backend (a fresh namespace, or a fresh SQLite file)."""
    return isolated_store(request.param, request, tmp_path, "tr")


@pytest.fixture
def producer() -> Iterator[InMemorySpanExporter]:
    """This process traces its submits into memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observer = TracingObserver(provider)
    observe.add_observer(observer)
    try:
        yield exporter
    finally:
        observe.remove_observer(observer)
        provider.shutdown()


class Worker:
    """``bananas worker`` for the end-to-end app, its spans (stdout) and its log (stderr) in files."""

    def __init__(self, url: str, tmp_path: Path, app: str = "tests.e2e.app:registry", **env: str) -> None:
        name = uuid.uuid4().hex[:6]
        self.spans_file = tmp_path / f"spans-{name}.json"
        self.log = tmp_path / f"worker-{name}.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != "BANANAS_URL"}
        environ.update(PYTHONUNBUFFERED="1", OTEL_TRACES_EXPORTER="console", OTEL_BSP_SCHEDULE_DELAY="50", **env)
        environ["PYTHONPATH"] = os.pathsep.join([str(tmp_path), environ.get("PYTHONPATH", "")])
        argv = [str(BANANAS), "worker", app, "--url", url, "--scheduler-interval", "100ms"]
        with open(self.spans_file, "wb") as out, open(self.log, "wb") as err:
            self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=err, env=environ)

    def spans(self, path: Path | None = None) -> list[dict[str, Any]]:
        """The spans written so far (whole JSON objects; a partly written last one is left out)."""
        text = (path or self.spans_file).read_text(errors="replace")
        decoder, at = json.JSONDecoder(), 0
        found: list[dict[str, Any]] = []
        while True:
            while at < len(text) and text[at].isspace():
                at += 1
            if at >= len(text):
                return found
            try:
                span, at = decoder.raw_decode(text, at)
            except json.JSONDecodeError:
                return found
            found.append(span)

    def consumers(self, job_id: str, path: Path | None = None) -> list[dict[str, Any]]:
        return [
            s
            for s in self.spans(path)
            if s["kind"] == "SpanKind.CONSUMER" and s["attributes"].get("messaging.message.id") == job_id
        ]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Any]:
    started: list[Worker] = []

    def start(url: str, **kwargs: Any) -> Worker:
        worker = Worker(url, tmp_path, **kwargs)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()
        if worker.proc.returncode not in (0, None):
            print(f"--- worker exited {worker.proc.returncode}:\n{worker.log.read_text(errors='replace')}")


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    """The trace and span id of ``span`` as the console exporter writes them."""
    assert span.context is not None
    return f"0x{span.context.trace_id:032x}", f"0x{span.context.span_id:016x}"


def producer_of(exporter: InMemorySpanExporter, job_id: str) -> ReadableSpan:
    [span] = [
        s
        for s in exporter.get_finished_spans()
        if s.kind is SpanKind.PRODUCER and (s.attributes or {}).get("messaging.message.id") == job_id
    ]
    return span


def test_the_workers_span_is_a_child_of_the_submit(
    backend_url: str, workers: Any, producer: InMemorySpanExporter
) -> None:
    worker = workers(backend_url, OTEL_SERVICE_NAME="tracing-test-worker")
    with Client(backend_url) as client:
        result = client.submit_and_wait("echo", {"n": 1}, timeout=30)
        assert result.is_success(), result.error
    job_id = result.job_id
    wait_for(lambda: worker.consumers(job_id), 30, "the worker's CONSUMER span on its standard output")
    [consumer] = worker.consumers(job_id)
    trace_id, span_id = hex_ids(producer_of(producer, job_id))
    assert consumer["context"]["trace_id"] == trace_id  # one trace across the two processes
    assert consumer["parent_id"] == span_id
    assert consumer["name"] == "process default" and consumer["status"]["status_code"] == "UNSET"
    assert consumer["attributes"]["messaging.system"] == "bananas"
    assert consumer["attributes"]["bananas.job.name"] == "echo"
    assert consumer["resource"]["attributes"]["service.name"] == "tracing-test-worker"
    assert worker.stop() == 0


def test_retries_share_the_trace_and_failures_are_errors(
    backend_url: str, workers: Any, producer: InMemorySpanExporter
) -> None:
    worker = workers(backend_url)
    with Client(backend_url) as client:
        job_id = client.submit_job("fail", max_retries=2)  # one retry, after a 2 s backoff
        assert client.wait_for_result(job_id, timeout=30).is_failed()
    wait_for(lambda: len(worker.consumers(job_id)) == 2, 30, "two CONSUMER spans")
    trace_id, span_id = hex_ids(producer_of(producer, job_id))
    attempts = sorted(worker.consumers(job_id), key=lambda s: s["attributes"]["bananas.job.attempt"])
    assert [s["attributes"]["bananas.job.attempt"] for s in attempts] == [1, 2]
    for number, span in enumerate(attempts, start=1):
        assert span["context"]["trace_id"] == trace_id and span["parent_id"] == span_id
        assert span["status"]["status_code"] == "ERROR"
        assert span["status"]["description"] == f"RuntimeError: failing on purpose (attempt {number})"
        [event] = span["events"]
        assert event["name"] == "exception" and event["attributes"]["exception.type"] == "RuntimeError"


def test_a_job_of_the_original_format_runs_in_a_trace_of_its_own(backend_url: str, workers: Any) -> None:
    worker = workers(backend_url)
    job = Job.create("echo", "from an untraced producer")
    backend = connect(backend_url)

    async def enqueue() -> None:
        try:
            await backend.queue.enqueue(job)  # the store's own write: no trace field, as the Go SDK writes
        finally:
            await backend.close()

    asyncio.run(enqueue())
    with Client(backend_url) as client:
        result = client.wait_for_result(job.id, timeout=30)
        stored = client.get_job(job.id)
    assert result.is_success() and result.result == "from an untraced producer"
    assert "trace_context" not in stored.extra and stored.status is JobStatus.COMPLETED
    wait_for(lambda: worker.consumers(job.id), 30, "the CONSUMER span")
    [consumer] = worker.consumers(job.id)
    assert consumer["parent_id"] is None


def test_bananas_submit_traces_its_submit_and_the_worker_continues_it(backend_url: str, workers: Any) -> None:
    """``OTEL_TRACES_EXPORTER=console bananas submit ...``: the command's PRODUCER span is the
    parent of the worker's CONSUMER span, with no code, as for the worker."""
    worker = workers(backend_url)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != "BANANAS_URL"}
    environ.update(OTEL_TRACES_EXPORTER="console")
    done = subprocess.run(
        [str(BANANAS), "submit", "echo", "--payload", '"from the command"', "--url", backend_url, "--json"],
        cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    decoder = json.JSONDecoder()
    submitted, at = decoder.raw_decode(done.stdout)  # the command's answer first, then the spans
    spans = []
    while (at := at + len(done.stdout[at:]) - len(done.stdout[at:].lstrip())) < len(done.stdout):
        span, at = decoder.raw_decode(done.stdout, at)
        spans.append(span)
    producers = [s for s in spans if s["kind"] == "SpanKind.PRODUCER"]
    assert len(producers) == 1, spans
    with Client(backend_url) as client:
        assert client.wait_for_result(submitted["id"], timeout=30).result == "from the command"
    wait_for(lambda: worker.consumers(submitted["id"]), 30, "the CONSUMER span")
    [consumer] = worker.consumers(submitted["id"])
    assert consumer["context"]["trace_id"] == producers[0]["context"]["trace_id"]
    assert consumer["parent_id"] == producers[0]["context"]["span_id"]


OWN_PROVIDER_APP = """
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

provider = TracerProvider(resource=Resource.create({{"service.name": "app-own"}}))
provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=open({path!r}, "a"))))
trace.set_tracer_provider(provider)

from tests.e2e.app import registry
"""


def test_an_application_keeps_its_own_tracer_provider(tmp_path: Path, workers: Any) -> None:
    own = tmp_path / "own-spans.json"
    (tmp_path / "own_provider_app.py").write_text(textwrap.dedent(OWN_PROVIDER_APP.format(path=str(own))))
    url = f"sqlite:///{tmp_path / 'own.db'}"
    migrate(url)
    worker = workers(url, app="own_provider_app:registry")
    with Client(url) as client:
        result = client.submit_and_wait("echo", 1, timeout=30)
    assert result.is_success(), result.error
    wait_for(lambda: worker.consumers(result.job_id, own), 30, "the CONSUMER span in the application's own file")
    [consumer] = worker.consumers(result.job_id, own)
    assert consumer["resource"]["attributes"]["service.name"] == "app-own"
    assert worker.stop() == 0
    assert worker.spans() == []  # OTEL_TRACES_EXPORTER=console did not add a provider of its own


def test_an_exporter_nobody_provides_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    run = subprocess.run(
        [str(BANANAS), "worker", "tests.e2e.app:registry", "--url", url],
        cwd=ROOT,
        env={**environ, "OTEL_TRACES_EXPORTER": "console,zipkin-typo"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    [line] = run.stderr.strip().splitlines()
    assert "OTEL_TRACES_EXPORTER names 'zipkin-typo', which no installed package provides" in line
    installed = line.rpartition("installed: ")[2].split(", ")
    assert "console" in installed and "none" in installed and "zipkin-typo" not in installed


REFUSE_OPENTELEMETRY = """
import importlib.abc, sys

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r} (refused by the test)", name=name)
        return None

if sys.argv[1] == "refuse":
    sys.meta_path.insert(0, Refuse())
"""

RUN_A_MEMORY_WORKER = """
import asyncio
import bananas
from bananas import AsyncClient, Registry, connect, observe
from bananas.config import WorkerConfig
from bananas.worker import Executor, Pool

registry = Registry()

@registry.handler("add")
async def add(ctx, job):
    return sum(job.payload)

async def main():
    backend = connect("memory://no-otel")
    executor = Executor(registry, backend.queue, 2, clock=backend.clock)
    executor.set_result_backend(backend.results)
    pool = Pool(executor, backend, WorkerConfig(concurrency=2, scheduler_interval=0.1), poll_interval=0.05)
    async with AsyncClient(backend=backend) as client:
        await pool.start()
        result = await client.submit_and_wait("add", [1, 2], timeout=10)
        await pool.stop()
    await backend.close()
    return result.result

print(json.dumps({
    "result": asyncio.run(main()),
    "observers": [type(o).__name__ for o in observe.observers()],
    "imported": sorted(
        m for m in sys.modules if m == "opentelemetry" or m.startswith(("opentelemetry.", "bananas.tracing."))
    ),
}))
"""


@pytest.mark.parametrize("opentelemetry", ["refuse", "allow"])
def test_without_opentelemetry_nothing_of_it_is_imported(opentelemetry: str) -> None:
    script = REFUSE_OPENTELEMETRY + "import json\n" + RUN_A_MEMORY_WORKER
    run = subprocess.run(
        [sys.executable, "-c", script, opentelemetry], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["result"] == 3
    if opentelemetry == "refuse":
        assert report["observers"] == [] and report["imported"] == []
    else:  # the same run with the API installed and importable: tracing registered itself and loaded it
        assert report["observers"] == ["LazyTracing"]
        assert "opentelemetry.trace" in report["imported"] and "bananas.tracing.spans" in report["imported"]

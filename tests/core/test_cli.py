"""The ``bananas`` command run in-process (``main(argv)``) against memory:// and SQLite files."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest
from bananas import Backend, Job, JobResult, JobStatus, connect
from bananas.cli import main
from bananas.cli.admin import unserved
from bananas.job import JobPriority
from bananas.plugins import backend_specs
from bananas.protocols import WorkerInfo
from bananas.scheduler import CronScheduler

T = TypeVar("T")

HAS_SQLITE = any("sqlite" in spec.schemes for spec in backend_specs())
needs_sqlite = pytest.mark.skipif(not HAS_SQLITE, reason="the sqlite:// plugin (bananas-sql) is not installed")


@pytest.fixture
def url() -> str:
    """A fresh memory:// store for one test (shared by every connect in this process)."""
    return f"memory://cli-{uuid.uuid4().hex}"


def on(url: str, work: Callable[[Backend], Awaitable[T]]) -> T:
    """Run ``work`` against the store behind ``url`` (set-up and checks outside the command)."""

    async def run() -> T:
        async with connect(url) as backend:
            return await work(backend)

    return asyncio.run(run())


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run_cli(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


# -- submit, job, result --------------------------------------------------------------------


def test_submit_prints_the_id_and_job_shows_it(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, _ = run_cli(capsys, "submit", "send_email", "--payload", '{"to": "a@example.com"}', "--url", url)
    assert code == 0
    job_id = out.strip()
    stored = on(url, lambda b: b.queue.get_job(job_id))
    assert (stored.name, stored.payload, stored.status) == ("send_email", {"to": "a@example.com"}, JobStatus.PENDING)

    code, out, _ = run_cli(capsys, "job", job_id, "--url", url)
    assert code == 0
    assert "send_email" in out and "pending" in out and "0 of 3" in out
    data = run_json(capsys, "job", job_id, "--url", url)
    assert data["id"] == job_id and data["payload"] == {"to": "a@example.com"} and data["status"] == "pending"


def test_submit_options_reach_the_job(capsys: pytest.CaptureFixture[str], url: str) -> None:
    data = run_json(
        capsys,
        "submit", "resize", "--payload", "[1, 2]", "--priority", "HIGH", "--route", "gpu",
        "--max-retries", "5", "--description", "thumbnails", "--in", "2h", "--url", url,
    )  # fmt: skip
    job = on(url, lambda b: b.queue.get_job(data["id"]))
    assert (job.priority, job.routing_key, job.max_retries, job.description) == (
        JobPriority.HIGH,
        "gpu",
        5,
        "thumbnails",
    )
    assert job.status is JobStatus.SCHEDULED and data["status"] == "scheduled"
    assert job.scheduled_for is not None
    assert timedelta(minutes=119) < job.scheduled_for - datetime.now(UTC) <= timedelta(hours=2)
    assert data["scheduled_for"].endswith("Z")

    at = run_json(capsys, "submit", "x", "--at", "2031-02-03T04:05:06+01:00", "--url", url)
    assert at["scheduled_for"] == "2031-02-03T03:05:06Z"
    past = run_json(capsys, "submit", "x", "--at", "2001-01-01T00:00:00Z", "--url", url)
    assert past["status"] == "pending"  # a time in the past means now


class _MiniWorker:
    """Completes every job on ``url`` in a background thread (the runtime has its own tests)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._loop()), daemon=True)

    async def _loop(self) -> None:
        async with connect(self.url) as backend:
            while not self.stop.is_set():
                for job in await backend.queue.claim(["default"], limit=10):
                    done = await backend.queue.complete(job)
                    await backend.results.store(
                        JobResult(job_id=done.id, status=JobStatus.COMPLETED, result={"echo": job.payload})
                    )
                await asyncio.sleep(0.01)

    def __enter__(self) -> _MiniWorker:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def test_submit_wait_prints_the_result(capsys: pytest.CaptureFixture[str], url: str) -> None:
    with _MiniWorker(url):
        data = run_json(capsys, "submit", "echo", "--payload", '{"n": 1}', "--wait", "10", "--url", url)
        assert data["result"]["status"] == "completed"
        assert data["result"]["result"] == {"echo": {"n": 1}}
        code, out, _ = run_cli(capsys, "submit", "echo", "--payload", "2", "--wait", "10", "--url", url)
    assert code == 0
    assert "completed" in out and '{"echo": 2}' in out


def test_result_of_a_finished_job(capsys: pytest.CaptureFixture[str], url: str) -> None:
    job = Job.create("add", {"a": 1})

    async def finish(b: Backend) -> None:
        await b.queue.enqueue(job)
        await b.results.store(
            JobResult(job_id=job.id, status=JobStatus.COMPLETED, result=3, duration=timedelta(milliseconds=12))
        )

    on(url, finish)
    data = run_json(capsys, "result", job.id, "--url", url)
    assert (data["job_id"], data["status"], data["result"], data["duration_ms"]) == (job.id, "completed", 3, 12)
    code, out, _ = run_cli(capsys, "result", job.id, "--wait", "1", "--url", url)
    assert code == 0 and "completed" in out and "12 ms" in out


def test_result_of_an_unfinished_or_unknown_job_exits_1(capsys: pytest.CaptureFixture[str], url: str) -> None:
    job = Job.create("slow")
    on(url, lambda b: b.queue.enqueue(job))
    code, _, err = run_cli(capsys, "result", job.id, "--url", url)
    assert code == 1 and "no result yet (status: pending)" in one_line(err)
    started = time.monotonic()
    code, _, err = run_cli(capsys, "result", job.id, "--wait", "0.2", "--url", url)
    assert code == 1 and "after waiting 0.2s" in one_line(err)
    assert time.monotonic() - started < 5
    code, _, err = run_cli(capsys, "result", "no-such-job", "--url", url)
    assert code == 1 and "'no-such-job' not found" in one_line(err)

    async def finish_without_result(b: Backend) -> None:
        (claimed,) = await b.queue.claim(["default"])
        await b.queue.complete(claimed)

    on(url, finish_without_result)  # as if its result had outlived its TTL
    code, _, err = run_cli(capsys, "result", job.id, "--url", url)
    assert code == 1 and "finished (completed) but its result has expired" in one_line(err)


# -- stats and the dead letter queue ----------------------------------------------------------


def test_stats_counts_ready_processing_scheduled_and_dead(capsys: pytest.CaptureFixture[str], url: str) -> None:
    async def fill(b: Backend) -> None:
        await b.queue.enqueue_many(
            [
                Job.create("a", priority="high", routing_key="gpu"),
                Job.create("a", priority="low", routing_key="gpu"),
                Job.create("a"),
                Job.create("a"),
                Job.create("a", scheduled_for=datetime.now(UTC) + timedelta(hours=1)),
                Job.create("dies", max_retries=0, routing_key="doomed"),
            ]
        )
        (dies,) = await b.queue.claim(["doomed"])
        await b.queue.fail(dies, "boom")
        await b.queue.claim(["default"], limit=1)

    on(url, fill)
    data = run_json(capsys, "stats", "--url", url)
    assert data["ready"]["gpu"] == {"high": 1, "normal": 0, "low": 1}
    assert data["ready"]["default"]["normal"] == 1
    assert (data["ready_total"], data["processing"], data["scheduled"], data["dead"]) == (3, 1, 1, 1)
    code, out, _ = run_cli(capsys, "stats", "--url", url)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ROUTING", "KEY", "HIGH", "NORMAL", "LOW", "READY"]
    assert lines[2].split() == ["gpu", "1", "0", "1", "2"]
    assert "dead        1" in out


def _dead_jobs(url: str, count: int) -> list[str]:
    async def kill(b: Backend) -> list[str]:
        jobs = [Job.create("broken", {"i": i}, max_retries=0, routing_key="dlq") for i in range(count)]
        await b.queue.enqueue_many(jobs)
        for job in await b.queue.claim(["dlq"], limit=count):
            await b.queue.fail(job, f"ValueError: broken #{job.payload['i']}")
        return [job.id for job in jobs]

    return on(url, kill)


def test_dlq_list_requeue_and_purge(capsys: pytest.CaptureFixture[str], url: str) -> None:
    ids = _dead_jobs(url, 4)
    listed = run_json(capsys, "dlq", "list", "--url", url)
    assert sorted(j["id"] for j in listed) == sorted(ids)
    assert all(j["status"] == "failed" and j["error"].startswith("ValueError") for j in listed)
    code, out, _ = run_cli(capsys, "dlq", "list", "--limit", "2", "--url", url)
    assert code == 0 and out.splitlines()[0].split()[:3] == ["ID", "NAME", "ROUTE"] and len(out.splitlines()) == 3

    assert run_json(capsys, "dlq", "requeue", ids[0], "--url", url) == {"requeued": 1}
    assert on(url, lambda b: b.queue.get_job(ids[0])).status is JobStatus.PENDING
    code, out, _ = run_cli(capsys, "dlq", "purge", ids[1], ids[2], "--url", url)
    assert code == 0 and out.strip() == "purged 2 dead jobs"
    assert run_json(capsys, "dlq", "purge", "--all", "--url", url) == {"purged": 1}
    code, out, _ = run_cli(capsys, "dlq", "list", "--url", url)
    assert out.strip() == "the dead letter queue is empty"
    assert on(url, lambda b: b.queue.depths()).dead == 0


def test_dlq_requeue_needs_ids_or_all_like_purge(capsys: pytest.CaptureFixture[str], url: str) -> None:
    _dead_jobs(url, 3)
    code, out, err = run_cli(capsys, "dlq", "requeue", "--url", url)
    assert code == 2 and out == "" and "pass --all to requeue every dead job" in err
    assert on(url, lambda b: b.queue.depths()).dead == 3
    code, out, _ = run_cli(capsys, "dlq", "requeue", "--all", "--url", url)
    assert code == 0 and out.strip() == "requeued 3 dead jobs"
    assert on(url, lambda b: b.queue.depths()).ready_for("dlq") == 3


@pytest.mark.parametrize("action", ["requeue", "purge"])
def test_dlq_ids_that_are_not_dead_are_an_error_and_nothing_changes(
    capsys: pytest.CaptureFixture[str], url: str, action: str
) -> None:
    ids = _dead_jobs(url, 2)
    code, out, err = run_cli(capsys, "dlq", action, ids[0], "nonexistent", "--url", url)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "not in the dead letter queue: 'nonexistent'" in err and ids[0] not in err
    assert on(url, lambda b: b.queue.depths()).dead == 2


# -- schedules, workers, check ----------------------------------------------------------------


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An importable module ``cliapp_<hex>`` with a Registry holding two schedules."""
    name = f"cliapp_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            from bananas.scheduler import Schedule
            from bananas.worker import Registry

            registry = Registry()
            registry.add_schedule(Schedule(id="every-minute", cron="* * * * *", job="tick"))
            registry.add_schedule(Schedule(id="paused", cron="0 9 * * 1-5", job="report", enabled=False))
            not_an_app = 42
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_schedules_with_app_list_every_schedule(capsys: pytest.CaptureFixture[str], url: str, app_module: str) -> None:
    data = run_json(capsys, "schedules", f"{app_module}:registry", "--url", url)
    assert [s["id"] for s in data] == ["every-minute", "paused"]
    minute, paused = data
    assert (minute["cron"], minute["job"], minute["enabled"], minute["run_count"]) == ("* * * * *", "tick", True, 0)
    assert minute["next_run"] is not None and minute["last_run"] is None
    assert paused["enabled"] is False and paused["next_run"] is None

    registry = sys.modules[app_module].registry
    fired = on(url, lambda b: CronScheduler(b, registry.schedules, first_run_grace=3600).tick())
    assert fired == 1
    data = run_json(capsys, "schedules", f"{app_module}:registry", "--url", url)
    assert data[0]["run_count"] == 1 and data[0]["last_run"] is not None
    stored = run_json(capsys, "schedules", "--url", url)  # without APP: what the store knows
    assert [s["id"] for s in stored] == ["every-minute"] and stored[0]["run_count"] == 1
    code, out, _ = run_cli(capsys, "schedules", f"{app_module}:registry", "--url", url)
    assert code == 0
    assert out.splitlines()[0].split()[:4] == ["ID", "CRON", "JOB", "ZONE"]
    assert "paused" in out and "every-minute" in out


def test_schedules_with_nothing_stored(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, _ = run_cli(capsys, "schedules", "--url", url)
    assert code == 0 and out.startswith("no schedule has run yet")


def _worker(
    worker_id: str, keys: tuple[str, ...], priorities: tuple[str, ...] = ("high", "normal", "low")
) -> WorkerInfo:
    return WorkerInfo(
        id=worker_id,
        host="box-1",
        pid=4242,
        routing_keys=keys,  # type: ignore[arg-type]  # attrs' converter=tuple confuses mypy
        priorities=priorities,
        concurrency=8,
        in_flight=2,
    )


def test_workers_lists_live_workers(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, _ = run_cli(capsys, "workers", "--url", url)
    assert code == 0 and out.strip() == "no live workers"
    on(url, lambda b: b.workers.heartbeat(_worker("w-1", ("default", "gpu")), ttl=60))
    data = run_json(capsys, "workers", "--url", url)
    assert [(w["id"], w["host"], w["pid"], w["routing_keys"]) for w in data] == [
        ("w-1", "box-1", 4242, ["default", "gpu"])
    ]
    code, out, _ = run_cli(capsys, "workers", "--url", url)
    assert "box-1" in out and "default,gpu" in out and "4242" in out


def test_check_exit_codes(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, _ = run_cli(capsys, "check", "--url", url)
    assert code == 0 and out.startswith("ok")

    on(url, lambda b: b.queue.enqueue(Job.create("train", routing_key="gpu", priority="low")))
    code, out, err = run_cli(capsys, "check", "--url", url)
    assert code == 1 and out == ""
    assert "'gpu' (1 job)" in one_line(err)

    on(url, lambda b: b.workers.heartbeat(_worker("w-high", ("gpu",), ("high",)), ttl=60))
    code, _, err = run_cli(capsys, "check", "--url", url)
    assert code == 1 and "'gpu'" in one_line(err)  # a worker on gpu that takes only high jobs does not count

    on(url, lambda b: b.workers.heartbeat(_worker("w-all", ("default", "gpu")), ttl=60))
    data = run_json(capsys, "check", "--url", url)
    assert data == {"ok": True, "message": "ok: 2 live workers, 1 jobs ready", "workers": 2, "ready": 1}


def test_unserved_ignores_scheduler_only_workers() -> None:
    ready = {("gpu", JobPriority.NORMAL): 2, ("default", JobPriority.HIGH): 0}
    scheduler_only = WorkerInfo(
        id="s",
        host="h",
        pid=1,
        routing_keys=("gpu",),  # type: ignore[arg-type]
        priorities=(),
        concurrency=0,
        mode="scheduler-only",
    )
    assert unserved(ready, [scheduler_only]) == {"gpu": 2}
    assert unserved(ready, [scheduler_only, _worker("w", ("gpu",))]) == {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_check_reports_an_unreachable_backend(capsys: pytest.CaptureFixture[str]) -> None:
    if not any("redis" in spec.schemes for spec in backend_specs()):
        pytest.skip("the redis:// plugin is not installed")
    code, out, err = run_cli(capsys, "check", "--url", f"redis://127.0.0.1:{_free_port()}/0")
    assert code == 1 and out == ""
    assert one_line(err).startswith("bananas check: backend unreachable:")


# -- backends and db upgrade --------------------------------------------------------------------


def test_backends_lists_installed_plugins(capsys: pytest.CaptureFixture[str]) -> None:
    data = run_json(capsys, "backends")
    memory = next(b for b in data if b["name"] == "memory")
    assert memory["schemes"] == ["memory"] and memory["distribution"] == "bananas-core"
    assert "cron" in memory["capabilities"] and memory["schema"] is False
    code, out, _ = run_cli(capsys, "backends")
    assert code == 0 and out.splitlines()[0].split() == ["NAME", "SCHEMES", "DISTRIBUTION", "CAPABILITIES"]
    assert "memory://" in out
    assert [b["name"] for b in run_json(capsys, "backends", "--url", "memory://x")] == ["memory"]


def test_db_upgrade_on_a_backend_without_schema(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, _ = run_cli(capsys, "db", "upgrade", "--url", url)
    assert code == 0 and "has no schema" in out


@needs_sqlite
def test_db_upgrade_creates_the_sqlite_schema(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    code, _, err = run_cli(capsys, "stats", "--url", db)
    assert code == 1 and "bananas db upgrade" in one_line(err)
    data = run_json(capsys, "db", "upgrade", "--url", db)
    assert data["migrated"] is True and data["backend"] == "sqlite"
    assert run_json(capsys, "db", "upgrade", "--url", db)["migrated"] is True  # idempotent
    job_id = run_json(capsys, "submit", "x", "--url", db)["id"]
    assert run_json(capsys, "job", job_id, "--url", db)["status"] == "pending"
    assert run_json(capsys, "stats", "--url", db)["ready"] == {"default": {"high": 0, "normal": 1, "low": 0}}


@needs_sqlite
def test_embedded_default_needs_no_url(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BANANAS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    code, out, err = run_cli(capsys, "submit", "hello")
    assert code == 0 and (tmp_path / "bananas.db").exists()
    assert one_line(err).startswith("bananas: using the embedded default sqlite:///bananas.db, creating ")
    code, out, err = run_cli(capsys, "stats")
    assert code == 0 and err == ""  # the file exists now: no notice
    assert f"sqlite:///bananas.db (the embedded default, {tmp_path / 'bananas.db'})" in out
    monkeypatch.setenv("BANANAS_URL", f"memory://env-{uuid.uuid4().hex}")
    job_id = run_json(capsys, "submit", "from-env")["id"]
    assert on(__import__("os").environ["BANANAS_URL"], lambda b: b.queue.get_job(job_id)).name == "from-env"


# -- user mistakes: one line, the right exit code, no traceback -------------------------------


@pytest.mark.parametrize(
    ("argv", "code", "fragment"),
    [
        (["submit", "x", "--payload", "{oops"], 2, "--payload is not valid JSON"),
        (["submit", "x", "--priority", "urgent"], 2, "invalid priority 'urgent'"),
        (["submit", "x", "--route", "no spaces"], 2, "invalid routing key"),
        (["submit", "x", "--max-retries", "1000"], 2, "--max-retries: '1000' is out of range"),
        (["submit", "x", "--in", "soon"], 2, "--in='soon' is not a duration"),
        (["submit", "x", "--at", "tomorrow"], 2, "not an ISO 8601 time"),
        (["submit", "x", "--at", "2030-01-01T09:00:00"], 2, "has no time zone"),
        (["submit", "x", "--at", "2030-01-01T09:00:00Z", "--in", "5"], 2, "not allowed with argument"),
        (["submit", "x", "--wait", "0"], 2, "--wait: '0' is not allowed"),
        (["submit", "   "], 2, "job name"),
        (["submit"], 2, "required: name"),
        (["job", "no-such-id"], 1, "'no-such-id' not found"),
        (["stats", "--url", "nosuch://host"], 2, "no installed backend serves nosuch://"),
        (["stats", "--url", "not a url"], 2, "is not a backend URL"),
        (["schedules", "no_colon"], 2, "APP must look like module:attribute"),
        (["schedules", "no_such_module_xyz:registry"], 2, "cannot import 'no_such_module_xyz'"),
        (["schedules", "json:registry"], 2, "module 'json' has no attribute 'registry'"),
        (["schedules", "json:dumps"], 2, "not a Registry or a list of Schedule"),
        (["dlq", "purge"], 2, "--all"),
        (["dlq", "purge", "id", "--all"], 2, "not both"),
        (["dlq", "list", "--limit", "0"], 2, "--limit"),
        (["dlq"], 2, "required: ACTION"),
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
        ([], 2, "required: COMMAND"),
        (["demo", "--jobs", "0"], 2, "--jobs: '0' is out of range"),
        (["worker", "no_colon", "--url", "memory://"], 2, ""),
    ],
)
def test_user_mistakes_are_one_line(
    capsys: pytest.CaptureFixture[str], url: str, argv: list[str], code: int, fragment: str
) -> None:
    if "--url" not in argv and len(argv) > 1:
        argv = [*argv, "--url", url]
    got, out, err = run_cli(capsys, *argv)
    assert got == code, err
    assert fragment in one_line(err)
    assert out == ""


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["submit", "x", "--in", "1e20"], "--in '1e20': a delay of 1e+20 seconds is out of range"),
        (
            ["submit", "x", "--in", "99999999999999"],
            "the time must lie from 1970-01-01T00:00:00Z to 9999-01-01T00:00:00Z",
        ),
        (["submit", "x", "--in", "inf"], "--in='inf' is not a duration"),
        (["submit", "x", "--in", "nan"], "--in='nan' is not a duration"),
        (["submit", "x", "--in", "1" + "0" * 400 + "h"], "--in"),
        (["submit", "x", "--at", "9999-12-31T23:00:00-05:00"], "--at"),
        (["submit", "x", "--at", "1900-01-01T00:00:00Z"], "--at 1900-01-01T00:00:00Z is out of range"),
        (["submit", "x", "--wait", "nan"], "argument --wait: 'nan' is not allowed"),
        (["submit", "x", "--wait", "inf"], "argument --wait: 'inf' is not allowed"),
        (["submit", "x", "--wait", "-1"], "argument --wait: '-1' is not allowed"),
        (["submit", "x", "--wait", "1e400"], "argument --wait: '1e400' is not allowed"),
        (["submit", "x", "--wait", "soon"], "argument --wait: 'soon' is not a number of seconds"),
        (["submit", "x", "--max-retries", "1e20"], "argument --max-retries: '1e20' is not a whole number"),
        (["submit", "x", "--payload", "[" * 5000 + "]" * 5000], "--payload is not acceptable"),
        (["submit", "x", "--payload", '{"a": NaN}'], "NaN is not a JSON number"),
        (["submit", "x", "--payload", "[1e400]"], "numbers must be finite"),
        (["submit", "x", "--payload", "1" * 4400], "4300 digits"),
        (["submit", "x", "--payload", "1" * 5000], "--payload is not acceptable"),
        (["submit", "x", "--description", "d", "--route", "r", "--payload", json.dumps({"a": [[[[1]]]] * 3})], ""),
        (["result", "some-id", "--wait", "nan"], "argument --wait: 'nan' is not allowed"),
        (
            ["dlq", "list", "--limit", "99999999999999999999"],
            "argument --limit: '99999999999999999999' is out of range",
        ),
        (["dlq", "list", "--offset", "-1"], "argument --offset: '-1' is out of range"),
        (["dlq", "list", "--limit", "1.5"], "argument --limit: '1.5' is not a whole number"),
        (["demo", "--timeout", "nan"], "argument --timeout: 'nan' is not allowed"),
        (["demo", "--timeout", "inf"], "argument --timeout: 'inf' is not allowed"),
        (["demo", "--concurrency", "1e9"], "argument --concurrency: '1e9' is not a whole number"),
    ],
)
def test_bad_numbers_on_the_command_line_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], url: str, argv: list[str], fragment: str
) -> None:
    if not fragment:  # the control case: the same command, well formed, is accepted
        assert run_cli(capsys, *argv, "--url", url)[0] == 0
        return
    code, out, err = run_cli(capsys, *argv, "--url", url)
    assert code == 2, err
    line = one_line(err)
    assert line.startswith("bananas: ") and fragment in line, line
    assert "unexpected error" not in line
    assert out == ""
    assert on(url, lambda b: b.queue.depths()).total_ready == 0  # nothing was submitted


def test_job_with_an_unreadable_stored_record_says_so_on_one_line(capsys: pytest.CaptureFixture[str], url: str) -> None:
    from bananas.backends._memory_store import store_for

    deep = "[" * 985 + "]" * 985
    store = store_for(url.removeprefix("memory://"))
    with store.lock:
        store.jobs["deep"] = '{"id":"deep","name":"n","payload":' + deep + "}"
        store.jobs["nan"] = '{"id":"nan","name":"n","payload":{"x":NaN}}'
    code, out, err = run_cli(capsys, "job", "deep", "--url", url)
    assert code == 1 and out == ""
    line = one_line(err)
    assert line.startswith("bananas: the stored record of job 'deep' is unreadable: ")
    assert "nests arrays and objects more than 64 levels deep" in line and "unexpected" not in line
    code, out, err = run_cli(capsys, "job", "nan", "--url", url, "--json")
    assert code == 1 and "the stored record of job 'nan' is unreadable: NaN is not a JSON number" in one_line(err)


def test_url_and_json_may_come_before_the_command(capsys: pytest.CaptureFixture[str], url: str) -> None:
    on(url, lambda b: b.queue.enqueue(Job.create("x", routing_key="early")))
    code, out, _ = run_cli(capsys, "--url", url, "--json", "stats")
    assert code == 0 and json.loads(out)["ready"] == {"early": {"high": 0, "normal": 1, "low": 0}}
    code, out, _ = run_cli(capsys, "--url", "memory://elsewhere-unused", "stats", "--url", url, "--json")
    assert json.loads(out)["ready_total"] == 1  # the command's own --url wins


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for command in ("worker", "submit", "job", "result", "stats", "dlq", "schedules", "workers", "check", "backends"):
        assert command in out
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.startswith("bananas ")
    code, out, _ = run_cli(capsys, "worker", "--help")
    assert code == 0 and "APP" in out and "--concurrency" in out


def test_unexpected_errors_are_one_line_too(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import bananas.cli.jobs

    async def broken(_args: object) -> int:
        raise RuntimeError("something nobody expected")

    monkeypatch.setattr(bananas.cli.jobs, "stats", broken)
    code, _, err = run_cli(capsys, "stats", "--url", "memory://")
    assert code == 1
    assert one_line(err) == (
        "bananas: unexpected error: RuntimeError: something nobody expected (set BANANAS_DEBUG=1 to see the traceback)"
    )


# -- demo -------------------------------------------------------------------------------------


def test_demo_finishes_and_sums_up(capsys: pytest.CaptureFixture[str], url: str) -> None:
    data = run_json(capsys, "demo", "--jobs", "40", "--url", url)
    assert data["submitted"] == data["processed"] == 40
    assert data["dead"] == 2  # jobs 7 and 27 always fail
    assert data["succeeded"] == 38
    assert data["retried"] == 4 + 2  # four flaky jobs retried once, two broken ones once before dying
    assert data["unfinished"] == 0 and data["jobs_per_second"] > 0
    depths = on(url, lambda b: b.queue.depths())
    assert depths.dead == 2 and depths.total_ready == 0 and depths.processing == 0


def test_demo_prints_progress_and_a_summary_table(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, _ = run_cli(capsys, "demo", "--jobs", "10", "--url", url)
    assert code == 0
    assert "10/10 done" in out  # not a terminal: periodic progress lines
    for label in ("processed", "succeeded", "retried", "dead", "elapsed", "jobs/s"):
        assert any(line.startswith(label) for line in out.splitlines()), label


# -- consistent statuses, times and exit codes --------------------------------------------------


def test_submit_wait_json_status_is_the_final_one(capsys: pytest.CaptureFixture[str], url: str) -> None:
    with _MiniWorker(url):
        data = run_json(capsys, "submit", "echo", "--wait", "10", "--url", url)
    assert data["status"] == "completed" == data["result"]["status"]


def test_a_failed_result_exits_1_like_submit_wait(capsys: pytest.CaptureFixture[str], url: str) -> None:
    job = Job.create("add", max_retries=0)

    async def fail(b: Backend) -> None:
        await b.queue.enqueue(job)
        (claimed,) = await b.queue.claim(["default"])
        await b.queue.fail(claimed, "boom")
        await b.results.store(JobResult(job_id=job.id, status=JobStatus.FAILED, error="boom"))

    on(url, fail)
    code, out, _ = run_cli(capsys, "result", job.id, "--url", url)
    assert code == 1 and "failed" in out and "boom" in out
    code, out, _ = run_cli(capsys, "result", job.id, "--url", url, "--json")
    assert code == 1 and json.loads(out)["status"] == "failed"


def test_schedules_without_app_show_no_unknown_columns(
    capsys: pytest.CaptureFixture[str], url: str, app_module: str
) -> None:
    run_json(capsys, "schedules", f"{app_module}:registry", "--url", url)  # imports the app
    registry = sys.modules[app_module].registry
    on(url, lambda b: CronScheduler(b, registry.schedules, first_run_grace=3600).tick())
    code, out, _ = run_cli(capsys, "schedules", "--url", url)
    assert code == 0 and "?" not in out
    assert out.splitlines()[0].split()[:3] == ["ID", "LAST", "RUN"]
    assert "pass APP" in out and "every-minute" in out


def test_workers_json_times_are_iso(capsys: pytest.CaptureFixture[str], url: str) -> None:
    on(url, lambda b: b.workers.heartbeat(_worker("w-1", ("default",)), ttl=60))
    (worker,) = run_json(capsys, "workers", "--url", url)
    heartbeat = datetime.fromisoformat(worker["last_heartbeat"])
    assert worker["last_heartbeat"].endswith("Z") and abs(heartbeat - datetime.now(UTC)) < timedelta(minutes=1)
    assert worker["started_at"] is None  # never set by this test's record


def test_check_reports_scheduled_jobs_without_a_scheduler(capsys: pytest.CaptureFixture[str], url: str) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    on(url, lambda b: b.queue.enqueue(Job.create("later", scheduled_for=later)))
    code, out, err = run_cli(capsys, "check", "--url", url)
    assert code == 1 and out == ""
    assert "1 scheduled or retrying job will never become ready: no live worker runs the scheduler" in one_line(err)
    specialized = attrs.evolve(_worker("w-spec", ("default",)), mode="specialized")
    on(url, lambda b: b.workers.heartbeat(specialized, ttl=60))
    assert run_cli(capsys, "check", "--url", url)[0] == 1  # specialized workers run no scheduler by default
    on(url, lambda b: b.workers.heartbeat(_worker("w-default", ("default",)), ttl=60))
    code, out, _ = run_cli(capsys, "check", "--url", url)
    assert code == 0 and out.startswith("ok: 2 live workers")


def test_check_reports_workers_whose_heartbeat_stopped(capsys: pytest.CaptureFixture[str], url: str) -> None:
    async def beat_30s_ago() -> None:
        async with connect(url, clock=lambda: time.time() - 30) as backend:
            await backend.workers.heartbeat(_worker("w-hung", ("default",)), ttl=60)

    asyncio.run(beat_30s_ago())
    code, _, err = run_cli(capsys, "check", "--url", url)
    assert code == 1 and "worker heartbeat stopped: w-hung (30s ago)" in one_line(err)
    data = json.loads(run_cli(capsys, "check", "--url", url, "--json")[1])
    assert data["ok"] is False and "w-hung" in data["message"]


def test_group_options_before_the_action(capsys: pytest.CaptureFixture[str], url: str) -> None:
    ids = _dead_jobs(url, 1)
    assert [j["id"] for j in run_json(capsys, "dlq", "--url", url, "list")] == ids
    code, out, _ = run_cli(capsys, "dlq", "--json", "--url", url, "requeue", "--all")
    assert code == 0 and json.loads(out) == {"requeued": 1}
    code, out, _ = run_cli(capsys, "db", "--url", url, "upgrade")
    assert code == 0 and "has no schema" in out


@needs_sqlite
def test_db_upgrade_says_whether_it_created_the_schema(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'fresh.db'}"
    code, out, _ = run_cli(capsys, "db", "upgrade", "--url", db)
    assert code == 0 and out.startswith("created the schema of sqlite:///")
    data = run_json(capsys, "db", "upgrade", "--url", db)
    assert data["action"] == "unchanged" and "already up to date" in data["message"]


@needs_sqlite
def test_read_only_commands_create_no_database_and_errors_name_the_default(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BANANAS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    for argv in (["stats"], ["job", "x"], ["result", "x"], ["dlq", "list"], ["workers"], ["check"]):
        code, out, err = run_cli(capsys, *argv)
        assert code == 2 and out == "" and "there is no Bananas database here" in one_line(err), argv
    assert not (tmp_path / "bananas.db").exists()
    run_cli(capsys, "submit", "x")
    code, _, err = run_cli(capsys, "job", "missing")
    assert code == 1 and one_line(err).endswith(f"(backend: the embedded default, {tmp_path / 'bananas.db'})")


def test_submit_takes_max_retries_from_the_environment(
    capsys: pytest.CaptureFixture[str], url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_RETRIES", "9")
    job_id = run_json(capsys, "submit", "x", "--url", url)["id"]
    assert run_json(capsys, "job", job_id, "--url", url)["max_retries"] == 9
    monkeypatch.setenv("MAX_RETRIES", "lots")
    code, _, err = run_cli(capsys, "submit", "x", "--url", url)
    assert code == 2 and "MAX_RETRIES='lots'" in one_line(err)


def test_worker_help_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "worker", "--help")
    flat = " ".join(out.split())
    assert code == 0 and "--no-scheduler run no scheduler in this worker" in flat and "--json" in flat

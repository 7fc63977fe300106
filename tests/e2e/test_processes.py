"""``bananas worker APP --processes N``: the supervisor, with real processes on Redis and
SQLite (slow), and its option checks (fast).

The slow tests start ``python -m bananas.worker tests.e2e.processes_app:registry`` as users
do, kill and signal the supervisor and its children, and count what the handlers logged:
every submitted job must complete, and (nothing crashing) run exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bananas import Client, JobStatus
from bananas.worker.command import _Parser, add_worker_arguments, main
from bananas.worker.supervisor import CRASH_LIMIT, SUPERVISOR_PID_ENV, child_argv, plan_supervision
from e2e_helpers import ROOT, installed, migrate, read_log, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

APP = "tests.e2e.processes_app:registry"
STARTED = re.compile(r"started worker process (\d+) \(pid (\d+)\)")


# -- option checks (fast) ---------------------------------------------------------------


def _parse(*argv: str) -> argparse.Namespace:
    parser = _Parser(prog="python -m bananas.worker")
    add_worker_arguments(parser)
    return parser.parse_args([APP, "--url", "sqlite:///never-opened.db", *argv])


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORKER_PROCESSES", "BANANAS_METRICS_PORT", SUPERVISOR_PID_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--processes", "0"], "--processes '0' is not allowed: use a whole number of worker processes from 1 to 256"),
        (["--processes", "257"], "--processes '257' is not allowed: use a whole number of worker processes from 1"),
        (["--processes", "two"], "--processes 'two' is not allowed"),
        (["--max-jobs-per-child", "0"], "--max-jobs-per-child '0' is not allowed: use a whole number of jobs from 1"),
        (["--max-jobs-per-child", "1.5"], "--max-jobs-per-child '1.5' is not allowed"),
        (["--max-memory-per-child", "8"], "--max-memory-per-child '8' is not allowed: use a whole number of megabytes"),
        (["--max-memory-per-child", "-1"], "--max-memory-per-child '-1' is not allowed"),
        (["--processes", "2", "--url", "memory://"], "memory:// lives inside one process"),
    ],
)
def test_bad_supervisor_options_are_one_line_and_exit_2(
    clean_env: None, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main([APP, "--url", "sqlite:///never-opened.db", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bananas worker: ")
    assert message in err


def test_worker_processes_variable_is_checked_and_named(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WORKER_PROCESSES", "0")
    assert main([APP, "--url", "sqlite:///never-opened.db"]) == 2
    assert "WORKER_PROCESSES '0' is not allowed: use a whole number of worker processes from 1 to 256" in (
        capsys.readouterr().err
    )
    plan = plan_supervision(_parse("--processes", "3"))  # the option wins over the variable
    assert plan is not None and plan.processes == 3
    monkeypatch.setenv("WORKER_PROCESSES", "4")
    plan = plan_supervision(_parse())
    assert plan is not None and plan.processes == 4


def test_reload_without_watchfiles_says_how_to_install_it(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "watchfiles", None)  # as if not installed: import raises ImportError
    assert main([APP, "--url", "sqlite:///never-opened.db", "--reload"]) == 2
    err = capsys.readouterr().err
    assert err == "bananas worker: --reload needs watchfiles: pip install 'bananas-core[reload]'\n"


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=-(10**6), max_value=10**6))
def test_processes_accepts_exactly_1_to_256(processes: int) -> None:
    os.environ.pop("WORKER_PROCESSES", None)
    os.environ.pop(SUPERVISOR_PID_ENV, None)
    args = _parse("--processes", str(processes))
    if 1 <= processes <= 256:
        plan = plan_supervision(args)
        assert (plan is None) == (processes == 1)  # one process without recycling: no supervisor
        assert plan is None or plan.processes == processes
    else:
        with pytest.raises(Exception, match=r"--processes .* from 1 to 256"):
            plan_supervision(args)


def test_one_process_runs_without_a_supervisor_unless_recycling_or_reloading(clean_env: None) -> None:
    assert plan_supervision(_parse()) is None
    assert plan_supervision(_parse("--processes", "1")) is None
    jobs = plan_supervision(_parse("--max-jobs-per-child", "7"))
    assert jobs is not None and (jobs.processes, jobs.max_jobs_per_child) == (1, 7)
    memory = plan_supervision(_parse("--processes", "2", "--max-memory-per-child", "300"))
    assert memory is not None and memory.max_memory_mb == 300


def test_a_supervised_child_never_supervises(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SUPERVISOR_PID_ENV, "1")
    assert plan_supervision(_parse("--processes", "4", "--max-jobs-per-child", "3")) is None


def test_metrics_ports_must_fit_every_child(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BANANAS_METRICS_PORT", "65535")
    with pytest.raises(Exception, match=r"BANANAS_METRICS_PORT 65535 with 2 processes needs ports up to 65536"):
        plan_supervision(_parse("--processes", "2"))
    monkeypatch.setenv("BANANAS_METRICS_PORT", "9100")
    plan = plan_supervision(_parse("--processes", "2"))
    assert plan is not None and plan.metrics_base == 9100


_WORKER_OPTIONS = {
    "--mode": st.sampled_from(["thin", "default"]),
    "--concurrency": st.integers(1, 1000).map(str),
    "--priorities": st.sampled_from(["high", "high,normal"]),
    "--routing-keys": st.sampled_from(["default", "gpu,default"]),
    "--prefetch": st.integers(0, 1000).map(str),
    "--grace-period": st.sampled_from(["0.5", "30", "1m"]),
    "--lease": st.sampled_from(["2", "60"]),
    "--max-jobs-per-child": st.integers(1, 10**9).map(str),
    "--log-level": st.sampled_from(["DEBUG", "INFO"]),
}


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(st.sampled_from(sorted(_WORKER_OPTIONS)), st.just(""), max_size=len(_WORKER_OPTIONS)).flatmap(
        lambda chosen: st.fixed_dictionaries({name: _WORKER_OPTIONS[name] for name in chosen})
    ),
    st.sampled_from([[], ["--json"], ["--no-scheduler"], ["--enable-scheduler", "--json"]]),
)
def test_children_get_every_worker_option_and_none_of_the_supervisors(
    options: dict[str, str], flags: list[str]
) -> None:
    argv = [item for pair in options.items() for item in pair] + flags
    supervisor_only = ["--processes", "3", "--reload", "--max-memory-per-child", "500"]
    given_args = _parse(*argv, *supervisor_only)
    child = child_argv(given_args)
    assert not {"--processes", "--reload", "--max-memory-per-child"} & {a.split("=")[0] for a in child}
    parser = _Parser(prog="python -m bananas.worker")
    add_worker_arguments(parser)
    again = vars(parser.parse_args(child))
    expected = vars(_parse(*argv))
    assert again == expected


def test_a_pool_with_max_jobs_claims_no_more_runs_them_and_stops_on_its_own() -> None:
    """The child's half of --max-jobs-per-child, on memory://: K jobs run, the rest stay queued untouched."""
    from bananas import AsyncClient, Job, Registry, connect
    from bananas.config import WorkerConfig
    from bananas.worker import Executor, JobContext, Pool

    ran: list[str] = []
    registry = Registry()

    @registry.handler("count")
    async def count(ctx: JobContext, job: Job) -> None:
        ran.append(job.id)

    async def scenario() -> list[Job]:
        backend = connect(f"memory://max-jobs-{uuid.uuid4().hex}")
        try:
            async with AsyncClient(backend=backend) as client:
                ids = await client.submit_many([{"name": "count"} for _ in range(10)])
                config = WorkerConfig(concurrency=2, scheduler_interval=0.1)
                executor = Executor(registry, backend.queue, 2, clock=backend.clock)
                executor.set_result_backend(backend.results)
                pool = Pool(executor, backend, config, prefetch=2, poll_interval=0.1, max_jobs=3)
                await asyncio.wait_for(pool.run(), 10)  # returns by itself once its 3 jobs are done
                return [await client.get_job(i) for i in ids]
        finally:
            await backend.close()

    jobs = asyncio.run(scenario())
    assert len(ran) == len(set(ran)) == 3
    done = [job for job in jobs if job.id in ran]
    rest = [job for job in jobs if job.id not in ran]
    assert {job.status for job in done} == {JobStatus.COMPLETED}
    assert {(job.status, job.attempts) for job in rest} == {(JobStatus.PENDING, 0)}


# -- real processes (slow) --------------------------------------------------------------


class Supervised:
    """``python -m bananas.worker APP ...`` as a user starts it (output kept for failure reports)."""

    def __init__(
        self, url: str, log_dir: Path, *args: str, app: str = APP, cwd: Path = ROOT, env: dict[str, str] | None = None
    ) -> None:
        self.log = log_dir / f"supervisor-{uuid.uuid4().hex[:6]}.log"
        argv = [sys.executable, "-m", "bananas.worker", app, "--url", url, "--scheduler-interval", "100ms", *args]
        environment = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        for name in ("BANANAS_URL", "WORKER_PROCESSES", "BANANAS_METRICS_PORT", SUPERVISOR_PID_ENV):
            if env is None or name not in env:
                environment.pop(name, None)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=environment)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def children(self) -> list[tuple[int, int]]:
        """(slot, pid) of every child started so far, in order."""
        return [(int(slot), int(pid)) for slot, pid in STARTED.findall(self.output())]

    def pids(self) -> set[int]:
        return {pid for _, pid in self.children()}

    def serving(self) -> int:
        """How many children announced that they claim jobs."""
        return len(re.findall(r"INFO bananas.worker: worker \S+ started", self.output()))

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 60.0) -> int:
        return self.proc.wait(timeout)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for pid in self.pids():  # children left behind by a failed test: only ours, by their command line
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if (
                b"bananas.worker" in cmdline
                and SUPERVISOR_PID_ENV.encode() in Path(f"/proc/{pid}/environ").read_bytes()
            ):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(params=["redis", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh namespace on the session's Redis, or a fresh SQLite file."""
    scheme: str = request.param
    if not installed(scheme):
        pytest.skip(f"no installed plugin serves {scheme}://")
    if scheme == "redis":
        base = request.getfixturevalue("redis_url")
        result = f"{base}{'&' if '?' in base else '?'}namespace=proc{uuid.uuid4().hex[:10]}"
    else:
        result = f"sqlite:///{tmp_path / 'processes.db'}"
    migrate(result)
    return result


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Any]:
    """Start supervisors with ``supervised(url, *options, ...)``; stopped (and reported) afterwards."""
    started: list[Supervised] = []

    def start(url: str, *args: str, **kwargs: Any) -> Supervised:
        supervisor = Supervised(url, tmp_path, *args, **kwargs)
        started.append(supervisor)
        return supervisor

    yield start
    for supervisor in started:
        supervisor.cleanup()
        print(f"--- {' '.join(map(str, supervisor.proc.args))} (exit {supervisor.proc.returncode}) ---")
        print(supervisor.output())


def _records(count: int, log: Path, sleep: float) -> list[dict[str, Any]]:
    return [{"name": "record", "payload": {"log": str(log), "sleep": sleep}} for _ in range(count)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


@pytest.mark.slow
def test_two_processes_run_jobs_in_two_pids(url: str, supervised: Any, tmp_path: Path) -> None:
    log = tmp_path / "two.log"
    supervisor = supervised(url, "--processes", "2", "--concurrency", "2", "--prefetch", "0")
    wait_for(lambda: supervisor.serving() == 2, 60, "both worker processes to start")
    with Client(url) as client:
        ids = client.submit_many(_records(40, log, 0.1))
        results = [client.wait_for_result(i, timeout=60) for i in ids]
    assert all(r.is_success() for r in results)
    ran_in = {r.result for r in results}
    assert ran_in == supervisor.pids() and len(ran_in) == 2
    assert os.getpid() not in ran_in and supervisor.proc.pid not in ran_in
    supervisor.signal(signal.SIGINT)  # Ctrl-C: passed on to each child once, as SIGTERM
    assert supervisor.wait() == 0
    assert supervisor.output().count("INFO bananas.worker: SIGTERM received: stopping;") == 2
    assert "received again" not in supervisor.output()


@pytest.mark.slow
def test_a_killed_child_is_restarted_and_its_jobs_come_back_after_their_lease(
    url: str, supervised: Any, tmp_path: Path
) -> None:
    log = tmp_path / "killed.log"
    supervisor = supervised(url, "--processes", "2", "--concurrency", "3", "--prefetch", "0", "--lease", "2")
    wait_for(lambda: supervisor.serving() == 2, 60, "both worker processes to start")
    first = supervisor.pids()
    with Client(url) as client:
        ids = client.submit_many(_records(12, log, 1.5))
        wait_for(lambda: len({e["pid"] for e in read_log(log)}) == 2, 30, "jobs to start in both processes")
        victim = next(e["pid"] for e in read_log(log) if e["event"] == "start")
        os.kill(victim, signal.SIGKILL)
        in_flight = {e["id"] for e in read_log(log) if e["pid"] == victim and e["event"] == "start"} - {
            e["id"] for e in read_log(log) if e["pid"] == victim and e["event"] == "done"
        }
        wait_for(lambda: len(supervisor.pids()) == 3, 30, "a new worker process in the killed one's place")
        results = {i: client.wait_for_result(i, timeout=90) for i in ids}
        jobs = {i: client.get_job(i) for i in ids}
    assert in_flight, "the killed process held no running job"
    assert f"(pid {victim}) was killed by SIGKILL" in supervisor.output()
    [replacement] = supervisor.pids() - first
    assert all(r.is_success() for r in results.values())
    done = Counter(e["id"] for e in read_log(log) if e["event"] == "done")
    assert done == Counter(ids)  # every job completed once: none lost with the killed process
    for job_id in in_flight:  # came back after the lease and ran elsewhere, the lost attempt counted
        assert jobs[job_id].status is JobStatus.COMPLETED and jobs[job_id].attempts == 1
        assert results[job_id].result != victim
    wait_for(lambda: supervisor.serving() == 3, 30, "the new worker process to serve")
    assert _alive(replacement)
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0


@pytest.mark.slow
def test_sigterm_stops_every_child_gracefully_and_loses_nothing(url: str, supervised: Any, tmp_path: Path) -> None:
    log = tmp_path / "sigterm.log"
    supervisor = supervised(url, "--processes", "2", "--concurrency", "4", "--grace-period", "5")
    wait_for(lambda: supervisor.serving() == 2, 60, "both worker processes to start")
    with Client(url) as client:
        ids = client.submit_many(_records(80, log, 0.2))
        wait_for(lambda: sum(e["event"] == "done" for e in read_log(log)) >= 10, 30, "the first jobs to finish")
        supervisor.signal(signal.SIGTERM)
        assert supervisor.wait() == 0
        children = supervisor.pids()
        assert len(children) == 2 and not any(_alive(pid) for pid in children)
        output = supervisor.output()
        assert output.count("INFO bananas.worker: SIGTERM received: stopping") == 2  # one signal each: graceful
        assert all(f"(pid {pid}) stopped (exited with code 0)" in output for pid in children)
        unfinished = [i for i in ids if client.get_job(i).status is not JobStatus.COMPLETED]
        assert unfinished, "every job finished before the stop: nothing was handed back"
        drain = supervised(url, "--processes", "2", "--concurrency", "8")
        results = [client.wait_for_result(i, timeout=60) for i in ids]
        jobs = [client.get_job(i) for i in ids]
    assert all(r.is_success() for r in results)
    starts = Counter(e["id"] for e in read_log(log) if e["event"] == "start")
    done = Counter(e["id"] for e in read_log(log) if e["event"] == "done")
    assert done == Counter(ids) and starts == Counter(ids)  # completions = submitted, each ran once
    assert max(j.attempts for j in jobs) == 0  # a graceful stop costs no attempt
    drain.signal(signal.SIGTERM)
    assert drain.wait() == 0


@pytest.mark.slow
def test_max_jobs_per_child_replaces_children_and_runs_every_job_once(
    url: str, supervised: Any, tmp_path: Path
) -> None:
    log = tmp_path / "recycled.log"
    supervisor = supervised(url, "--processes", "2", "--concurrency", "4", "--max-jobs-per-child", "50")
    with Client(url) as client:
        ids = client.submit_many(_records(500, log, 0))
        results = [client.wait_for_result(i, timeout=180) for i in ids]
    assert all(r.is_success() for r in results)
    starts = Counter(e["id"] for e in read_log(log) if e["event"] == "start")
    done = Counter(e["id"] for e in read_log(log) if e["event"] == "done")
    assert starts == Counter(ids) and done == Counter(ids)  # exactly once: no duplicate, none missing
    per_pid = Counter(r.result for r in results)
    assert len(per_pid) >= 10 and max(per_pid.values()) <= 50
    assert "claimed its 50 jobs" in supervisor.output()
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0


@pytest.mark.slow
def test_reload_restarts_children_after_a_source_change(url: str, supervised: Any, tmp_path: Path) -> None:
    package = tmp_path / f"reloadapp_{uuid.uuid4().hex[:6]}"
    package.mkdir()
    source = (
        "import os\n"
        "from bananas import Registry\n"
        "registry = Registry()\n"
        "VERSION = {version}\n"
        "@registry.handler('version')\n"
        "def version(ctx, job):\n"
        "    return [VERSION, os.getpid()]\n"
    )
    (package / "__init__.py").write_text(source.format(version=1))
    supervisor = supervised(
        url, "--processes", "2", "--reload", "--grace-period", "1", app=f"{package.name}:registry", cwd=tmp_path
    )
    wait_for(lambda: supervisor.serving() == 2 and "watching" in supervisor.output(), 60, "both processes to start")
    before = supervisor.pids()
    with Client(url) as client:
        assert client.submit_and_wait("version", timeout=30).result[0] == 1
        (package / "__init__.py").write_text(source.format(version=2))
        wait_for(lambda: supervisor.serving() == 4, 60, "two new worker processes")
        version, pid = client.submit_and_wait("version", timeout=30).result
    after = supervisor.pids() - before
    assert len(before) == 2 and len(after) == 2
    assert (version, pid in after) == (2, True)
    assert "source changed" in supervisor.output()
    # A broken edit: the new processes cannot start and wait for the next change, which fixes it.
    (package / "__init__.py").write_text(source.format(version="3 +"))
    wait_for(lambda: supervisor.output().count("waiting for a source change") == 2, 60, "both slots to wait")
    assert supervisor.proc.poll() is None
    (package / "__init__.py").write_text(source.format(version=3))
    wait_for(lambda: supervisor.serving() == 6, 60, "two worker processes running the fixed source")
    with Client(url) as client:
        assert client.submit_and_wait("version", timeout=30).result[0] == 3
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0


@pytest.mark.slow
def test_children_crashing_at_start_stop_the_supervisor_with_one_line(url: str, supervised: Any) -> None:
    supervisor = supervised(url, "--processes", "2", env={"PROCESSES_APP_CRASH": "1"})
    assert supervisor.wait(timeout=120) == 1
    lines = [line for line in supervisor.output().splitlines() if line.startswith("bananas worker:")]
    assert len(lines) == 1
    assert re.fullmatch(
        rf"bananas worker: worker processes keep crashing at start: worker process [01] failed {CRASH_LIMIT} "
        r"times in a row within 10s of starting \(last: it exited with code 3\); stopping",
        lines[0],
    )
    assert not any(_alive(pid) for pid in supervisor.pids())


@pytest.mark.slow
def test_a_wrong_app_stops_the_supervisor_at_once_with_exit_2(url: str, supervised: Any) -> None:
    supervisor = supervised(url, "--processes", "2", app="tests.e2e.no_such_module:registry")
    assert supervisor.wait(timeout=60) == 2
    output = supervisor.output()
    assert "cannot import 'tests.e2e.no_such_module'" in output
    assert "exited with code 2 at start: the configuration or APP is wrong" in output
    assert len(supervisor.pids()) == 2  # not restarted: it cannot help


@pytest.mark.slow
def test_max_memory_per_child_replaces_a_child_above_the_limit(url: str, supervised: Any) -> None:
    supervisor = supervised(url, "--processes", "1", "--max-memory-per-child", "150")
    with Client(url) as client:
        hog = client.submit_and_wait("hoard", 200, timeout=60).result
        wait_for(lambda: len(supervisor.pids()) == 2, 30, "a replacement of the process above the limit")
        after = client.submit_and_wait("whoami", timeout=60).result
    assert hog != after and after in supervisor.pids()
    assert re.search(rf"\(pid {hog}\) used \d+ MB, above --max-memory-per-child 150: replacing it", supervisor.output())
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base >= 65535:
            continue
        try:
            with socket.socket() as second:
                second.bind(("127.0.0.1", base + 1))
        except OSError:
            continue
        return base
    raise AssertionError("no two consecutive free loopback ports")


@pytest.mark.slow
@pytest.mark.parametrize("given_as", ["--metrics-port", "BANANAS_METRICS_PORT"])
def test_each_child_gets_its_own_metrics_port(url: str, supervised: Any, given_as: str) -> None:
    base = _free_port_pair()
    option = ["--metrics-port", str(base)] if given_as == "--metrics-port" else []
    env = {"BANANAS_METRICS_PORT": str(base)} if given_as == "BANANAS_METRICS_PORT" else None
    supervisor = supervised(url, "--processes", "2", "--concurrency", "1", "--prefetch", "0", *option, env=env)
    wait_for(lambda: supervisor.serving() == 2, 60, "both worker processes to start")
    with Client(url) as client:
        ids = [client.submit_job("metrics_port", 0.2) for _ in range(12)]
        ports = {tuple(client.wait_for_result(i, timeout=60).result) for i in ids}
    by_slot = dict(supervisor.children())
    assert ports == {(by_slot[0], str(base)), (by_slot[1], str(base + 1))}
    for port in (base, base + 1):  # each child serves its own endpoints
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            assert response.status == 200
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0


@pytest.mark.slow
def test_a_second_sigterm_hands_running_jobs_back_at_once(url: str, supervised: Any, tmp_path: Path) -> None:
    log = tmp_path / "second.log"
    supervisor = supervised(url, "--processes", "2", "--grace-period", "600")
    wait_for(lambda: supervisor.serving() == 2, 60, "both worker processes to start")
    with Client(url) as client:
        job_id = client.submit_job("record", {"log": str(log), "sleep": 3600})
        wait_for(lambda: bool(read_log(log)), 30, "the job to start")
        supervisor.signal(signal.SIGTERM)
        wait_for(lambda: supervisor.output().count("SIGTERM received: stopping;") == 2, 30, "both children to stop")
        assert supervisor.proc.poll() is None  # the first signal waits for the running job
        supervisor.signal(signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 0
        job = client.get_job(job_id)
    assert (job.status, job.attempts) == (JobStatus.PENDING, 0)  # handed back, no attempt counted
    assert "handed 1 unfinished job(s) back" in supervisor.output()
    assert "did not stop in time" not in supervisor.output()  # no SIGKILL was needed


@pytest.mark.slow
def test_children_of_a_killed_supervisor_stop_on_their_own(url: str, supervised: Any) -> None:
    supervisor = supervised(url, "--processes", "2")
    wait_for(lambda: supervisor.serving() == 2, 60, "both worker processes to start")
    children = supervisor.pids()
    supervisor.signal(signal.SIGKILL)
    supervisor.wait()
    wait_for(lambda: not any(_alive(pid) for pid in children), 30, "the orphaned worker processes to stop")
    assert supervisor.output().count("the supervisor (pid") == 2

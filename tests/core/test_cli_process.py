"""The installed ``bananas`` console script, run as a separate process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from bananas.plugins import backend_specs

BANANAS = Path(sys.executable).with_name("bananas")
HAS_SQLITE = any("sqlite" in spec.schemes for spec in backend_specs())
needs_sqlite = pytest.mark.skipif(not HAS_SQLITE, reason="the sqlite:// plugin (bananas-sql) is not installed")


def env_for(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BANANAS_URL", "BANANAS_DEBUG")}
    env["PYTHONPATH"] = str(tmp_path)
    return env


def bananas(tmp_path: Path, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(BANANAS), *argv],
        cwd=tmp_path,
        env=env_for(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_console_script_is_installed() -> None:
    assert BANANAS.exists(), f"{BANANAS} is missing: run scripts/bootstrap"


@pytest.mark.parametrize(
    ("argv", "code", "fragment"),
    [
        (["submit", "x", "--payload", "{not json", "--url", "memory://"], 2, "--payload is not valid JSON"),
        (["submit", "x", "--priority", "asap", "--url", "memory://"], 2, "invalid priority 'asap'"),
        (["job", "missing", "--url", "memory://"], 1, "'missing' not found"),
        (["stats", "--url", "gopher://host"], 2, "no installed backend serves gopher://"),
        (["schedules", "nowhere:registry", "--url", "memory://"], 2, "cannot import 'nowhere'"),
        (["worker", "nowhere:registry", "--url", "memory://"], 2, "nowhere"),
        (["submit", "x", "--in", "1e20", "--url", "memory://"], 2, "--in '1e20': a delay of"),
        (["submit", "x", "--wait", "nan", "--url", "memory://"], 2, "argument --wait: 'nan' is not allowed"),
        (["submit", "x", "--payload", "[" * 5000 + "]" * 5000, "--url", "memory://"], 2, "levels deep"),
    ],
)
def test_mistakes_exit_with_one_line(tmp_path: Path, argv: list[str], code: int, fragment: str) -> None:
    done = bananas(tmp_path, *argv)
    assert done.returncode == code
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], done.stderr
    assert done.stdout == ""


@needs_sqlite
def test_embedded_default_and_demo(tmp_path: Path) -> None:
    done = bananas(tmp_path, "stats", "--json")  # read-only: no database is created here
    assert done.returncode == 2 and done.stdout == ""
    assert f"there is no Bananas database here ({tmp_path / 'bananas.db'} does not exist)" in done.stderr
    assert "--url" in done.stderr and not (tmp_path / "bananas.db").exists()
    for argv in (["job", "x"], ["result", "x"], ["dlq", "list"]):
        assert bananas(tmp_path, *argv).returncode == 2 and not (tmp_path / "bananas.db").exists()

    done = bananas(tmp_path, "submit", "hello")  # a write creates it, saying so once
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("bananas: using the embedded default sqlite:///bananas.db, creating ")
    assert (tmp_path / "bananas.db").exists()
    done = bananas(tmp_path, "stats", "--json")
    assert done.returncode == 0 and done.stderr == ""  # once per directory, not per command
    assert json.loads(done.stdout)["ready_total"] == 1
    assert json.loads(done.stdout)["backend"].endswith(f"(the embedded default, {tmp_path / 'bananas.db'})")

    done = bananas(tmp_path, "demo", "--jobs", "30")
    assert done.returncode == 0, done.stderr
    assert "30/30 done" in done.stdout and "processed  30" in done.stdout


def test_demo_on_memory(tmp_path: Path) -> None:
    done = bananas(tmp_path, "demo", "--jobs", "20", "--json", "--url", "memory://")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["processed"] == 20 and summary["dead"] == 1 and summary["unfinished"] == 0


APP = """
from bananas.worker import Registry

registry = Registry()


@registry.handler("add")
async def add(ctx, job):
    return job.payload["a"] + job.payload["b"]
"""


@needs_sqlite
@pytest.mark.slow
def test_worker_check_submit_wait_on_a_sqlite_file(tmp_path: Path) -> None:
    (tmp_path / "cliapp.py").write_text(textwrap.dedent(APP))
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    assert bananas(tmp_path, "db", "upgrade", "--url", url).returncode == 0
    assert bananas(tmp_path, "submit", "add", "--payload", '{"a": 1, "b": 1}', "--url", url).returncode == 0
    check = bananas(tmp_path, "check", "--url", url)
    assert check.returncode == 1 and "'default' (1 job)" in check.stderr

    worker = subprocess.Popen(
        [str(BANANAS), "worker", "cliapp:registry", "--url", url, "--concurrency", "4", "--log-level", "WARNING"],
        cwd=tmp_path,
        env=env_for(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            check = bananas(tmp_path, "check", "--url", url)
            if check.returncode == 0:
                break
            time.sleep(0.2)
        assert check.returncode == 0 and check.stdout.startswith("ok: 1 live worker"), check.stderr
        workers = json.loads(bananas(tmp_path, "workers", "--json", "--url", url).stdout)
        assert [w["pid"] for w in workers] == [worker.pid]

        done = bananas(
            tmp_path, "submit", "add", "--payload", '{"a": 2, "b": 3}', "--wait", "30", "--json", "--url", url
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["result"]["result"] == 5
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert json.loads(bananas(tmp_path, "workers", "--json", "--url", url).stdout) == []


def test_redis_url_of_the_original_is_honoured(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    env["REDIS_URL"] = "gopher://from-redis-url"
    done = subprocess.run(
        [str(BANANAS), "stats"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2 and "no installed backend serves gopher://" in done.stderr
    env["BANANAS_URL"] = "memory://"  # ours first
    done = subprocess.run(
        [str(BANANAS), "stats", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and json.loads(done.stdout)["backend"] == "memory://"


@pytest.mark.parametrize(
    ("argv", "what"),
    [
        (["submit", "x"], "submits"),
        (["dlq", "requeue", "--all"], "requeues"),
        (["dlq", "purge", "--all"], "purges"),
    ],
)
def test_memory_is_refused_where_the_effect_would_vanish_with_the_process(
    tmp_path: Path, argv: list[str], what: str
) -> None:
    done = bananas(tmp_path, *argv, "--url", "memory://")
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and f"memory:// lives inside one process, so what this command {what} would vanish" in lines[0]
    )
    assert bananas(tmp_path, "stats", "--url", "memory://").returncode == 0  # reading is harmless


def test_global_options_after_a_group_name(tmp_path: Path) -> None:
    done = bananas(tmp_path, "dlq", "--url", "memory://", "--json", "list")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


@pytest.mark.parametrize(
    ("argv", "env", "fragment"),
    [
        (["--concurrency", "0"], {}, "--concurrency 0 is out of range: use 1 to 1000"),
        (["--prefetch", "-1"], {}, "--prefetch '-1' is not allowed"),
        ([], {"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY=0 is out of range"),
        ([], {"LOG_LEVEL": "loud"}, "LOG_LEVEL='loud' is not a log level"),
        ([], {"LOG_FORMAT": "xml"}, "LOG_FORMAT='xml' is not a log format: use text or json"),
        ([], {"JOB_TIMEOUT": "soon"}, "JOB_TIMEOUT='soon' is not a duration"),
        ([], {"CRON_SCHEDULER_ENABLED": "maybe"}, "CRON_SCHEDULER_ENABLED='maybe' is not a boolean"),
    ],
)
def test_worker_option_and_variable_errors_name_what_the_user_set(
    tmp_path: Path, argv: list[str], env: dict[str, str], fragment: str
) -> None:
    (tmp_path / "cliapp.py").write_text(textwrap.dedent(APP))
    full = env_for(tmp_path) | env
    done = subprocess.run(
        [str(BANANAS), "worker", "cliapp:registry", "--url", "memory://", *argv],
        cwd=tmp_path, env=full, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], done.stderr


@pytest.mark.slow
def test_worker_json_logs_one_object_a_line(tmp_path: Path) -> None:
    (tmp_path / "cliapp.py").write_text(textwrap.dedent(APP))
    worker = subprocess.Popen(
        [str(BANANAS), "--json", "worker", "cliapp:registry", "--url", "memory://"],
        cwd=tmp_path, env=env_for(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert worker.stderr is not None
        first = worker.stderr.readline()
        time.sleep(1)  # logged before the pool installs its signal handlers
    finally:
        worker.send_signal(signal.SIGTERM)
        _, rest = worker.communicate(timeout=30)
    assert worker.returncode == 0, rest
    record = json.loads(first)
    assert record["level"] == "INFO" and record["logger"].startswith("bananas") and "serving" in record["message"]
    assert record["time"].endswith("Z")
    for line in rest.strip().splitlines():
        json.loads(line)

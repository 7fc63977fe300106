"""``bananas worker APP`` / ``python -m bananas.worker APP``: loading the app and user mistakes
(one line on stderr, exit code 2, no traceback)."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from bananas import Registry
from bananas.worker.command import AppError, TextFormatter, load_registry, main
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"h4_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "from bananas import Registry\n"
        "registry = Registry()\n"
        "registry.register('noop', lambda ctx, job: None)\n"
        "def make():\n"
        "    return registry\n"
        "not_a_registry = 42\n"
        "def add(ctx, job):\n"
        "    return 1\n"
        "class holder:\n"
        "    inner = registry\n"
    )
    (tmp_path / f"{name}_broken.py").write_text("raise RuntimeError('config missing')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_load_registry_by_attribute_factory_and_dotted_path(app_module: str) -> None:
    registry = load_registry(f"{app_module}:registry")
    assert isinstance(registry, Registry)
    assert "noop" in registry
    assert load_registry(f"{app_module}:make") is registry
    assert load_registry(f"{app_module}:holder.inner") is registry


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{m}", "must look like module:attribute"),
        ("{m}:", "must look like module:attribute"),
        (":registry", "must look like module:attribute"),
        ("no_such_module_h4:registry", "cannot import 'no_such_module_h4'"),
        ("{m}:missing", "has no attribute 'missing'"),
        ("{m}:not_a_registry", "is a int, not a bananas.worker.Registry"),
        ("{m}_broken:registry", "failed: RuntimeError: config missing"),
        ("{m}:add", r"is a function that takes arguments \(a handler\?\), not a bananas.worker.Registry"),
    ],
)
def test_bad_app_specs_say_what_is_wrong(app_module: str, spec: str, message: str) -> None:
    with pytest.raises(AppError, match=message):
        load_registry(spec.format(m=app_module))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "must look like module:attribute"),
        (["{m}:registry", "--concurrency", "lots"], r"--concurrency='lots' is not a whole"),
        (["{m}:registry", "--mode", "turbo"], "is not a worker mode: use one of thin, default"),
        (["{m}:registry", "--mode", "job-specialized"], "WORKER_JOB_TYPES is required"),
        (["{m}:registry", "--routing-keys", "a b"], "invalid routing key 'a b'"),
        (["{m}:registry", "--scheduler-interval", "1y"], "is not a duration"),
        (["{m}:registry", "--grace-period", "-5"], "--grace-period -5.0 is out of range"),
        (["{m}:registry", "--url", "nosuch://x"], "no installed backend serves nosuch://"),
        (["{m}:registry", "--bogus"], "unrecognized arguments: --bogus"),
        (["{m}:registry", "--prefetch", "-1"], r"--prefetch '-1' is not allowed: use a whole number of jobs from 0"),
        (["{m}:registry", "--prefetch", "many"], r"--prefetch 'many' is not allowed"),
        ([], "the following arguments are required: APP"),
        (["{m}:registry", "--loop", "trio"], r"--loop must be one of auto, asyncio, uvloop, got 'trio'"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_code_2(
    app_module: str, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main([a.format(m=app_module) for a in args])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("bananas worker:")]
    assert len(lines) == 1, err
    assert re.search(message, lines[0]), lines[0]


def test_help_lists_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--mode", "--concurrency", "--priorities", "--routing-keys", "--job-types",
                   "--scheduler-interval", "--enable-scheduler", "--no-scheduler", "--url",
                   "--job-timeout", "--grace-period", "--lease", "--prefetch"):  # fmt: skip
        assert option in out


def test_python_dash_m_reports_a_bad_app_without_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bananas.worker", "no_such_module_h4:registry", "--url", "memory://"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "cannot import 'no_such_module_h4'" in proc.stderr


def test_every_command_loads_an_app_the_same_way(app_module: str) -> None:
    """`bananas schedules APP` and `bananas worker APP` share one loader, with the same errors."""
    from bananas.cli.common import UsageError, load_app

    assert load_app(f"{app_module}:registry") is load_registry(f"{app_module}:registry")
    for spec in (f"{app_module}", f"{app_module}_broken:registry", "no_such_module_h4:x"):
        with pytest.raises(AppError) as worker_error:
            load_registry(spec)
        with pytest.raises(UsageError) as command_error:
            load_app(spec)
        assert str(command_error.value) == str(worker_error.value)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False), min_size=1, max_size=6))
def test_the_text_formatter_writes_what_the_standard_formatter_writes(times: list[float]) -> None:
    """The worker's text lines cache the time of day per second; the lines stay the standard ones."""
    ours = TextFormatter()
    standard = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for created in times:  # in any order: the cache must follow jumps back as well as forward
        record = logging.LogRecord("bananas.worker", logging.INFO, __file__, 1, "job %s done", ("j1",), None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.format(record) == standard.format(record)


@pytest.mark.slow
@pytest.mark.parametrize("choice", ["asyncio", "uvloop"])
def test_the_worker_runs_on_the_loop_asked_for(tmp_path: Path, choice: str) -> None:
    """``--loop`` picks the worker's event loop; a handler sees which one it runs on."""
    from bananas import Client

    import bananas_sql

    (tmp_path / "loop_app.py").write_text(
        "import asyncio\n"
        "from bananas import Registry\n"
        "registry = Registry()\n"
        "@registry.handler('which')\n"
        "async def which(ctx, job):\n"
        "    return type(asyncio.get_running_loop()).__module__\n"
    )
    url = f"sqlite:///{tmp_path / 'store.db'}"
    asyncio.run(bananas_sql.upgrade(url))
    with Client(url) as client:
        job_id = client.submit_job("which")
        worker = subprocess.Popen(
            [sys.executable, "-m", "bananas.worker", "loop_app:registry", "--url", url, "--loop", choice],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            result = client.wait_for_result(job_id, timeout=30)
        finally:
            worker.terminate()
            worker.wait(30)
    assert result is not None and result.is_success()
    assert result.result.split(".")[0] == choice

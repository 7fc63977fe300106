"""Worker configuration: every mode's defaults, every bad value of every variable, durations,
and which backend URL is used when none is given."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from bananas import AsyncClient, ConfigError, Job, JobPriority, UnknownBackendScheme, config
from bananas.config import (
    EMBEDDED_DEFAULT_URL,
    WorkerConfig,
    WorkerMode,
    load_worker_config,
    open_backend,
    parse_duration,
    resolve_url,
)
from bananas.plugins import resolve
from hypothesis import given
from hypothesis import strategies as st

ALL = (JobPriority.HIGH, JobPriority.NORMAL, JobPriority.LOW)


@pytest.mark.parametrize(
    ("mode", "concurrency", "priorities", "scheduler"),
    [
        ("thin", 5, ALL, True),
        ("default", 10, ALL, True),
        ("specialized", 10, (JobPriority.HIGH,), False),
        ("scheduler-only", 0, (), True),
    ],
)
def test_mode_defaults(mode: str, concurrency: int, priorities: tuple[JobPriority, ...], scheduler: bool) -> None:
    config = load_worker_config({"WORKER_MODE": mode})
    assert config.mode == WorkerMode(mode)
    assert config.concurrency == concurrency
    assert config.priorities == priorities
    assert config.enable_scheduler is scheduler
    assert config.routing_keys == ("default",)
    assert config.scheduler_interval == 1.0
    assert config.claims_jobs is (mode != "scheduler-only")


def test_job_specialized_defaults_and_job_types() -> None:
    config = load_worker_config({"WORKER_MODE": "job-specialized", "WORKER_JOB_TYPES": "send_email, resize,send_email"})
    assert config.job_types == ("send_email", "resize")
    assert config.concurrency == 10
    assert config.priorities == ALL
    assert config.enable_scheduler is False


def test_no_environment_gives_the_default_mode() -> None:
    assert load_worker_config({}) == WorkerConfig()


def test_every_variable_is_read() -> None:
    config = load_worker_config(
        {
            "WORKER_MODE": "Specialized",
            "WORKER_CONCURRENCY": " 42 ",
            "WORKER_PRIORITIES": "low,HIGH",
            "WORKER_ROUTING_KEYS": "gpu, default",
            "WORKER_JOB_TYPES": "a,b",
            "SCHEDULER_INTERVAL": "250ms",
            "ENABLE_SCHEDULER": "yes",
        }
    )
    assert config.mode is WorkerMode.SPECIALIZED
    assert config.concurrency == 42
    assert config.priorities == (JobPriority.LOW, JobPriority.HIGH)
    assert config.routing_keys == ("gpu", "default")
    assert config.job_types == ("a", "b")
    assert config.scheduler_interval == 0.25
    assert config.enable_scheduler is True


def test_explicit_values_beat_mode_defaults() -> None:
    thin = load_worker_config({"WORKER_MODE": "thin", "WORKER_CONCURRENCY": "10", "ENABLE_SCHEDULER": "false"})
    assert (thin.concurrency, thin.enable_scheduler) == (10, False)
    special = load_worker_config({"WORKER_MODE": "specialized", "WORKER_PRIORITIES": "normal", "ENABLE_SCHEDULER": "1"})
    assert (special.priorities, special.enable_scheduler) == ((JobPriority.NORMAL,), True)


def test_overrides_win_over_the_environment_and_strings_are_parsed() -> None:
    env = {"WORKER_CONCURRENCY": "3", "SCHEDULER_INTERVAL": "5s"}
    config = load_worker_config(env, concurrency="7", scheduler_interval="2s", lease="30s", routing_keys=None)
    assert (config.concurrency, config.scheduler_interval, config.lease) == (7, 2.0, 30.0)
    assert load_worker_config(env, concurrency=9).concurrency == 9


def test_unknown_override_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="colour"):
        load_worker_config({}, colour="blue")


def test_empty_variables_are_ignored() -> None:
    assert load_worker_config({"WORKER_MODE": "", "WORKER_CONCURRENCY": "  "}) == WorkerConfig()


BAD_VALUES = [
    ({"WORKER_MODE": "turbo"}, "WORKER_MODE", "thin, default, specialized, job-specialized, scheduler-only"),
    ({"WORKER_CONCURRENCY": "many"}, "WORKER_CONCURRENCY", "1 to 1000"),
    ({"WORKER_CONCURRENCY": "2.5"}, "WORKER_CONCURRENCY", "1 to 1000"),
    ({"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY", "1 to 1000"),
    ({"WORKER_CONCURRENCY": "-3"}, "WORKER_CONCURRENCY", "1 to 1000"),
    ({"WORKER_CONCURRENCY": "1001"}, "WORKER_CONCURRENCY", "1 to 1000"),
    ({"WORKER_MODE": "thin", "WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY", "1 to 1000"),
    ({"WORKER_MODE": "scheduler-only", "WORKER_CONCURRENCY": "4"}, "WORKER_CONCURRENCY", "concurrency is 0"),
    ({"WORKER_PRIORITIES": "urgent"}, "WORKER_PRIORITIES", "high, normal, low"),
    ({"WORKER_PRIORITIES": "high,,low"}, "WORKER_PRIORITIES", "high, normal, low"),
    ({"WORKER_PRIORITIES": ","}, "WORKER_PRIORITIES", "high, normal, low"),
    ({"WORKER_ROUTING_KEYS": "gpu,bad key"}, "WORKER_ROUTING_KEYS", "1-64 characters"),
    ({"WORKER_ROUTING_KEYS": "gpu,"}, "WORKER_ROUTING_KEYS", "1-64 characters"),
    ({"WORKER_ROUTING_KEYS": "x" * 65}, "WORKER_ROUTING_KEYS", "1-64 characters"),
    ({"WORKER_JOB_TYPES": "a,,b"}, "WORKER_JOB_TYPES", "empty job name"),
    ({"WORKER_MODE": "job-specialized"}, "WORKER_JOB_TYPES", "required in job-specialized mode"),
    ({"WORKER_MODE": "job-specialized", "WORKER_JOB_TYPES": " , "}, "WORKER_JOB_TYPES", "empty job name"),
    ({"SCHEDULER_INTERVAL": "soon"}, "SCHEDULER_INTERVAL", "500ms, 1s"),
    ({"SCHEDULER_INTERVAL": "1 s"}, "SCHEDULER_INTERVAL", "500ms, 1s"),
    ({"SCHEDULER_INTERVAL": "-1s"}, "SCHEDULER_INTERVAL", "500ms, 1s"),
    ({"SCHEDULER_INTERVAL": "99ms"}, "SCHEDULER_INTERVAL", "100ms to 1m"),
    ({"SCHEDULER_INTERVAL": "0"}, "SCHEDULER_INTERVAL", "100ms to 1m"),
    ({"SCHEDULER_INTERVAL": "1m1s"}, "SCHEDULER_INTERVAL", "100ms to 1m"),
    ({"SCHEDULER_INTERVAL": "nan"}, "SCHEDULER_INTERVAL", "500ms, 1s"),
    ({"SCHEDULER_INTERVAL": "inf"}, "SCHEDULER_INTERVAL", "500ms, 1s"),
    ({"ENABLE_SCHEDULER": "maybe"}, "ENABLE_SCHEDULER", "true or false"),
    ({"WORKER_MODE": "scheduler-only", "ENABLE_SCHEDULER": "false"}, "ENABLE_SCHEDULER", "scheduler-only"),
]


@pytest.mark.parametrize(("env", "variable", "allowed"), BAD_VALUES, ids=[str(e) for e, _, _ in BAD_VALUES])
def test_bad_values_name_the_variable_and_what_is_allowed(env: dict[str, str], variable: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_worker_config(env)
    assert variable in str(info.value)
    assert allowed in str(info.value)


def test_bad_override_names_the_option() -> None:
    with pytest.raises(ConfigError, match=r"^--concurrency="):
        load_worker_config({}, concurrency="lots")


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ConfigError, match="WORKER_CONCURRENCY"):
        WorkerConfig(concurrency=0)
    with pytest.raises(ConfigError, match="WORKER_PRIORITIES"):
        WorkerConfig(priorities=["high", "asap"])
    with pytest.raises(ConfigError, match="grace_period"):
        WorkerConfig(grace_period=-1)
    assert WorkerConfig(routing_keys="gpu,default", priorities="high").routing_keys == ("gpu", "default")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("500ms", 0.5), ("1m", 60.0), ("1m30s", 90.0), ("1.5s", 1.5), ("2", 2.0), ("0.25", 0.25),
     ("1h", 3600.0), ("250us", 0.00025), ("100ns", 1e-7), (".5s", 0.5)],
)  # fmt: skip
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@given(st.lists(st.tuples(st.integers(0, 999), st.sampled_from(["h", "m", "s", "ms"])), min_size=1, max_size=4))
def test_duration_parts_add_up(parts: list[tuple[int, str]]) -> None:
    unit = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    text = "".join(f"{n}{u}" for n, u in parts)
    assert parse_duration(text) == pytest.approx(sum(n * unit[u] for n, u in parts))


@given(st.text().filter(lambda t: t.strip() and not any(c.isdigit() for c in t)))
def test_text_without_digits_is_never_a_duration(text: str) -> None:
    with pytest.raises(ConfigError, match="SOME_VAR"):
        parse_duration(text, name="SOME_VAR")


def test_resolve_url_prefers_argument_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BANANAS_URL", "memory://from-env")
    assert resolve_url("memory://given") == "memory://given"
    assert resolve_url(None) == "memory://from-env"
    monkeypatch.delenv("BANANAS_URL")
    try:
        resolve(EMBEDDED_DEFAULT_URL)
        expected = EMBEDDED_DEFAULT_URL
    except Exception:
        expected = "memory://"
    assert resolve_url(None) == expected
    assert resolve_url("  ") == expected


@pytest.mark.anyio
async def test_open_backend_connects_to_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BANANAS_URL", "memory://open-backend-test")
    backend = await open_backend()
    try:
        assert backend.name == "memory"
        await backend.queue.ping()
    finally:
        await backend.close()


@pytest.mark.anyio
async def test_embedded_default_notice_only_when_the_command_line_creates_the_file(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    try:
        resolve(EMBEDDED_DEFAULT_URL)
    except UnknownBackendScheme:
        pytest.skip("no installed plugin serves sqlite:// (bananas-sql)")
    monkeypatch.delenv("BANANAS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO, logger="bananas.config")
    backend = await open_backend(announce=True)
    try:
        await backend.queue.enqueue(Job.create("hello"))
        assert (await backend.queue.depths()).total_ready == 1
    finally:
        await backend.close()
    assert (tmp_path / "bananas.db").exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "embedded default sqlite:///bananas.db" in err
    assert str(tmp_path / "bananas.db") in err
    backend = await open_backend(announce=True)  # the file exists now: no second notice
    await backend.close()
    assert capsys.readouterr().err == ""
    async with AsyncClient() as client:  # library calls never print; they log
        assert (await client.backend.queue.depths()).total_ready == 1
    assert capsys.readouterr().err == ""
    assert any("embedded default" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_a_library_client_never_prints_the_notice_even_when_it_creates_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        resolve(EMBEDDED_DEFAULT_URL)
    except UnknownBackendScheme:
        pytest.skip("no installed plugin serves sqlite:// (bananas-sql)")
    monkeypatch.delenv("BANANAS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    async with AsyncClient() as client:
        await client.submit_job("hello")
    assert (tmp_path / "bananas.db").exists()
    assert capsys.readouterr().err == ""


def test_redis_url_is_a_fallback_after_bananas_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BANANAS_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "memory://from-redis-url")
    assert resolve_url(None) == "memory://from-redis-url"
    monkeypatch.setenv("BANANAS_URL", "memory://ours")
    assert resolve_url(None) == "memory://ours"
    assert resolve_url("memory://given") == "memory://given"


def test_original_scheduler_variables_apply_when_ours_are_unset() -> None:
    config = load_worker_config({"CRON_SCHEDULER_ENABLED": "false", "CRON_SCHEDULER_INTERVAL": "500ms"})
    assert config.enable_scheduler is False and config.scheduler_interval == 0.5
    ours = load_worker_config(
        {"CRON_SCHEDULER_ENABLED": "false", "ENABLE_SCHEDULER": "true", "CRON_SCHEDULER_INTERVAL": "500ms",
         "SCHEDULER_INTERVAL": "2s"}
    )  # fmt: skip
    assert ours.enable_scheduler is True and ours.scheduler_interval == 2.0
    with pytest.raises(ConfigError, match=r"^CRON_SCHEDULER_INTERVAL=.*out of range: use 100ms to 1m"):
        load_worker_config({"CRON_SCHEDULER_INTERVAL": "5m"})
    with pytest.raises(ConfigError, match=r"CRON_SCHEDULER_ENABLED='maybe' is not a boolean"):
        load_worker_config({"CRON_SCHEDULER_ENABLED": "maybe"})


def test_job_timeout_variable_is_read_and_checked() -> None:
    assert load_worker_config({"JOB_TIMEOUT": "5m"}).job_timeout == 300.0
    assert load_worker_config({"JOB_TIMEOUT": "5m"}, job_timeout="10s").job_timeout == 10.0
    with pytest.raises(ConfigError, match="JOB_TIMEOUT='soon' is not a duration"):
        load_worker_config({"JOB_TIMEOUT": "soon"})


def test_option_errors_name_the_option_not_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^--concurrency 0 is out of range: use 1 to 1000"):
        load_worker_config({}, concurrency="0")
    with pytest.raises(ConfigError, match=r"^WORKER_CONCURRENCY=0 is out of range"):
        load_worker_config({"WORKER_CONCURRENCY": "0"})
    with pytest.raises(ConfigError, match=r"^--lease 0.1 is out of range"):
        load_worker_config({}, lease="0.1")


def test_max_retries_and_result_ttl_variables() -> None:
    assert config.default_max_retries({}) == 3
    assert config.default_max_retries({"MAX_RETRIES": "7"}) == 7
    for bad in ("many", "-1", "101"):
        with pytest.raises(ConfigError, match=r"MAX_RETRIES=.*whole number from 0 to 100"):
            config.default_max_retries({"MAX_RETRIES": bad})
    ttls = config.env_result_ttls({"RESULT_BACKEND_TTL_SUCCESS": "2h", "RESULT_BACKEND_TTL_FAILURE": "48h"})
    assert ttls == {"result_success_ttl": 7200.0, "result_failure_ttl": 172800.0}
    assert config.env_result_ttls({}) == {}
    with pytest.raises(ConfigError, match="RESULT_BACKEND_TTL_FAILURE='0s' is not allowed"):
        config.env_result_ttls({"RESULT_BACKEND_TTL_FAILURE": "0s"})


def test_log_settings_from_the_original_variables() -> None:
    assert config.log_settings({}) == ("INFO", "text")
    assert config.log_settings({"LOG_LEVEL": "debug", "LOG_FORMAT": "JSON"}) == ("DEBUG", "json")
    assert config.log_settings({"LOG_LEVEL": "debug", "BANANAS_LOG_LEVEL": "error"}) == ("ERROR", "text")
    assert config.log_settings({"LOG_LEVEL": "debug"}, level="warn") == ("WARNING", "text")
    with pytest.raises(ConfigError, match="LOG_LEVEL='loud' is not a log level: use one of DEBUG, INFO"):
        config.log_settings({"LOG_LEVEL": "loud"})
    with pytest.raises(ConfigError, match="LOG_FORMAT='xml' is not a log format: use text or json"):
        config.log_settings({"LOG_FORMAT": "xml"})


@pytest.mark.anyio
async def test_result_ttl_variables_reach_clients_that_set_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESULT_BACKEND_TTL_SUCCESS", "2h")
    async with AsyncClient("memory://ttl-env") as client:
        assert client.backend.options.result_success_ttl == 7200.0
        assert client.backend.options.result_failure_ttl == 86400.0
    async with AsyncClient("memory://ttl-env", result_success_ttl=5) as client:
        assert client.backend.options.result_success_ttl == 5

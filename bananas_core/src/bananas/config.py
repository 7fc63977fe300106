"""Worker configuration from the environment (the original's variables and mode defaults),
and which backend URL a client or worker uses when none is given.

Variables: ``WORKER_MODE``, ``WORKER_CONCURRENCY``, ``WORKER_PRIORITIES``,
``WORKER_ROUTING_KEYS``, ``WORKER_JOB_TYPES``, ``SCHEDULER_INTERVAL`` (a Go duration such as
``500ms``, ``1s``, ``1m`` or plain seconds), ``ENABLE_SCHEDULER`` and ``JOB_TIMEOUT``.
``BANANAS_URL`` (then the original's ``REDIS_URL``) names the backend.

The original's other variables are honoured where they mean the same thing, ours taking
precedence: ``CRON_SCHEDULER_ENABLED`` / ``CRON_SCHEDULER_INTERVAL`` (when
``ENABLE_SCHEDULER`` / ``SCHEDULER_INTERVAL`` are unset), ``MAX_RETRIES`` (the default
``max_retries`` of a submit), ``RESULT_BACKEND_TTL_SUCCESS`` / ``RESULT_BACKEND_TTL_FAILURE``
(result TTLs of clients and workers that do not set them), ``LOG_LEVEL`` and ``LOG_FORMAT``
(the worker's logging, after ``BANANAS_LOG_LEVEL``). Invalid values raise
:class:`ConfigError` naming the variable and what is allowed.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from bananas.backend import Backend
from bananas.errors import ConfigError, InvalidRoutingKey, UnknownBackendScheme
from bananas.job import ALL_PRIORITIES, JobPriority, validate_routing_key
from bananas.plugins import connect, resolve
from bananas.plugins.types import SchemaMigrator

__all__ = [
    "EMBEDDED_DEFAULT_URL",
    "FALLBACK_URL_ENV",
    "URL_ENV",
    "default_max_retries",
    "embedded_path",
    "env_result_ttls",
    "log_settings",
    "WorkerConfig",
    "WorkerMode",
    "load_worker_config",
    "open_backend",
    "parse_duration",
    "resolve_url",
]

EMBEDDED_DEFAULT_URL = "sqlite:///bananas.db"
URL_ENV = "BANANAS_URL"
FALLBACK_URL_ENV = "REDIS_URL"
"""The original Bananas' URL variable, used when ``BANANAS_URL`` is unset."""

log = logging.getLogger("bananas.config")

MIN_CONCURRENCY, MAX_CONCURRENCY = 1, 1000
MIN_SCHEDULER_INTERVAL, MAX_SCHEDULER_INTERVAL = 0.1, 60.0


class WorkerMode(enum.StrEnum):
    """How a worker process takes part in the fleet (the original's five modes)."""

    THIN = "thin"
    """Development and low traffic: concurrency 5, every priority, runs the scheduler."""
    DEFAULT = "default"
    """Standard production worker: concurrency 10, every priority, runs the scheduler."""
    SPECIALIZED = "specialized"
    """Dedicated to some priorities (``high`` unless told); no scheduler unless asked."""
    JOB_SPECIALIZED = "job-specialized"
    """Runs only the job names in ``WORKER_JOB_TYPES``; others are left for other workers."""
    SCHEDULER_ONLY = "scheduler-only"
    """Claims nothing: moves scheduled jobs, reaps expired leases and fires cron schedules."""


_ALLOWED_MODES = ", ".join(m.value for m in WorkerMode)
_ALLOWED_PRIORITIES = ", ".join(p.value for p in JobPriority)

# -- parsing ---------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, *, name: str = "duration") -> float:
    """Seconds in a Go duration (``1s``, ``500ms``, ``1m30s``) or a plain number of seconds.

    Raises :class:`ConfigError` naming ``name`` for anything else.
    """
    raw = text.strip()
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds):
            return seconds
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(raw):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if raw and pos == len(raw):
        return total
    raise ConfigError(
        f"{name}={text!r} is not a duration: use a Go duration such as 500ms, 1s, 1m30s "
        "(units ns, us, ms, s, m, h) or a number of seconds"
    )


_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


def _parse_bool(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={text!r} is not a boolean: use true or false (also 1/0, yes/no, on/off)")


def _parse_int(name: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ConfigError(
            f"{name}={text!r} is not a whole number: use {MIN_CONCURRENCY} to {MAX_CONCURRENCY}"
        ) from None


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",")]


def _parse_priorities(name: str, text: str) -> tuple[JobPriority, ...]:
    result: list[JobPriority] = []
    for part in _split(text):
        try:
            priority = JobPriority(part.lower())
        except ValueError:
            raise ConfigError(
                f"{name}={text!r}: {part!r} is not a priority; use a comma-separated list of {_ALLOWED_PRIORITIES}"
            ) from None
        if priority not in result:
            result.append(priority)
    return tuple(result)


def _parse_routing_keys(name: str, text: str) -> tuple[str, ...]:
    return _check_routing_keys(name, _split(text))


def _parse_job_types(name: str, text: str) -> tuple[str, ...]:
    return _check_job_types(name, _split(text))


def _parse_mode(name: str, text: str) -> WorkerMode:
    try:
        return WorkerMode(text.strip().lower())
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a worker mode: use one of {_ALLOWED_MODES}") from None


# -- validation (shared by the environment path and direct construction) ------------------


def _check_routing_keys(name: str, keys: Sequence[str]) -> tuple[str, ...]:
    if isinstance(keys, str) or not keys:
        raise ConfigError(f"{name} must list at least one routing key, for example 'default' or 'gpu,default'")
    result: list[str] = []
    for key in keys:
        try:
            validate_routing_key(key)
        except InvalidRoutingKey as exc:
            raise ConfigError(f"{name}: {exc}") from None
        if key not in result:
            result.append(key)
    return tuple(result)


def _check_job_types(name: str, names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, str):
        raise ConfigError(f"{name} must be a list of job names, not one string")
    result: list[str] = []
    for job_name in names:
        if not isinstance(job_name, str) or not job_name.strip():
            raise ConfigError(f"{name} contains an empty job name: use names such as send_email,resize")
        if job_name not in result:
            result.append(job_name.strip())
    return tuple(result)


def _to_priorities(value: str | Sequence[JobPriority | str]) -> tuple[JobPriority, ...]:
    if isinstance(value, str):
        return _parse_priorities("WORKER_PRIORITIES", value)
    if not value:
        return ()
    return _parse_priorities("WORKER_PRIORITIES", ",".join(str(p) for p in value))


def _to_names(value: str | Sequence[str]) -> tuple[str, ...]:
    return tuple(_split(value)) if isinstance(value, str) else tuple(value)


@attrs.frozen(kw_only=True)
class WorkerConfig:
    """What a worker claims and how. Construction validates; errors name the environment variable.

    ``scheduler_interval`` is in seconds; so are ``lease`` (how long a claim is held
    before it must be renewed), ``job_timeout`` and ``grace_period`` (how long a stopping
    worker waits for running jobs before handing them back).
    """

    mode: WorkerMode = attrs.field(default=WorkerMode.DEFAULT, converter=WorkerMode)
    concurrency: int = 10
    priorities: tuple[JobPriority, ...] = attrs.field(default=ALL_PRIORITIES, converter=_to_priorities)
    routing_keys: tuple[str, ...] = attrs.field(default=("default",), converter=_to_names)
    job_types: tuple[str, ...] = attrs.field(default=(), converter=_to_names)
    scheduler_interval: float = 1.0
    enable_scheduler: bool = True
    lease: float = 60.0
    job_timeout: float = 300.0
    grace_period: float = 30.0

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.concurrency, int) or isinstance(self.concurrency, bool):
            raise ConfigError(f"WORKER_CONCURRENCY must be a whole number, got {self.concurrency!r}")
        if self.mode is WorkerMode.SCHEDULER_ONLY:
            if self.concurrency != 0:
                raise ConfigError(
                    f"WORKER_CONCURRENCY={self.concurrency} is not allowed in scheduler-only mode: "
                    "it claims no jobs, so its concurrency is 0"
                )
            if not self.enable_scheduler:
                raise ConfigError("ENABLE_SCHEDULER=false contradicts WORKER_MODE=scheduler-only: use another mode")
        else:
            if not MIN_CONCURRENCY <= self.concurrency <= MAX_CONCURRENCY:
                raise ConfigError(
                    f"WORKER_CONCURRENCY={self.concurrency} is out of range: use {MIN_CONCURRENCY} to {MAX_CONCURRENCY}"
                )
            if not self.priorities:
                raise ConfigError(f"WORKER_PRIORITIES must list at least one priority: {_ALLOWED_PRIORITIES}")
        _check_routing_keys("WORKER_ROUTING_KEYS", self.routing_keys)
        _check_job_types("WORKER_JOB_TYPES", self.job_types)
        if self.mode is WorkerMode.JOB_SPECIALIZED and not self.job_types:
            raise ConfigError(
                "WORKER_JOB_TYPES is required in job-specialized mode: list the job names this worker runs, "
                "for example WORKER_JOB_TYPES=send_email,resize"
            )
        _check_seconds("SCHEDULER_INTERVAL", self.scheduler_interval, MIN_SCHEDULER_INTERVAL, MAX_SCHEDULER_INTERVAL)
        _check_seconds("lease", self.lease, 0.5, 86400.0)
        _check_seconds("JOB_TIMEOUT", self.job_timeout, 0.001, 7 * 86400.0)
        _check_seconds("grace_period", self.grace_period, 0.0, 86400.0)

    @property
    def claims_jobs(self) -> bool:
        """False only for scheduler-only workers."""
        return self.mode is not WorkerMode.SCHEDULER_ONLY


def _check_seconds(name: str, value: float, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ConfigError(f"{name}={value!r} is out of range: use {_fmt_seconds(low)} to {_fmt_seconds(high)}")


def _fmt_seconds(seconds: float) -> str:
    if seconds and seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds >= 60 and seconds % 60 == 0 and seconds < 3600:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


# -- loading ---------------------------------------------------------------------------

_ENV: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "mode": ("WORKER_MODE", _parse_mode),
    "concurrency": ("WORKER_CONCURRENCY", _parse_int),
    "priorities": ("WORKER_PRIORITIES", _parse_priorities),
    "routing_keys": ("WORKER_ROUTING_KEYS", _parse_routing_keys),
    "job_types": ("WORKER_JOB_TYPES", _parse_job_types),
    "scheduler_interval": ("SCHEDULER_INTERVAL", lambda name, text: parse_duration(text, name=name)),
    "enable_scheduler": ("ENABLE_SCHEDULER", _parse_bool),
    "job_timeout": ("JOB_TIMEOUT", lambda name, text: parse_duration(text, name=name)),
}
_SECONDS_FIELDS = ("lease", "grace_period")
_FALLBACKS = {"scheduler_interval": "CRON_SCHEDULER_INTERVAL", "enable_scheduler": "CRON_SCHEDULER_ENABLED"}
"""The original's names, read when ours are unset."""


def load_worker_config(env: Mapping[str, str] | None = None, **overrides: Any) -> WorkerConfig:
    """A validated :class:`WorkerConfig` from ``env`` (default :data:`os.environ`) and ``overrides``.

    Overrides (field names of :class:`WorkerConfig`; ``None`` means "not given") win over
    the environment; a string override is parsed like its variable. Mode defaults fill in
    what neither gives: thin runs 5 jobs at once, specialized takes ``high`` only, and
    specialized and job-specialized run no scheduler unless asked. Raises
    :class:`ConfigError` naming the variable and the allowed values.
    """
    source = os.environ if env is None else env
    fields = {f.name for f in attrs.fields(WorkerConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"unknown worker setting(s): {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    given: dict[str, Any] = {}
    renames: dict[str, str] = {}  # the name WorkerConfig's messages use -> what the user set
    for field, (var, parse) in _ENV.items():
        raw = source.get(var)
        if (raw is None or not raw.strip()) and field in _FALLBACKS and source.get(_FALLBACKS[field], "").strip():
            renames[var] = _FALLBACKS[field]
            var = _FALLBACKS[field]
            raw = source.get(var)
        if raw is not None and raw.strip():
            given[field] = parse(var, raw)
    for field, value in overrides.items():
        if value is None:
            continue
        option = f"--{field.replace('_', '-')}"
        renames[_ENV[field][0] if field in _ENV else field] = option
        if isinstance(value, str) and field in _ENV:
            value = _ENV[field][1](option, value)
        elif isinstance(value, str) and field in _SECONDS_FIELDS:
            value = parse_duration(value, name=option)
        given[field] = value
    try:
        return WorkerConfig(**_with_mode_defaults(given))
    except ConfigError as exc:
        raise ConfigError(_renamed(str(exc), renames)) from None


def _renamed(message: str, renames: Mapping[str, str]) -> str:
    """``message`` naming what the user set (``--concurrency 0``, ``CRON_SCHEDULER_INTERVAL=...``)
    instead of the variable it stands for."""
    for name, actual in renames.items():
        if re.match(rf"{re.escape(name)}\b", message) or f" {name}" in message:
            if actual.startswith("--"):
                message = re.sub(rf"\b{re.escape(name)}=", f"{actual} ", message)
            message = re.sub(rf"(?<![\w-]){re.escape(name)}\b", actual, message)
    return message


def _with_mode_defaults(given: dict[str, Any]) -> dict[str, Any]:
    settings = dict(given)
    mode = WorkerMode(settings.setdefault("mode", WorkerMode.DEFAULT))
    if mode is WorkerMode.THIN:
        settings.setdefault("concurrency", 5)
    elif mode is WorkerMode.SPECIALIZED:
        settings.setdefault("priorities", (JobPriority.HIGH,))
        settings.setdefault("enable_scheduler", False)
    elif mode is WorkerMode.JOB_SPECIALIZED:
        settings.setdefault("enable_scheduler", False)
    elif mode is WorkerMode.SCHEDULER_ONLY:
        settings.setdefault("concurrency", 0)
        settings.setdefault("priorities", ())
        settings.setdefault("enable_scheduler", True)
    return settings


# -- the original's other variables --------------------------------------------------

MAX_RETRIES_ENV = "MAX_RETRIES"
TTL_ENVS = {"result_success_ttl": "RESULT_BACKEND_TTL_SUCCESS", "result_failure_ttl": "RESULT_BACKEND_TTL_FAILURE"}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")


def default_max_retries(env: Mapping[str, str] | None = None) -> int:
    """``$MAX_RETRIES`` (0-100), else 3: the ``max_retries`` of a submit that gives none."""
    from bananas.job import DEFAULT_MAX_RETRIES

    raw = (os.environ if env is None else env).get(MAX_RETRIES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_RETRIES
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= 100:
        raise ConfigError(f"{MAX_RETRIES_ENV}={raw!r} is not allowed: use a whole number from 0 to 100")
    return value


def env_result_ttls(env: Mapping[str, str] | None = None) -> dict[str, float]:
    """Result TTLs from ``$RESULT_BACKEND_TTL_SUCCESS`` / ``_FAILURE`` (Go durations such as
    ``1h`` or seconds, > 0), keyed by their :class:`~bananas.BackendOptions` field; unset ones are absent."""
    source = os.environ if env is None else env
    out: dict[str, float] = {}
    for field, var in TTL_ENVS.items():
        raw = source.get(var, "").strip()
        if raw:
            seconds = parse_duration(raw, name=var)
            if not seconds > 0:
                raise ConfigError(f"{var}={raw!r} is not allowed: use a duration greater than 0, such as 1h or 24h")
            out[field] = seconds
    return out


def log_settings(env: Mapping[str, str] | None = None, *, level: str | None = None) -> tuple[str, str]:
    """The worker's log level and format: ``level`` (``--log-level``), else
    ``$BANANAS_LOG_LEVEL``, else the original's ``$LOG_LEVEL``, else ``INFO``; the format from
    ``$LOG_FORMAT`` (``text`` or ``json``, default text). ``ConfigError`` names a bad value."""
    source = os.environ if env is None else env
    name, raw = "--log-level", level
    for var in ("BANANAS_LOG_LEVEL", "LOG_LEVEL"):
        if raw is None or not raw.strip():
            name, raw = var, source.get(var)
    text = (raw or "INFO").strip().upper()
    text = "WARNING" if text == "WARN" else text
    if text not in LOG_LEVELS:
        raise ConfigError(f"{name}={raw!r} is not a log level: use one of {', '.join(LOG_LEVELS)}")
    fmt_raw = source.get("LOG_FORMAT", "").strip()
    fmt = fmt_raw.lower() or "text"
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT={fmt_raw!r} is not a log format: use text or json")
    return text, fmt


# -- which backend ---------------------------------------------------------------------


def _url_from_env() -> str:
    return os.environ.get(URL_ENV, "").strip() or os.environ.get(FALLBACK_URL_ENV, "").strip()


def resolve_url(url: str | None = None) -> str:
    """The backend URL to use: ``url``, else ``$BANANAS_URL``, else the original's
    ``$REDIS_URL``, else the embedded default (``sqlite:///bananas.db``) when a plugin serves
    ``sqlite://``, else ``memory://``."""
    if url and url.strip():
        return url.strip()
    from_env = _url_from_env()
    if from_env:
        return from_env
    try:
        resolve(EMBEDDED_DEFAULT_URL)
    except UnknownBackendScheme:
        return "memory://"
    return EMBEDDED_DEFAULT_URL


def uses_embedded_default(url: str | None) -> bool:
    """True when no URL is given anywhere and the embedded default is what :func:`resolve_url` picks."""
    return not (url and url.strip()) and not _url_from_env() and resolve_url(None) == EMBEDDED_DEFAULT_URL


def embedded_path() -> str:
    """The absolute path of the embedded default's database file in the current directory."""
    return os.path.abspath(EMBEDDED_DEFAULT_URL.removeprefix("sqlite:///"))


def connect_resolved(
    url: str | None = None, *, announce: bool = False, **options: Any
) -> tuple[Backend, SchemaMigrator | None]:
    """Connect to :func:`resolve_url` (``url``) without I/O; also return the schema migrator
    to run first, which is given only when falling back to the embedded default.

    Result TTLs not given come from the original's ``RESULT_BACKEND_TTL_*`` variables. The
    embedded default is reported as a log record (``bananas.config``, INFO); with
    ``announce`` (the command line) also as one line on stderr, only when its database
    file does not exist yet, so a terminal sees the notice once per directory.
    """
    resolved = resolve_url(url)
    for field, seconds in env_result_ttls().items():
        if options.get(field) is None:
            options[field] = seconds
    backend = connect(resolved, **options)
    if not uses_embedded_default(url):
        return backend, None
    path = embedded_path()
    log.info("using the embedded default %s (%s)", EMBEDDED_DEFAULT_URL, path)
    if announce and not os.path.exists(path):
        print(
            f"bananas: using the embedded default {EMBEDDED_DEFAULT_URL}, creating {path} "
            f"(pass --url or set {URL_ENV} for another backend)",
            file=sys.stderr,
        )
    return backend, resolve(resolved).migrate


async def open_backend(url: str | None = None, *, announce: bool = False, **options: Any) -> Backend:
    """Connect to :func:`resolve_url` (``url``); for the embedded default, create its schema first.

    Keyword arguments go to :func:`bananas.connect`; ``announce`` as for :func:`connect_resolved`.
    """
    backend, migrate = connect_resolved(url, announce=announce, **options)
    if migrate is not None:
        await migrate(EMBEDDED_DEFAULT_URL, backend.options)
    return backend

"""``bananas worker APP``: run a worker process for a :class:`Registry` named ``module:attribute``.

Options mirror the environment variables (an option wins over its variable). User mistakes
(bad APP, bad option value, unknown URL scheme) print one line on stderr naming the option or
variable and exit with 2; an unreachable backend exits with 1; a worker stopped by
SIGINT/SIGTERM exits with 0. ``--json`` (or ``LOG_FORMAT=json``) logs one JSON object a line.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import logging
import os
import sys
import time
from typing import Any

from bananas.errors import BananasError, ConfigError, InvalidJob, PluginError, UnknownBackendScheme
from bananas.logsafe import printable
from bananas.tracing import log_fields
from bananas.worker.loop import loop_factory
from bananas.worker.registry import Registry

__all__ = ["AppError", "JsonFormatter", "add_worker_arguments", "import_app", "load_registry", "main", "run_worker"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class AppError(ConfigError):
    """APP does not name an importable :class:`Registry`."""


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """Add APP and the worker options to ``parser`` (used by ``bananas worker`` and ``python -m bananas.worker``)."""
    parser.add_argument("app", metavar="APP", help="module:attribute naming a bananas.worker.Registry")
    if not any("--url" in action.option_strings for action in parser._actions):
        parser.add_argument(
            "--url",
            default=None,
            help="backend URL (default: $BANANAS_URL, then $REDIS_URL, then the embedded default)",
        )
    if not any("--json" in action.option_strings for action in parser._actions):
        parser.add_argument("--json", action="store_true", help="log one JSON object a line (same as LOG_FORMAT=json)")
    parser.add_argument("--mode", help="thin, default, specialized, job-specialized or scheduler-only ($WORKER_MODE)")
    parser.add_argument("--concurrency", help="jobs run at once, 1-1000 ($WORKER_CONCURRENCY)")
    parser.add_argument("--priorities", help="comma-separated: high,normal,low ($WORKER_PRIORITIES)")
    parser.add_argument("--routing-keys", help="comma-separated, in preference order ($WORKER_ROUTING_KEYS)")
    parser.add_argument("--job-types", help="job names for job-specialized mode ($WORKER_JOB_TYPES)")
    parser.add_argument(
        "--scheduler-interval", help="e.g. 500ms, 1s, 1m ($SCHEDULER_INTERVAL, else $CRON_SCHEDULER_INTERVAL)"
    )
    scheduler = parser.add_mutually_exclusive_group()
    scheduler.add_argument(
        "--enable-scheduler",
        dest="enable_scheduler",
        action="store_const",
        const="true",
        help="move due scheduled and retrying jobs, reap expired leases and fire cron schedules "
        "($ENABLE_SCHEDULER, else $CRON_SCHEDULER_ENABLED; default: on in modes thin, default, scheduler-only)",
    )
    scheduler.add_argument(
        "--no-scheduler",
        dest="enable_scheduler",
        action="store_const",
        const="false",
        help="run no scheduler in this worker (another worker must run one, or scheduled jobs never become ready)",
    )
    parser.add_argument(
        "--prefetch",
        help="claimed jobs held waiting for a free slot, 0-1000 (default: the concurrency; $WORKER_PREFETCH)",
    )
    parser.add_argument(
        "--job-timeout", help="seconds (or a duration) one attempt may run (default: $JOB_TIMEOUT, else 300)"
    )
    parser.add_argument("--grace-period", help="seconds to wait for running jobs when stopping (default 30)")
    parser.add_argument("--lease", help="seconds a claim is held between renewals (default 60)")
    parser.add_argument(
        "--metrics-port",
        help="serve /metrics, /healthz and /readyz on this port (needs the prometheus extra; $BANANAS_METRICS_PORT)",
    )
    parser.add_argument(
        "--metrics-host", help="address the metrics port listens on (default 127.0.0.1; $BANANAS_METRICS_HOST)"
    )
    parser.add_argument(
        "--metrics-interval",
        help="seconds (or a duration) between 'System metrics' log lines, 0: none (default 30s; "
        "$BANANAS_METRICS_INTERVAL)",
    )
    parser.add_argument(
        "--log-level",
        default=None,
        help="DEBUG, INFO, WARNING, ERROR (default: $BANANAS_LOG_LEVEL, else $LOG_LEVEL, else INFO)",
    )
    parser.add_argument(
        "--processes",
        help="worker processes run under one supervisor, 1-256 (default 1: this process is the worker; "
        "$WORKER_PROCESSES)",
    )
    parser.add_argument(
        "--max-jobs-per-child",
        help="a worker process claims at most this many jobs, finishes them and is replaced (1-1000000000)",
    )
    parser.add_argument(
        "--max-memory-per-child",
        help="MB of resident memory above which a worker process is replaced after its running jobs (16-1048576)",
    )
    parser.add_argument(
        "--loop",
        help="event loop: asyncio, uvloop (needs the uvloop extra) or auto, uvloop if installed "
        "(default asyncio; $BANANAS_LOOP)",
    )
    parser.add_argument(
        "--reload",
        action="store_true",
        help="restart the worker processes when a Python file of APP changes (development; needs watchfiles)",
    )


def import_app(spec: str) -> Any:
    """Import ``module:attribute`` (the current directory is importable) and return the attribute:
    the one loader of every command that takes an APP. Raises :class:`AppError` with a one-line
    explanation."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise AppError(f"APP must look like module:attribute (for example myapp.tasks:registry), got {spec!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppError(f"cannot import {module_name!r} for APP {spec!r}: {exc}") from None
    except Exception as exc:  # the user's module failed while importing
        raise AppError(f"importing {module_name!r} for APP {spec!r} failed: {type(exc).__name__}: {exc}") from None
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppError(f"module {module_name!r} has no attribute {attribute!r} (APP {spec!r})") from None
    return target


def load_registry(spec: str) -> Registry:
    """The :class:`Registry` that ``module:attribute`` names, or that a factory it names (called
    with no arguments) returns. Raises :class:`AppError` with a one-line explanation."""
    target = import_app(spec)
    if callable(target) and not isinstance(target, Registry):
        if not _takes_no_arguments(target):
            raise AppError(
                f"APP {spec!r} is a function that takes arguments (a handler?), not a bananas.worker.Registry: "
                "name the Registry the handlers are registered in, for example myapp.tasks:registry"
            )
        target = target()  # a factory returning the registry
    if not isinstance(target, Registry):
        raise AppError(f"APP {spec!r} is a {type(target).__name__}, not a bananas.worker.Registry")
    return target


def _takes_no_arguments(func: Any) -> bool:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # a builtin without a signature: let the call say
        return True
    required = (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )
    return not any(p.default is inspect.Parameter.empty and p.kind in required for p in signature.parameters.values())


def run_worker(args: argparse.Namespace) -> int:
    """Run the worker described by parsed ``args`` until SIGINT/SIGTERM; return the exit code."""
    from bananas.config import load_worker_config, log_settings
    from bananas.worker.supervisor import max_jobs_per_child, plan_supervision, run_supervisor

    try:
        level, fmt = log_settings(level=getattr(args, "log_level", None))
        _setup_logging(level, "json" if getattr(args, "json", False) else fmt)
        plan = plan_supervision(args)  # a supervisor never imports APP itself
        registry = load_registry(args.app) if plan is None else None
        config = load_worker_config(
            mode=args.mode,
            concurrency=args.concurrency,
            priorities=args.priorities,
            routing_keys=args.routing_keys,
            job_types=args.job_types,
            scheduler_interval=args.scheduler_interval,
            enable_scheduler=args.enable_scheduler,
            job_timeout=args.job_timeout,
            grace_period=args.grace_period,
            lease=args.lease,
        )
        prefetch = _prefetch(getattr(args, "prefetch", None), config.concurrency)
        metrics = _metrics_options(args)
        new_loop = loop_factory(getattr(args, "loop", None))
        if plan is not None:
            return run_supervisor(args, plan, config.grace_period)
        assert registry is not None
        with asyncio.Runner(loop_factory=new_loop) as runner:
            return runner.run(
                _serve(registry, config, args.url, prefetch, max_jobs=max_jobs_per_child(args), metrics=metrics)
            )
    except KeyboardInterrupt:
        return EXIT_OK
    except (ConfigError, InvalidJob, UnknownBackendScheme, PluginError) as exc:
        _say(str(exc))
        return EXIT_USAGE
    except BananasError as exc:
        _say(str(exc))
        return EXIT_FAILURE
    except OSError as exc:
        _say(f"{type(exc).__name__}: {exc}")
        return EXIT_FAILURE


def _prefetch(value: str | None, concurrency: int) -> int:
    """The --prefetch option (or $WORKER_PREFETCH); defaults to the concurrency."""
    raw = value if value is not None else os.environ.get("WORKER_PREFETCH")
    if raw is None or not str(raw).strip():
        return max(concurrency, 0)
    try:
        prefetch = int(str(raw).strip())
    except ValueError:
        prefetch = -1
    if not 0 <= prefetch <= 1000:
        name = "--prefetch" if value is not None else "WORKER_PREFETCH"
        raise ConfigError(f"{name} {raw!r} is not allowed: use a whole number of jobs from 0 to 1000")
    return prefetch


async def _serve(
    registry: Registry,
    config: Any,
    url: str | None,
    prefetch: int = 0,
    *,
    max_jobs: int | None = None,
    metrics: Any = None,
) -> int:
    from bananas.config import open_backend
    from bananas.metrics.worker import MetricsOptions, worker_metrics
    from bananas.tracing import configure_from_environment
    from bananas.worker.executor import Executor
    from bananas.worker.pool import Pool
    from bananas.worker.supervisor import run_supervised

    configure_from_environment()  # OTEL_TRACES_EXPORTER & co; an application's own tracer provider is kept
    backend = await open_backend(url, announce=True)
    try:
        await backend.queue.ping()
        executor = Executor(
            registry,
            backend.queue,
            max(config.concurrency, 1),
            clock=backend.clock,
            job_timeout=config.job_timeout,
            lease=config.lease,
        )
        executor.set_result_backend(backend.results)
        logging.getLogger("bananas.worker").info(
            "serving %d handler(s) from %s on %s", len(registry), registry, backend.url
        )
        pool = Pool(executor, backend, config, prefetch=prefetch if config.claims_jobs else 0, max_jobs=max_jobs)
        async with worker_metrics(metrics or MetricsOptions(), backend, executor, lambda: pool.running):
            await run_supervised(pool)  # pool.run(), stopping if a supervising process disappears
    finally:
        await backend.close()
    return EXIT_OK


def _metrics_options(args: argparse.Namespace) -> Any:
    from bananas.metrics.worker import metrics_options

    return metrics_options(
        getattr(args, "metrics_port", None),
        getattr(args, "metrics_host", None),
        getattr(args, "metrics_interval", None),
    )


def _say(message: str) -> None:
    """One line on stderr: whitespace collapsed, control characters escaped."""
    print(f"bananas worker: {printable(' '.join(message.split()), 2000)}", file=sys.stderr)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (RFC 3339 UTC), ``level``, ``logger``, ``message``,
    ``exception`` when there is one, and on job lines ``job_id``, ``job_name``, ``attempt``,
    ``routing_key``, ``priority`` and ``worker_id``; ``trace_id`` and ``span_id`` (hex) when the
    line is logged in a span or about a traced attempt."""

    def format(self, record: logging.LogRecord) -> str:
        from bananas.timefmt import format_time, from_timestamp

        out: dict[str, Any] = {
            "time": format_time(from_timestamp(record.created)),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        fields = record.__dict__
        for key in _RECORD_FIELDS:  # a job's fields on job lines, the snapshot on "System metrics" lines
            if key in fields:
                out[key] = fields[key]
        out.update(log_fields(getattr(record, "job_id", None)))  # trace_id / span_id, once tracing is loaded
        return json.dumps(out, ensure_ascii=False, default=str)


_RECORD_FIELDS = ("job_id", "job_name", "attempt", "routing_key", "priority", "worker_id", "metrics")
"""``LogRecord`` attributes the JSON format shows when a line carries them (``extra=``)."""


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message``, the worker's text lines; the time of day is formatted
    once a second, not once a line (a busy worker writes thousands of job lines a second)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """The local time of ``record`` to the millisecond, as :class:`logging.Formatter` writes it."""
        second, text = self._second
        if int(record.created) != second:
            text = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = (int(record.created), text)
        return f"{text},{int(record.msecs):03d}"  # logging.Formatter.default_msec_format


def _setup_logging(level: str, fmt: str = "text") -> None:
    if logging.getLogger().handlers:
        return  # the application configured logging itself: keep it as it is
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    # Neither format shows threads or processes: skip looking them up for every record.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.basicConfig(level=getattr(logging, level, logging.INFO), handlers=[handler])


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        _say(f"{message} (see '{self.prog} --help')")
        raise SystemExit(EXIT_USAGE)


def main(argv: list[str] | None = None) -> int:
    """``python -m bananas.worker APP [options]``."""
    parser = _Parser(prog="python -m bananas.worker", description="Run a Bananas worker for APP.")
    add_worker_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return run_worker(args)

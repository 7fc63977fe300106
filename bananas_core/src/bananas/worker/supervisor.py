"""``bananas worker APP --processes N``: one command, N worker processes, kept running.

The supervisor starts N children, each the single-process worker of ``bananas worker``
with its own backend connections, and:

- restarts a child that dies, with exponential backoff (0.5 s, doubling, at most 30 s),
  logging one line that says how it died (exit code or signal);
- gives up when a child keeps crashing at start: a child that exits with an error or is
  killed within :data:`START_WINDOW` seconds of starting crashed at start, and
  :data:`CRASH_LIMIT` such crashes of the same child slot in a row stop every child and
  exit 1 with one line on stderr (exit 2 at once if the child said the configuration or
  APP is wrong: starting it again cannot help); with ``--reload`` it waits for the next
  source change instead;
- forwards the first SIGTERM/SIGINT as SIGTERM to every child (each stops claiming, lets
  its running jobs finish within the grace period and hands the rest back); a second
  signal forwards a second SIGTERM, so the children hand their jobs back at once, and
  kills with SIGKILL whatever still runs :data:`KILL_AFTER` seconds later;
- recycles children: ``--max-jobs-per-child`` is counted by the child itself (it claims
  no more than K jobs, finishes them and exits 0); ``--max-memory-per-child`` is checked
  here, on the child's resident set size, every second (Linux); ``--reload`` restarts
  every child when a Python file of the application changes (needs ``watchfiles``). A
  recycled child is stopped as by SIGTERM (nothing is lost) and its replacement starts
  once it has exited, so two processes never share a slot's metrics port.

Children are fresh interpreters (``python -m bananas.worker``), not forks of the
supervisor: nothing the parent holds (sockets, a file watcher's threads, locks, the
application's module state) can leak into a child, each child imports the application
itself (so a reload runs the new code), and it works the same on every platform. The cost,
the start-up of an interpreter per child, is paid once per child. The supervisor itself
never imports the application nor opens the backend. Children run in their own process
group, so a Ctrl-C on a terminal reaches them once, through the supervisor; a child whose
supervisor disappears (killed with SIGKILL) stops gracefully on its own.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import attrs

from bananas.errors import ConfigError

__all__ = [
    "CRASH_LIMIT",
    "START_WINDOW",
    "SUPERVISOR_PID_ENV",
    "Plan",
    "Supervisor",
    "max_jobs_per_child",
    "plan_supervision",
    "run_supervised",
]

log = logging.getLogger("bananas.worker.supervisor")

PROCESSES_ENV = "WORKER_PROCESSES"
METRICS_PORT_ENV = "BANANAS_METRICS_PORT"
SUPERVISOR_PID_ENV = "BANANAS_SUPERVISOR_PID"
"""Set in every child: it marks the process as supervised (it never supervises in turn) and
names the supervisor whose disappearance stops the child."""

MAX_PROCESSES = 256
MAX_JOBS_PER_CHILD = 1_000_000_000
MEMORY_RANGE_MB = (16, 1_048_576)
START_WINDOW = 10.0
"""Seconds after its start during which a child's crash counts as a crash at start."""
CRASH_LIMIT = 5
"""Crashes at start in a row, of one child slot, after which the supervisor gives up."""
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
KILL_AFTER = 10.0
"""Seconds beyond the grace period (after a second signal: beyond that signal) before SIGKILL."""
MEMORY_CHECK_INTERVAL = 1.0
TICK = 0.1

# Options of the supervisor that a child must not get (the metrics port is handed over per child).
_SUPERVISOR_ONLY = frozenset({"processes", "reload", "max_memory_per_child", "metrics_port", "help"})


@attrs.frozen
class Plan:
    """What the supervisor was asked to do, validated."""

    app: str
    processes: int
    grace_period: float = 30.0
    max_jobs_per_child: int | None = None
    max_memory_mb: int | None = None
    reload: bool = False
    metrics_base: int | None = None


def _whole(name: str, raw: Any, low: int, high: int, what: str) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(f"{name} {str(raw)!r} is not allowed: use a whole number of {what} from {low} to {high}")
    return value


def max_jobs_per_child(args: argparse.Namespace) -> int | None:
    """The validated ``--max-jobs-per-child`` (None when not given)."""
    raw = getattr(args, "max_jobs_per_child", None)
    if raw is None:
        return None
    return _whole("--max-jobs-per-child", raw, 1, MAX_JOBS_PER_CHILD, "jobs")


def plan_supervision(args: argparse.Namespace) -> Plan | None:
    """The :class:`Plan` for ``args``, or None when the worker runs as one plain process
    (``--processes 1`` without recycling or reload, or this process is a supervised child).
    Raises :class:`ConfigError` naming the option and the allowed values."""
    if os.environ.get(SUPERVISOR_PID_ENV):
        return None
    raw = getattr(args, "processes", None)
    name = "--processes"
    if raw is None and os.environ.get(PROCESSES_ENV, "").strip():
        raw, name = os.environ[PROCESSES_ENV], PROCESSES_ENV
    processes = 1 if raw is None else _whole(name, raw, 1, MAX_PROCESSES, "worker processes")
    max_jobs = max_jobs_per_child(args)
    raw_memory = getattr(args, "max_memory_per_child", None)
    memory = (
        None
        if raw_memory is None
        else _whole("--max-memory-per-child", raw_memory, *MEMORY_RANGE_MB, "megabytes of resident memory")
    )
    reload = bool(getattr(args, "reload", False))
    if processes == 1 and max_jobs is None and memory is None and not reload:
        return None
    if memory is not None and not Path("/proc/self/status").exists():
        raise ConfigError("--max-memory-per-child reads /proc (Linux): it is not available on this system")
    if reload:
        try:
            import watchfiles  # noqa: F401
        except ImportError:
            raise ConfigError("--reload needs watchfiles: pip install 'bananas-core[reload]'") from None
    from bananas.config import resolve_url

    if resolve_url(getattr(args, "url", None)).split("://", 1)[0].lower() == "memory":
        raise ConfigError(
            "memory:// lives inside one process: worker processes cannot share it; "
            "use redis://, postgresql:// or sqlite:///file.db"
        )
    return Plan(
        app=args.app,
        processes=processes,
        max_jobs_per_child=max_jobs,
        max_memory_mb=memory,
        reload=reload,
        metrics_base=_metrics_base(args, processes),
    )


def _metrics_base(args: argparse.Namespace, processes: int) -> int | None:
    """The first metrics port (``--metrics-port``, else ``$BANANAS_METRICS_PORT``); child i gets base + i."""
    raw, name = getattr(args, "metrics_port", None), "--metrics-port"
    if raw is None:
        raw, name = os.environ.get(METRICS_PORT_ENV, "").strip() or None, METRICS_PORT_ENV
    if raw is None:
        return None
    base = _whole(name, raw, 0, 65535, "a TCP port")
    if base and base + processes - 1 > 65535:
        raise ConfigError(
            f"{name} {base} with {processes} processes needs ports up to {base + processes - 1}: "
            f"use a port from 1 to {65536 - processes} (child i listens on the port + i)"
        )
    return base


def child_argv(args: argparse.Namespace) -> list[str]:
    """The options of ``python -m bananas.worker`` that reproduce ``args`` for one child
    (every worker option given, none of the supervisor's)."""
    from bananas.worker.command import _Parser, add_worker_arguments

    parser = _Parser(prog="python -m bananas.worker")
    add_worker_arguments(parser)
    argv: list[str] = []
    for action in parser._actions:
        if action.dest in _SUPERVISOR_ONLY or not action.option_strings:
            continue
        value = getattr(args, action.dest, None)
        if value is None or value is False or value == action.default:
            continue
        option = action.option_strings[-1] if action.option_strings[-1].startswith("--") else action.option_strings[0]
        if action.nargs == 0:  # store_true / store_const: the action whose constant was chosen
            if value == action.const:
                argv.append(option)
        elif isinstance(value, list):
            argv.extend([option, *(str(item) for item in value)])
        else:
            argv.append(f"{option}={value}")
    return [args.app, *argv]


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _rss_mb(pid: int) -> float | None:
    """The resident set size of ``pid`` in MB, from /proc (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@attrs.define
class _Child:
    slot: int
    proc: subprocess.Popen[bytes]
    started: float
    signals: int = 0
    recycling: str = ""  # why the supervisor stopped it to replace it
    over_memory: bool = False  # replaced for its memory: right after its start, that is a failure to start


class Supervisor:
    """Runs the worker processes of ``plan`` until a signal stops them (see the module docs)."""

    def __init__(self, plan: Plan, worker_argv: list[str]) -> None:
        self.plan = plan
        self.worker_argv = worker_argv
        self.children: dict[int, _Child] = {}
        self._due: dict[int, float] = {}  # slot -> when to start its next child
        self._crashes: dict[int, int] = dict.fromkeys(range(plan.processes), 0)
        self._paused: set[int] = set()  # reload mode: slots waiting for a source change
        self._signals = 0
        self._pending: list[str] = []  # names of signals not handled yet
        self._stopping = False
        self._kill_at: float | None = None
        self._failure: tuple[int, str] | None = None
        self._last_memory_check = 0.0

    # -- lifecycle -----------------------------------------------------------------------

    def run(self) -> int:
        """Start the children and supervise them; return the exit code (0 after a signal)."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        watcher = self._watch_sources() if self.plan.reload else None
        log.info(
            "supervising %d worker process(es) of %s%s",
            self.plan.processes,
            self.plan.app,
            " (reloading on source changes)" if watcher is not None else "",
        )
        try:
            for slot in range(self.plan.processes):
                self._start(slot)
            while self.children or (not self._stopping and self._failure is None):
                self._handle_signals()
                self._reap()
                if self._stopping:
                    self._kill_late()
                else:
                    self._check_memory()
                    self._start_due()
                if watcher is not None and not self._stopping:
                    changes = next(watcher)
                    if changes:
                        self._reload(changes)
                else:
                    time.sleep(TICK)
        finally:
            for child in self.children.values():  # only on an unexpected error in the supervisor
                with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                    child.proc.kill()
                    child.proc.wait(5)
            if watcher is not None:
                watcher.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self._failure is not None:
            code, line = self._failure
            from bananas.worker.command import _say

            _say(line)
            return code
        log.info("all worker processes stopped")
        return 0

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._pending.append(signal.Signals(signum).name)

    def _handle_signals(self) -> None:
        while self._pending:
            name = self._pending.pop(0)
            self._signals += 1
            if self._signals == 1:
                log.info(
                    "%s received: stopping %d worker process(es); waiting up to %gs for running jobs",
                    name,
                    len(self.children),
                    self.plan.grace_period,
                )
                self._stop_all(self.plan.grace_period + KILL_AFTER)
            else:
                log.warning("%s received again: stopping the worker processes now, handing running jobs back", name)
                self._stop_all(KILL_AFTER, force=True)

    def _stop_all(self, within: float, *, force: bool = False) -> None:
        """SIGTERM every child once (``force``: twice, which makes it hand its jobs back at
        once); SIGKILL those still running ``within`` seconds from now."""
        self._stopping = True
        self._due.clear()
        for child in self.children.values():
            while child.signals < (2 if force else 1):
                self._signal(child, signal.SIGTERM)
        self._kill_at = time.monotonic() + within

    def _kill_late(self) -> None:
        if self._kill_at is None or time.monotonic() < self._kill_at:
            return
        for child in self.children.values():
            if child.proc.poll() is None:
                log.error("worker process %d (pid %d) did not stop in time: killing it", child.slot, child.proc.pid)
                with contextlib.suppress(OSError):
                    child.proc.kill()
        self._kill_at = None

    def _fail(self, code: int, line: str) -> None:
        if self._failure is None:
            self._failure = (code, line)
            log.error("%s", line)
            self._stop_all(self.plan.grace_period + KILL_AFTER)

    # -- children ------------------------------------------------------------------------

    def _start(self, slot: int) -> None:
        env = {**os.environ, SUPERVISOR_PID_ENV: str(os.getpid()), PROCESSES_ENV: "1", "PYTHONUNBUFFERED": "1"}
        if self.plan.metrics_base is not None:
            env[METRICS_PORT_ENV] = str(self.plan.metrics_base + slot if self.plan.metrics_base else 0)
        proc = subprocess.Popen(
            [sys.executable, "-m", "bananas.worker", *self.worker_argv],
            env=env,
            process_group=0,  # a terminal's Ctrl-C reaches the children once, through the supervisor
        )
        self.children[slot] = _Child(slot, proc, time.monotonic())
        log.info("started worker process %d (pid %d)", slot, proc.pid)

    def _signal(self, child: _Child, sig: signal.Signals) -> None:
        child.signals += 1
        with contextlib.suppress(ProcessLookupError):
            child.proc.send_signal(sig)

    def _start_due(self) -> None:
        now = time.monotonic()
        for slot, when in list(self._due.items()):
            if when <= now and slot not in self.children:
                del self._due[slot]
                self._start(slot)

    def _reap(self) -> None:
        for slot, child in list(self.children.items()):
            returncode = child.proc.poll()
            if returncode is None:
                continue
            del self.children[slot]
            self._exited(child, returncode, time.monotonic() - child.started)

    def _exited(self, child: _Child, returncode: int, lived: float) -> None:
        slot, pid, how = child.slot, child.proc.pid, _describe(returncode)
        if self._stopping:
            log.info("worker process %d (pid %d) stopped (%s)", slot, pid, how)
            return
        at_start = lived < START_WINDOW
        if child.recycling and not (at_start and child.over_memory):
            log.info("worker process %d (pid %d) %s after %s; starting a new one", slot, pid, how, child.recycling)
            self._due[slot] = time.monotonic()
            return
        if returncode == 0 and not child.recycling:  # ran its --max-jobs-per-child, or stopped by someone
            log.info("worker process %d (pid %d) exited with code 0 after %.1fs; starting a new one", slot, pid, lived)
            self._crashes[slot] = 0
            self._due[slot] = time.monotonic()
            return
        why = child.recycling or how
        self._crashes[slot] = self._crashes[slot] + 1 if at_start else 1
        crashes = self._crashes[slot]
        usage = at_start and returncode == 2  # APP or the configuration is wrong: a restart cannot help
        if usage or (at_start and crashes >= CRASH_LIMIT):
            if self.plan.reload:  # development: the next edit may fix it
                log.error(
                    "worker process %d %s at start%s; waiting for a source change",
                    slot,
                    why if usage else f"failed {crashes} times in a row",
                    " (see its message above)" if usage else f" (last: it {why})",
                )
                self._paused.add(slot)
            elif usage:
                self._fail(
                    2,
                    f"worker process {slot} exited with code 2 at start: the configuration or APP is wrong "
                    "(see its message above); stopping",
                )
            else:
                self._fail(
                    1,
                    f"worker processes keep crashing at start: worker process {slot} failed {crashes} times in a row "
                    f"within {START_WINDOW:g}s of starting (last: it {why}); stopping",
                )
            return
        delay = min(BACKOFF_FIRST * 2 ** (crashes - 1), BACKOFF_MAX)
        log.warning(
            "worker process %d (pid %d) %s after %.1fs; starting a new one in %gs", slot, pid, why, lived, delay
        )
        self._due[slot] = time.monotonic() + delay

    # -- recycling -----------------------------------------------------------------------

    def _check_memory(self) -> None:
        limit = self.plan.max_memory_mb
        now = time.monotonic()
        if limit is None or now - self._last_memory_check < MEMORY_CHECK_INTERVAL:
            return
        self._last_memory_check = now
        for child in self.children.values():
            if child.recycling:
                continue
            rss = _rss_mb(child.proc.pid)
            if rss is not None and rss > limit:
                child.recycling = f"used {rss:.0f} MB, above --max-memory-per-child {limit}"
                child.over_memory = True
                log.warning(
                    "worker process %d (pid %d) %s: replacing it (it finishes its running jobs first)",
                    child.slot,
                    child.proc.pid,
                    child.recycling,
                )
                self._signal(child, signal.SIGTERM)

    def _watch_sources(self) -> Generator[set[tuple[Any, str]], None, None]:
        import watchfiles

        dirs = _source_dirs(self.plan.app)
        log.info("watching %s for changes to Python files", ", ".join(str(d) for d in dirs))
        return watchfiles.watch(
            *dirs,
            watch_filter=watchfiles.PythonFilter(),
            rust_timeout=int(TICK * 1000),
            yield_on_timeout=True,
            raise_interrupt=False,
        )

    def _reload(self, changes: set[tuple[Any, str]]) -> None:
        paths = sorted({path for _, path in changes})
        shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        log.info("source changed (%s): restarting the worker processes", shown)
        for slot in range(self.plan.processes):
            self._crashes[slot] = 0
            child = self.children.get(slot)
            if child is not None:
                if not child.recycling:
                    child.recycling = "a source change"
                    self._signal(child, signal.SIGTERM)
            else:
                self._paused.discard(slot)
                self._due[slot] = time.monotonic()


def _source_dirs(app: str) -> list[Path]:
    """The directories of APP's top-level package (or of its module), else the current one."""
    top = app.partition(":")[0].split(".")[0]
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        return [Path(p) for p in spec.submodule_search_locations]
    if spec is not None and spec.origin and os.path.exists(spec.origin):
        return [Path(spec.origin).parent]
    return [Path.cwd()]


def run_supervisor(args: argparse.Namespace, plan: Plan, grace_period: float) -> int:
    """Supervise the worker processes ``plan`` describes for ``args`` (children stop within
    ``grace_period`` seconds of a signal); return the exit code."""
    return Supervisor(attrs.evolve(plan, grace_period=grace_period), child_argv(args)).run()


async def run_supervised(pool: Any, *, interval: float = 1.0) -> None:
    """``pool.run()``; in a child of the supervisor, also stop gracefully once the supervisor is gone."""
    import asyncio

    raw = os.environ.get(SUPERVISOR_PID_ENV, "")
    if not raw.isdigit():
        await pool.run()
        return
    supervisor = int(raw)

    async def watch() -> None:
        while True:  # no event to wait for: the parent's death only shows in getppid()
            await asyncio.sleep(interval)
            if os.getppid() != supervisor:
                break
        log.warning("the supervisor (pid %d) is gone: stopping this worker", supervisor)
        pool.request_stop()

    watcher = asyncio.create_task(watch(), name="bananas-supervisor-watch")
    try:
        await pool.run()
    finally:
        watcher.cancel()

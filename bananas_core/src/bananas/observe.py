"""Watching jobs as they go: the seam that metrics, tracing and custom instrumentation plug into.

An :class:`Observer` is told about every submit, every handler attempt and the worker's
events (claims, settles, reaped leases, cron fires). Register one with :func:`add_observer`;
with none registered, the client and the worker pay one empty-tuple check per call and
nothing else. This module imports nothing optional.

Two kinds of hooks:

- context managers around work: :meth:`Observer.submitting` wraps the write of every submit
  (and may hand back replacement jobs, e.g. with trace context added to their ``extra``
  fields, which are then what is written); :meth:`Observer.firing` does the same for the
  jobs cron schedules fire; :meth:`Observer.attempt` wraps one handler
  attempt and is entered before the handler's task or thread starts, so a context variable
  set there (an OpenTelemetry span made current) is seen by the handler;
- plain events: :meth:`Observer.job_claimed`, :meth:`Observer.attempt_finished`,
  :meth:`Observer.leases_reaped`, :meth:`Observer.cron_fired`, :meth:`Observer.worker_started`
  and :meth:`Observer.worker_stopped`.

An observer that raises is logged (once per call) and skipped: it never fails a submit or
an attempt. Hooks run on the caller's thread (the event loop's, or a synchronous client's
calling thread); they must be quick and must not block.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from types import TracebackType
from typing import Any

import attrs

from bananas.job import Job

__all__ = [
    "Attempt",
    "Disposition",
    "Observer",
    "Settled",
    "add_observer",
    "observers",
    "remove_observer",
]

log = logging.getLogger("bananas.observe")

OBSERVERS: tuple[Observer, ...] = ()
"""The registered observers, in registration order (replaced, never mutated: read it without a lock)."""
ATTEMPTS: tuple[Observer, ...] = ()
"""The registered observers that wrap attempts (override :meth:`Observer.attempt`)."""
SETTLES: tuple[Observer, ...] = ()
"""The registered observers told how attempts ended (override :meth:`Observer.attempt_finished`)."""
_BY_HOOK: dict[str, tuple[Observer, ...]] = {}
"""Per hook, the observers that override it: an event nobody listens to costs one lookup."""

_lock = threading.Lock()


class Disposition(enum.StrEnum):
    """What became of a job after one attempt."""

    COMPLETED = "completed"
    RETRY = "retry"
    """The attempt failed and the job will run again."""
    DEAD = "dead"
    """The attempt failed and it was the last one: the job is in the dead letter queue."""
    CANCELLED = "cancelled"
    """The job was cancelled (``client.cancel``) while it was claimed: it ends cancelled, no retry."""
    LOST = "lost"
    """The outcome was discarded: another worker took the job over (its lease ran out)."""
    UNRECORDED = "unrecorded"
    """The store could not record the outcome; the lease runs out and the job runs again."""


@attrs.define(eq=False)
class Attempt:
    """One handler attempt, as observers see it.

    ``job`` is the claimed job (``job.attempts`` counts the earlier attempts). The outcome
    fields are filled in before the observers' :meth:`Observer.attempt` context managers
    exit: ``finished`` is false if the attempt was cancelled (the worker stopped); ``error``
    is empty on success; ``exception`` is the handler's exception when there was one;
    ``timed_out`` says the handler ran out of time; ``duration`` is in seconds.
    """

    job: Job
    worker_id: str = ""
    finished: bool = False
    error: str = ""
    exception: BaseException | None = None
    timed_out: bool = False
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        """True if the handler finished and succeeded."""
        return self.finished and not self.error


@attrs.frozen
class Settled:
    """The end of one attempt as recorded in the store: ``disposition`` says what became of ``job``.

    ``job`` is the job as stored after the attempt (the claimed copy if nothing was stored);
    ``attempt`` is the number of the attempt that ended (1 for the first).
    """

    job: Job
    disposition: Disposition
    attempt: int
    duration: float = 0.0
    error: str = ""
    worker_id: str = ""


class Observer:
    """Base class of observers: every hook does nothing. Override the ones you need."""

    def submitting(self, jobs: Sequence[Job]) -> AbstractContextManager[Sequence[Job] | None] | None:
        """A context manager entered before ``jobs`` are written and exited after (with the
        write's exception, if it failed); its value may be replacement jobs (same ids, same
        order) to write instead, or ``None``. Return ``None`` to skip."""
        return None

    def firing(self, schedule_id: str, tick: datetime, jobs: Sequence[Job]) -> AbstractContextManager[Any] | None:
        """Like :meth:`submitting`, around the write of the jobs a cron schedule fires for
        ``tick`` (its value may be replacement jobs too). Return ``None`` to skip."""
        return None

    def attempt(self, attempt: Attempt) -> AbstractContextManager[Any] | None:
        """A context manager around one handler attempt, entered before the handler starts;
        ``attempt``'s outcome fields are set when it exits. Return ``None`` to skip."""
        return None

    def job_claimed(self, job: Job, worker_id: str, wait: float) -> None:
        """``worker_id`` claimed ``job``, which had been ready for ``wait`` seconds."""

    def attempt_finished(self, settled: Settled) -> None:
        """The outcome of an attempt was recorded (or discarded); see :class:`Settled`."""

    def leases_reaped(self, count: int) -> None:
        """The reaper took back ``count`` jobs whose lease had run out (an attempt counted for each)."""

    def cron_fired(self, schedule_id: str, job: Job) -> None:
        """Schedule ``schedule_id`` fired and enqueued ``job``."""

    def worker_started(self, worker_id: str, concurrency: int) -> None:
        """A worker of this process started, running at most ``concurrency`` jobs at once."""

    def worker_stopped(self, worker_id: str) -> None:
        """A worker of this process stopped."""


_HOOKS = (
    "submitting",
    "firing",
    "attempt",
    "job_claimed",
    "attempt_finished",
    "leases_reaped",
    "cron_fired",
    "worker_started",
    "worker_stopped",
)


def _install(registered: tuple[Observer, ...]) -> None:
    global OBSERVERS, ATTEMPTS, SETTLES, _BY_HOOK
    by_hook = {
        hook: tuple(o for o in registered if getattr(type(o), hook) is not getattr(Observer, hook)) for hook in _HOOKS
    }
    _BY_HOOK = by_hook
    ATTEMPTS = by_hook["attempt"]
    SETTLES = by_hook["attempt_finished"]
    OBSERVERS = registered


def add_observer(observer: Observer) -> None:
    """Register ``observer`` for this process (adding the same one twice is a no-op)."""
    if not isinstance(observer, Observer):
        raise TypeError(f"an observer must be a bananas.observe.Observer, not {type(observer).__name__}")
    with _lock:
        if observer not in OBSERVERS:
            _install((*OBSERVERS, observer))


def remove_observer(observer: Observer) -> None:
    """Unregister ``observer``; one that is not registered is ignored."""
    with _lock:
        _install(tuple(o for o in OBSERVERS if o is not observer))


def observers() -> tuple[Observer, ...]:
    """The registered observers, in the order they were added."""
    return OBSERVERS


# -- what the client and the worker call (only when OBSERVERS is not empty) ----------------


class _Nested(AbstractContextManager[Any]):
    """The observers' context managers for one call, entered in order and exited in reverse.

    A manager that fails to enter or exit is logged and left out; none can suppress the
    exception of the work it wraps.
    """

    __slots__ = ("_entered", "_managers", "_what")

    def __init__(self, what: str, managers: list[AbstractContextManager[Any]]) -> None:
        self._what = what
        self._managers = managers
        self._entered: list[AbstractContextManager[Any]] = []

    def _enter_all(self, value: Any) -> Any:
        for manager in self._managers:
            try:
                given = manager.__enter__()
            except Exception:
                log.exception("an observer failed entering %s; it is skipped", self._what)
                continue
            self._entered.append(manager)
            if given is not None and value is not None:
                value = _replacements(value, given)
        return value

    def __enter__(self) -> Any:
        return self._enter_all(None)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        while self._entered:
            manager = self._entered.pop()
            try:
                manager.__exit__(exc_type, exc, tb)
            except Exception:
                log.exception("an observer failed leaving %s", self._what)


class _Submitting(_Nested):
    __slots__ = ("_jobs",)

    def __init__(self, jobs: Sequence[Job], hook: str = "submitting", *args: Any) -> None:
        self._jobs = jobs
        managers: list[AbstractContextManager[Any]] = []
        for observer in _BY_HOOK.get(hook, ()):
            try:
                manager = getattr(observer, hook)(*args, jobs)
            except Exception:
                log.exception("an observer failed preparing %s; it is skipped", hook)
                continue
            if manager is not None:
                managers.append(manager)
        super().__init__(hook, managers)

    def __enter__(self) -> Sequence[Job]:
        jobs: Sequence[Job] = self._enter_all(self._jobs)
        return jobs


def _replacements(jobs: Sequence[Job], given: Any) -> Sequence[Job]:
    """``given`` if it is a valid replacement for ``jobs`` (same ids in the same order); else ``jobs``."""
    if (
        isinstance(given, Sequence)
        and len(given) == len(jobs)
        and all(isinstance(new, Job) and new.id == old.id for new, old in zip(given, jobs, strict=True))
    ):
        return given
    log.error("an observer gave replacement jobs that do not match the submitted ones; they are ignored")
    return jobs


def submitting(jobs: Sequence[Job]) -> AbstractContextManager[Sequence[Job]]:
    """Wrap the write of ``jobs``: ``with submitting(jobs) as jobs: write(jobs)``."""
    return _Submitting(jobs)


def firing(schedule_id: str, tick: datetime, jobs: Sequence[Job]) -> AbstractContextManager[Sequence[Job]]:
    """Wrap the write of the jobs a cron schedule fires: ``with firing(id, tick, jobs) as jobs: ...``."""
    return _Submitting(jobs, "firing", schedule_id, tick)


def attempt(record: Attempt) -> AbstractContextManager[Any]:
    """Wrap one handler attempt (see :meth:`Observer.attempt`)."""
    managers: list[AbstractContextManager[Any]] = []
    for observer in ATTEMPTS:
        try:
            manager = observer.attempt(record)
        except Exception:
            log.exception("an observer failed preparing an attempt; it is skipped")
            continue
        if manager is not None:
            managers.append(manager)
    return _Nested("an attempt", managers)


def _each(hook: str, *args: Any) -> None:
    for observer in _BY_HOOK.get(hook, ()):
        try:
            getattr(observer, hook)(*args)
        except Exception:
            log.exception("an observer failed in %s", hook)


def claimed(jobs: Sequence[Job], worker_id: str, now: float) -> None:
    """Tell observers that ``worker_id`` claimed ``jobs`` at ``now`` (clock seconds)."""
    if not _BY_HOOK.get("job_claimed"):
        return
    for job in jobs:
        ready = job.created_at.timestamp()
        if job.scheduled_for is not None:
            ready = max(ready, job.scheduled_for.timestamp())
        _each("job_claimed", job, worker_id, max(now - ready, 0.0))


def settled(record: Settled) -> None:
    """Tell observers how an attempt ended (see :class:`Settled`)."""
    _each("attempt_finished", record)


def reaped(count: int) -> None:
    """Tell observers that the reaper took back ``count`` jobs."""
    _each("leases_reaped", count)


def cron_fired(schedule_id: str, job: Job) -> None:
    """Tell observers that ``schedule_id`` fired ``job``."""
    _each("cron_fired", schedule_id, job)


def worker_started(worker_id: str, concurrency: int) -> None:
    """Tell observers that a worker started."""
    _each("worker_started", worker_id, concurrency)


def worker_stopped(worker_id: str) -> None:
    """Tell observers that a worker stopped."""
    _each("worker_stopped", worker_id)


def _register_builtin() -> None:
    """Register the observers Bananas brings: tracing, when the OpenTelemetry API is installed
    (found without importing it; it is imported on the first submit or attempt)."""
    from bananas.tracing import builtin_observer

    found = builtin_observer()
    if found is not None:
        add_observer(found)


_register_builtin()

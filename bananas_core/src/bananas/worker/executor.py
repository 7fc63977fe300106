"""Running one claimed job: find its handler, run it with a timeout, record the outcome.

Whatever a handler does (raise, hang, return something that is not JSON, get cancelled,
raise SystemExit or KeyboardInterrupt itself or in a task or callback it started) becomes a
failed attempt with a readable error and goes through retry / dead letter handling; it
never takes the worker down. Settles are fenced: an outcome reported for a job another
worker has taken over is discarded (one WARNING) and no result is stored for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Generator
from datetime import timedelta
from types import TracebackType
from typing import Any

import attrs

from bananas import checkpoints, observe
from bananas.cancel import CANCELLED_BEFORE_START
from bananas.clock import Clock, system_clock
from bananas.errors import LeaseLost, PayloadError
from bananas.job import JSON, MAX_DEPTH, Job, JobResult, JobStatus, dumps
from bananas.logsafe import printable
from bananas.policy import next_retry
from bananas.protocols import DEFAULT_LEASE_SECONDS, Cancellation, CompleteAndStore, Queue, ResultBackend
from bananas.timefmt import from_timestamp
from bananas.timeouts import job_timeout
from bananas.worker import cancelling
from bananas.worker.context import JobContext
from bananas.worker.registry import Registry
from bananas.workflows.steps import step_queue

__all__ = ["Executor", "Outcome", "abandoned_handler_threads"]

log = logging.getLogger("bananas.worker")

DEFAULT_JOB_TIMEOUT = 300.0
ERROR_LIMIT = 1000
"""Characters of a job's error shown in one log line."""


@attrs.frozen
class Outcome:
    """How one attempt ended: ``error`` is empty on success; ``result`` is the handler's value;
    ``exception`` is what the handler raised, if it raised; ``timed_out`` says it ran out of time."""

    result: JSON = None
    error: str = ""
    duration: float = 0.0
    exception: BaseException | None = attrs.field(default=None, eq=False, repr=False)
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        """True if the handler succeeded."""
        return not self.error


class Executor:
    """Runs claimed jobs with their registered handlers, at most ``concurrency`` at once.

    Plain ``def`` handlers run in their own daemon threads so they never block the event
    loop (and a hung one never blocks interpreter exit). A SystemExit or KeyboardInterrupt
    raised by the handler itself is always only a failed attempt; one raised by a task or
    callback the handler started is contained too while :meth:`guard_loop` is in effect
    (the :class:`~bananas.worker.Pool` installs it for as long as it runs).
    """

    def __init__(
        self,
        registry: Registry,
        queue: Queue,
        concurrency: int = 10,
        *,
        clock: Clock = system_clock,
        job_timeout: float = DEFAULT_JOB_TIMEOUT,
        lease: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.registry = registry
        self.queue = queue
        self.concurrency = concurrency
        self.clock = clock
        self.job_timeout = job_timeout
        self.lease = lease
        self.results: ResultBackend | None = None
        self._combined: Callable[[Job, JobResult], Awaitable[Job]] | None = None
        self.running: dict[str, JobContext] = {}
        """Contexts of the jobs whose handlers run now, by job id."""
        self.cancelling: set[tuple[str, str]] = set()
        """``(job id, lease token)`` of claimed jobs ``client.cancel`` asked to stop (see
        :mod:`bananas.worker.cancelling`): each is settled cancelled, however its attempt ends."""
        self.on_start: Callable[[Job], None] | None = None
        """Called with each job whose handler is about to start (the pool tracks started jobs with it)."""
        self.slow_after = 1.0
        """Async attempts that take at least this many seconds are remembered in :attr:`slow`."""
        self.slow: deque[tuple[float, str, str]] = deque(maxlen=64)
        """``(monotonic end, job id, job name)`` of the latest slow async attempts (see
        :attr:`slow_after`): the candidates when the pool finds that the event loop was blocked."""
        self._slots = asyncio.Semaphore(concurrency)
        self.worker_id = ""
        """The id of the worker this executor runs for (set by the pool; on job log lines and observer events)."""
        self.completed = 0
        """Attempts that succeeded and were recorded (the worker publishes it in its heartbeat)."""
        self.failed = 0
        """Attempts that failed and were recorded (retried or dead)."""
        self.attempt_seconds = 0.0
        """Run time of the attempts counted in :attr:`completed` and :attr:`failed`, in seconds."""

    @property
    def abandoned_threads(self) -> int:
        """Handler threads given up on (timed out, or their job ended otherwise) that still run."""
        return abandoned_handler_threads()

    def guard_loop(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """Contain SystemExit / KeyboardInterrupt from the tasks handlers start on ``loop``; return the undo.

        Installs a task factory (public asyncio API, chained to the loop's previous one) that
        wraps the coroutines of tasks created from inside a handler. Such an exit fails the
        handler's attempt with a readable error if it still runs, or is logged at ERROR if it
        had finished; the worker carries on. A plain callback (``call_soon``) that raises
        SystemExit still ends the loop: that is a crash, which leaves started jobs to their
        leases so the reaper counts the attempt. Nested and repeated calls are fine; the
        loop is restored when the last undo has been called.
        """
        return _guard_loop(loop)

    def set_result_backend(self, results: ResultBackend | None) -> None:
        """Store a :class:`JobResult` for every success and every final failure (optional).

        When the queue keeps results in the same store (it is a
        :class:`~bananas.protocols.CompleteAndStore` that shares its store with ``results``),
        a success is recorded with one call that completes the job and stores its result.
        """
        self.results = results
        self._combined = None
        queue = self.queue
        if results is not None and isinstance(queue, CompleteAndStore) and queue.shares_store_with(results):
            self._combined = queue.complete_and_store

    async def execute_job(self, job: Job, *, timeout: float | None = None) -> Job | None:
        """Run ``job`` (claimed by this worker) and record the outcome; return the stored job.

        Success: ``queue.complete`` then a success result. Failure: ``queue.fail`` told the
        retry time :func:`bananas.policy.next_retry` gives (``None``: dead letter) and, when
        that made the job final, a failed result. Returns
        ``None`` if the store could not record the outcome (the lease then runs out and the
        job runs again) or if another worker had taken the job over (the outcome is
        discarded).
        """
        return await self.record(job, await self.run(job, timeout=timeout))

    async def run(self, job: Job, *, timeout: float | None = None) -> Outcome:
        """Run ``job``'s handler (waiting for a free slot first) and say how it went; records nothing.

        Never raises for what the handler does. If the caller cancels this coroutine, the
        handler is cancelled (its ``ctx.cancelled`` turns true) and the job is left
        claimed, for the caller to release. A job's own timeout (``submit_job(timeout=...)``)
        overrides ``timeout`` and the executor's ``job_timeout``.
        """
        own = job_timeout(job)
        if own is None:
            own = self.job_timeout if timeout is None else timeout
        async with self._slots:
            return await self._run(job, own)

    async def _run(self, job: Job, timeout: float) -> Outcome:
        if not observe.ATTEMPTS:
            return await self._attempt(job, timeout)
        seen = observe.Attempt(job, worker_id=self.worker_id)
        with observe.attempt(seen):  # entered before the handler's task starts: it inherits the context
            outcome = await self._attempt(job, timeout)
            seen.finished = True
            seen.error, seen.exception, seen.timed_out = outcome.error, outcome.exception, outcome.timed_out
            seen.duration = outcome.duration
        return outcome

    async def _attempt(self, job: Job, timeout: float) -> Outcome:
        started = time.monotonic()
        if self.cancelling and (job.id, job.lease_token) in self.cancelling:
            return Outcome(error=CANCELLED_BEFORE_START)  # cancelled while it waited for a slot
        handler = self.registry.get(job.name)
        if handler is None:
            known = ", ".join(self.registry.names()) or "none"
            error = f"HandlerNotFound: no handler is registered for job name {job.name!r} (registered: {known})"
            return Outcome(error=error)
        loop = asyncio.get_running_loop()
        ctx = JobContext(job, queue=self.queue, clock=self.clock, deadline=self.clock() + timeout, lease=self.lease)
        self.running[job.id] = ctx
        if job.attempts:  # resuming: the handler starts from its last checkpoint (a first attempt reads nothing)
            ctx._checkpoint = await checkpoints.load_for_attempt(self.queue, job)
        if self.on_start is not None:
            self.on_start(job)
        attempt = ctx._attempt = loop.create_task(self._call(handler, ctx, job, loop))
        try:
            await _done_or_timeout(attempt, timeout, loop)
        except asyncio.CancelledError:
            ctx.cancel("the worker stopped before the job finished")
            attempt.cancel()
            _abandon_thread(ctx, "the worker stopped")
            raise
        finally:
            self.running.pop(job.id, None)
            ctx._attempt = None
        elapsed = time.monotonic() - started
        if elapsed >= self.slow_after and ctx._thread is None:  # rare: a candidate for a blocked loop
            self.slow.append((started + elapsed, job.id, job.name))
        if ctx._escape is not None:
            attempt.cancel()
            _abandon_thread(ctx, "its attempt failed")
            return Outcome(error=ctx._escape, duration=elapsed)
        if not attempt.done():
            ctx.cancel(f"timed out after {timeout:g}s")
            attempt.cancel()
            _abandon_thread(ctx, f"its timeout of {timeout:g}s")
            error = f"Timeout: the handler did not finish within {timeout:g}s"
            return Outcome(error=error, duration=elapsed, timed_out=True)
        if attempt.cancelled():
            return Outcome(error="Cancelled: the handler was cancelled before it finished", duration=elapsed)
        exc = attempt.exception()
        if exc is not None:
            cause = exc.cause if isinstance(exc, _HandlerExit) else exc
            return Outcome(error=_describe_error(exc, ctx), duration=elapsed, exception=cause)
        value = attempt.result()
        try:
            dumps(value, max_depth=MAX_DEPTH)
        except PayloadError as err:
            error = f"PayloadError: handler for {job.name!r} returned a {type(value).__name__}, not JSON: {err}"
            return Outcome(error=error, duration=elapsed, exception=err)
        return Outcome(result=value, duration=elapsed)

    async def _call(
        self, handler: Callable[..., Any], ctx: JobContext, job: Job, loop: asyncio.AbstractEventLoop
    ) -> Any:
        _OWNER.set(ctx)  # this task's own context: tasks and callbacks the handler starts inherit it
        try:
            if _is_async(handler):
                value = await handler(ctx, job)
            else:
                value = await _in_thread(loop, ctx, handler, ctx, job)
            if inspect.isawaitable(value):  # e.g. a plain def returning a coroutine
                value = await value
        except (SystemExit, KeyboardInterrupt) as exc:  # a handler must not stop the worker
            raise _HandlerExit(exc) from None
        return value

    async def record(self, job: Job, outcome: Outcome) -> Job | None:
        """Record ``outcome`` of claimed ``job`` (see :meth:`execute_job`); never raises.

        If the queue answers :class:`~bananas.errors.LeaseLost` (another worker took the
        job over), the outcome is discarded with one WARNING, no result is stored, and
        ``None`` is returned.
        """
        if self.cancelling and (job.id, job.lease_token) in self.cancelling and isinstance(self.queue, Cancellation):
            stored = await cancelling.settle(self, self.queue, job, outcome)
            if observe.SETTLES:
                disposition = observe.Disposition.LOST if stored is None else observe.Disposition.CANCELLED
                observe.settled(self._settled(stored or job, disposition, job, outcome))
            return stored
        try:
            if outcome.ok:
                steps = step_queue(job, self.queue)
                if steps is not None:  # a workflow step: its completion and what follows, one store write
                    stored = await steps.complete_step(job, self._result(job, JobStatus.COMPLETED, outcome))
                    await self._store(job, JobStatus.COMPLETED, outcome)
                elif self._combined is not None:  # completion and result in one store call
                    stored = await self._combined(job, self._result(job, JobStatus.COMPLETED, outcome))
                else:
                    stored = await self.queue.complete(job)
                    await self._store(job, JobStatus.COMPLETED, outcome)
                disposition = observe.Disposition.COMPLETED
                self.completed += 1
                self.attempt_seconds += outcome.duration
                if log.isEnabledFor(logging.INFO):
                    _succeeded_line(job, outcome.duration, self.log_fields(job))
            else:
                retry_at = next_retry(job, self.clock())  # the policy, decided here; the queue stores it
                steps = step_queue(job, self.queue)  # a workflow step's death and what follows, one write
                settle = self.queue.fail if steps is None else steps.fail_step
                stored = await settle(job, outcome.error, retry_at=retry_at)
                final = retry_at is None  # a result only on a final state
                disposition = observe.Disposition.DEAD if final else observe.Disposition.RETRY
                self.failed += 1
                self.attempt_seconds += outcome.duration
                log.warning(
                    "job %s (%s) failed (attempt %d of %d%s): %s",
                    printable(job.id),
                    printable(job.name),
                    stored.attempts,
                    stored.max_retries,
                    ", dead" if final else ", will retry",
                    printable(outcome.error, ERROR_LIMIT),
                    extra=self.log_fields(job),
                )
                if final:
                    await self._store(job, JobStatus.FAILED, outcome)
            if observe.SETTLES:
                observe.settled(self._settled(stored, disposition, job, outcome))
            return stored
        except LeaseLost as exc:
            what = "completion" if outcome.ok else f"failed attempt ({printable(outcome.error, ERROR_LIMIT)})"
            log.warning(
                "job %s (%s): its %s was discarded and no result stored: another worker took the job over "
                "(its lease ran out%s)",
                printable(job.id),
                printable(job.name),
                what,
                f"; {printable(exc.detail)}" if exc.detail else "",
                extra=self.log_fields(job),
            )
            if observe.SETTLES:
                observe.settled(self._settled(job, observe.Disposition.LOST, job, outcome))
            return None
        except Exception:
            log.exception(
                "could not record the outcome of job %s (%s); its lease will run out",
                printable(job.id),
                printable(job.name),
                extra=self.log_fields(job),
            )
            if observe.SETTLES:
                observe.settled(self._settled(job, observe.Disposition.UNRECORDED, job, outcome))
            return None

    def log_fields(self, job: Job) -> dict[str, Any]:
        """The job's fields that its log lines carry (as ``LogRecord`` attributes; the JSON log format shows them)."""
        return {
            "job_id": job.id,
            "job_name": job.name,
            "attempt": job.attempts + 1,
            "routing_key": job.routing_key,
            "priority": job.priority.value,
            "worker_id": self.worker_id,
        }

    def _settled(
        self, stored: Job, disposition: observe.Disposition, claimed: Job, outcome: Outcome
    ) -> observe.Settled:
        return observe.Settled(
            stored,
            disposition,
            attempt=claimed.attempts + 1,
            duration=outcome.duration,
            error=outcome.error,
            worker_id=self.worker_id,
        )

    async def _store(self, job: Job, status: JobStatus, outcome: Outcome) -> None:
        if self.results is None:
            return
        await self.results.store(self._result(job, status, outcome))

    def _result(self, job: Job, status: JobStatus, outcome: Outcome) -> JobResult:
        return JobResult(
            job_id=job.id,
            status=status,
            result=outcome.result if status is JobStatus.COMPLETED else None,
            error=outcome.error,
            completed_at=from_timestamp(self.clock()),
            duration=timedelta(seconds=outcome.duration),
        )


async def _done_or_timeout(task: asyncio.Future[Any], timeout: float, loop: asyncio.AbstractEventLoop) -> None:
    """Return once ``task`` is done or ``timeout`` seconds have passed, whichever is first:
    ``asyncio.wait`` for one task, without its sets and bookkeeping (it runs once per job)."""
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    task.add_done_callback(wake)
    timer = loop.call_later(timeout, wake)
    try:
        await waiter
    finally:
        timer.cancel()
        task.remove_done_callback(wake)


def _is_async(handler: Callable[..., Any]) -> bool:
    target = handler
    while isinstance(target, functools.partial):
        target = target.func
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(getattr(target, "__call__", None))  # noqa: B004


class _HandlerExit(Exception):
    """A handler raised SystemExit or KeyboardInterrupt: a failed attempt, not a worker exit."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class SpawnedExit(_HandlerExit):
    """A task a handler started raised SystemExit or KeyboardInterrupt; that task ends with this
    ordinary exception instead (and the handler's attempt fails)."""

    def __str__(self) -> str:
        return f"{_exit_text(self.cause)} (raised by a task the handler started)"


def _exit_text(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _describe_error(exc: BaseException, ctx: JobContext) -> str:
    if isinstance(exc, SpawnedExit):
        return str(exc)
    if isinstance(exc, _HandlerExit):
        exc = exc.cause
    text = str(exc)
    name = type(exc).__name__
    if ctx.cancelled and ctx.cancel_reason:
        return f"{name}: {text} ({ctx.cancel_reason})" if text else f"{name} ({ctx.cancel_reason})"
    return f"{name}: {text}" if text else name


# -- containing what handlers start -------------------------------------------------------

_OWNER: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar("bananas_handler", default=None)
"""The job whose handler code runs in this context (set in the attempt's own task; copied
into every task, callback and thread the handler starts)."""


def _escaped(owner: JobContext, exc: BaseException, source: str) -> None:
    """``exc`` (SystemExit / KeyboardInterrupt) came from ``source`` (a task or callback) that
    ``owner``'s handler started."""
    attempt = owner._attempt
    error = f"{_exit_text(exc)} (raised by {source} the handler started)"
    if attempt is not None:  # the attempt still runs: it fails with this error
        if owner._escape is None:
            owner._escape = error
        owner.cancel(error)
        attempt.cancel()
        return
    log.error(
        "job %s (%s): %s after the handler had finished; contained, the worker carries on",
        printable(owner.job.id),
        printable(owner.job.name),
        printable(error, ERROR_LIMIT),
    )


def _mark_retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # reported already: no "exception was never retrieved" at collection


class _Contained(Coroutine[Any, Any, Any]):
    """A coroutine a handler started, whose SystemExit / KeyboardInterrupt becomes a :class:`SpawnedExit`.

    A transparent proxy (not a wrapping ``async def``): a task cancelled before its first
    step still throws into the coroutine, as with no wrapper.
    """

    __slots__ = ("_coro", "_owner")

    def __init__(self, coro: Coroutine[Any, Any, Any], owner: JobContext) -> None:
        self._coro = coro
        self._owner = owner

    def send(self, value: Any) -> Any:
        try:
            return self._coro.send(value)
        except (SystemExit, KeyboardInterrupt) as exc:
            raise self._contain(exc) from None

    def throw(self, typ: Any, val: Any = None, tb: TracebackType | None = None) -> Any:
        try:
            if val is None and tb is None:
                return self._coro.throw(typ)
            return self._coro.throw(typ, val, tb)  # pragma: no cover - the legacy signature
        except (SystemExit, KeyboardInterrupt) as exc:
            raise self._contain(exc) from None

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self._coro.__await__()

    def _contain(self, exc: BaseException) -> SpawnedExit:
        _escaped(self._owner, exc, "a task")
        task = asyncio.current_task()
        if task is not None:
            task.add_done_callback(_mark_retrieved)
        return SpawnedExit(exc)

    def __repr__(self) -> str:
        return repr(self._coro)


def _succeeded_line(job: Job, duration: float, fields: dict[str, Any]) -> None:
    """The INFO line of a successful attempt, the one a busy worker writes most: the record is
    made directly (``Logger.makeRecord``), without the caller lookup ``log.info`` does."""
    record = log.makeRecord(
        log.name,
        logging.INFO,
        __file__,
        _succeeded_line.__code__.co_firstlineno,
        "job %s (%s) succeeded in %.3fs (attempt %d)",
        (printable(job.id), printable(job.name), duration, job.attempts + 1),
        None,
        "record",
        fields,
    )
    log.handle(record)


def _task_factory(previous: Any) -> Callable[..., asyncio.Task[Any]]:
    """A task factory that wraps coroutines started by handler code, then builds the task as before."""

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        context = kwargs.get("context")
        owner = _OWNER.get() if context is None else context.get(_OWNER)
        if owner is not None:  # the one check every task pays
            coro = _Contained(coro, owner)
        if previous is not None:
            task: asyncio.Task[Any] = previous(loop, coro, **kwargs)
            return task
        return asyncio.Task(coro, loop=loop, **kwargs)

    return factory


@attrs.define(eq=False)
class _LoopGuard:
    users: int = 0
    factory: Any = None
    previous_factory: Any = None


_GUARDS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopGuard] = weakref.WeakKeyDictionary()


def _guard_loop(loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
    guard = _GUARDS.get(loop)
    if guard is None:
        guard = _GUARDS[loop] = _LoopGuard()
        guard.previous_factory = loop.get_task_factory()
        guard.factory = _task_factory(guard.previous_factory)
        loop.set_task_factory(guard.factory)
    guard.users += 1
    undone = False

    def undo() -> None:
        nonlocal undone
        if undone:
            return
        undone = True
        guard.users -= 1
        if guard.users or _GUARDS.get(loop) is not guard:
            return
        del _GUARDS[loop]
        if loop.get_task_factory() is guard.factory:  # else someone chained on it: leave theirs
            loop.set_task_factory(guard.previous_factory)

    return undo


# -- plain def handlers on daemon threads -------------------------------------------------

_RUNNING, _DONE, _ABANDONED = 0, 1, 2
_abandoned_lock = threading.Lock()
_abandoned = 0


def abandoned_handler_threads() -> int:
    """How many handler threads were given up on (their attempt ended) and still run now."""
    return _abandoned


def _abandon_thread(ctx: JobContext, why: str) -> None:
    """The attempt of ``ctx`` ended while its sync handler's thread still runs: say so and count it."""
    global _abandoned
    run = ctx._thread
    if run is None:
        return
    with _abandoned_lock:
        if run.state != _RUNNING:
            return
        run.state = _ABANDONED
        _abandoned += 1
        count = _abandoned
    log.warning(
        "job %s (%s): its handler thread is still running after %s and is abandoned (a thread cannot be "
        "stopped; it keeps its resources until the handler returns); %d abandoned handler thread(s) still running",
        printable(ctx.job.id),
        printable(ctx.job.name),
        why,
        count,
    )


class _ThreadRun:
    """One call of a plain ``def`` handler on a daemon thread, settling ``future`` on the loop."""

    __slots__ = ("args", "context", "func", "future", "loop", "state")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], func: Callable[..., Any], args: Any
    ) -> None:
        self.loop = loop
        self.future = future
        self.func = func
        self.args = args
        self.context = contextvars.copy_context()
        self.state = _RUNNING

    def __call__(self) -> None:  # on the handler thread; must not raise
        global _abandoned
        value: Any = None
        error: BaseException | None = None
        try:
            value = self.context.run(self.func, *self.args)
        except BaseException as exc:
            error = exc
        with _abandoned_lock:
            if self.state == _ABANDONED:
                _abandoned -= 1
            self.state = _DONE
        _call_soon(self.loop, self.settle, value, error)

    def settle(self, value: Any, error: BaseException | None) -> None:
        future = self.future
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


async def _in_thread(loop: asyncio.AbstractEventLoop, ctx: JobContext, func: Callable[..., Any], *args: Any) -> Any:
    """Run ``func(*args)`` on a reusable daemon thread and await its result (``ctx`` keeps the run).

    Daemon threads (not a ThreadPoolExecutor, whose threads are joined at exit) so that a
    handler that never returns cannot keep the process alive after the worker stopped;
    reused, because starting a thread per job cost a sync handler most of its throughput.
    The context variables are carried over.
    """
    future: asyncio.Future[Any] = loop.create_future()
    run = ctx._thread = _ThreadRun(loop, future, func, args)
    _HANDLER_THREADS.submit(run)
    return await future


class _DaemonThreads:
    """Daemon threads that run submitted callables (which must not raise).

    Invariant: ``pending <= idle``, where ``pending`` counts queued callables and ``idle``
    the threads waiting for one (a new thread counts from its start). So every queued
    callable has a thread to take it, and a hung callable holds only its own thread. A
    thread left idle for ``idle_timeout`` seconds exits unless it is needed.
    """

    def __init__(self, idle_timeout: float = 30.0) -> None:
        self._work: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._pending = 0
        self._idle_timeout = idle_timeout

    def submit(self, work: Callable[[], None]) -> None:
        with self._lock:
            self._pending += 1
            start = self._pending > self._idle
            if start:
                self._idle += 1
        self._work.put(work)
        if start:
            threading.Thread(target=self._run, name="bananas-handler", daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                work = self._work.get(timeout=self._idle_timeout)
            except queue.Empty:
                with self._lock:
                    if self._pending < self._idle:
                        self._idle -= 1
                        return
                continue
            with self._lock:
                self._idle -= 1
                self._pending -= 1
            work()
            with self._lock:
                self._idle += 1


_HANDLER_THREADS = _DaemonThreads()


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed while the handler ran: nobody waits
        loop.call_soon_threadsafe(callback, *args)

"""Running one claimed job: find its handler, run it with a timeout, record the outcome.

Whatever a handler does (raise, hang, return something that is not JSON, get cancelled)
becomes a failed attempt with a readable error and goes through retry / dead letter
handling; it never takes the worker down.
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
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import attrs

from bananas.clock import Clock, system_clock
from bananas.errors import PayloadError
from bananas.job import JSON, Job, JobResult, JobStatus, dumps
from bananas.protocols import DEFAULT_LEASE_SECONDS, Queue, ResultBackend
from bananas.timefmt import from_timestamp
from bananas.worker.context import JobContext
from bananas.worker.registry import Registry

__all__ = ["Executor", "Outcome"]

log = logging.getLogger("bananas.worker")

DEFAULT_JOB_TIMEOUT = 300.0


@attrs.frozen
class Outcome:
    """How one attempt ended: ``error`` is empty on success; ``result`` is the handler's value."""

    result: JSON = None
    error: str = ""
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        """True if the handler succeeded."""
        return not self.error


class Executor:
    """Runs claimed jobs with their registered handlers, at most ``concurrency`` at once.

    Plain ``def`` handlers run in their own daemon threads so they never block the event
    loop (and a hung one never blocks interpreter exit).
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
        self._slots = asyncio.Semaphore(concurrency)

    def set_result_backend(self, results: ResultBackend | None) -> None:
        """Store a :class:`JobResult` for every success and every final failure (optional).

        When the queue keeps results in the same store (it offers ``shares_store_with`` and
        ``complete_and_store``, as the Redis queue does), a success is recorded with one
        call that completes the job and stores its result together.
        """
        self.results = results
        self._combined = None
        shares = getattr(self.queue, "shares_store_with", None)
        if results is not None and shares is not None and shares(results):
            self._combined = self.queue.complete_and_store  # type: ignore[attr-defined]

    async def execute_job(self, job: Job, *, timeout: float | None = None) -> Job | None:
        """Run ``job`` (claimed by this worker) and record the outcome; return the stored job.

        Success: ``queue.complete`` then a success result. Failure: ``queue.fail`` (retry
        or dead letter) and, when that made the job final, a failed result. Returns
        ``None`` if the store could not record the outcome (the lease then runs out and the
        job runs again).
        """
        return await self.record(job, await self.run(job, timeout=timeout))

    async def run(self, job: Job, *, timeout: float | None = None) -> Outcome:
        """Run ``job``'s handler (waiting for a free slot first) and say how it went; records nothing.

        Never raises for what the handler does. If the caller cancels this coroutine, the
        handler is cancelled (its ``ctx.cancelled`` turns true) and the job is left
        claimed, for the caller to release.
        """
        async with self._slots:
            return await self._run(job, self.job_timeout if timeout is None else timeout)

    async def _run(self, job: Job, timeout: float) -> Outcome:
        started = time.monotonic()
        handler = self.registry.get(job.name)
        if handler is None:
            known = ", ".join(self.registry.names()) or "none"
            error = f"HandlerNotFound: no handler is registered for job name {job.name!r} (registered: {known})"
            return Outcome(error=error)
        loop = asyncio.get_running_loop()
        ctx = JobContext(job, queue=self.queue, clock=self.clock, deadline=self.clock() + timeout, lease=self.lease)
        self.running[job.id] = ctx
        attempt = asyncio.ensure_future(self._call(handler, ctx, job, loop))
        try:
            done, _ = await asyncio.wait({attempt}, timeout=timeout)
        except asyncio.CancelledError:
            ctx.cancel("the worker stopped before the job finished")
            attempt.cancel()
            raise
        finally:
            self.running.pop(job.id, None)
        elapsed = time.monotonic() - started
        if not done:
            ctx.cancel(f"timed out after {timeout:g}s")
            attempt.cancel()
            return Outcome(error=f"Timeout: the handler did not finish within {timeout:g}s", duration=elapsed)
        if attempt.cancelled():
            return Outcome(error="Cancelled: the handler was cancelled before it finished", duration=elapsed)
        exc = attempt.exception()
        if exc is not None:
            return Outcome(error=_describe_error(exc, ctx), duration=elapsed)
        value = attempt.result()
        try:
            dumps(value)
        except PayloadError as err:
            error = f"PayloadError: handler for {job.name!r} returned a {type(value).__name__}, not JSON: {err}"
            return Outcome(error=error, duration=elapsed)
        return Outcome(result=value, duration=elapsed)

    async def _call(
        self, handler: Callable[..., Any], ctx: JobContext, job: Job, loop: asyncio.AbstractEventLoop
    ) -> Any:
        try:
            if _is_async(handler):
                value = await handler(ctx, job)
            else:
                value = await _in_thread(loop, handler, ctx, job)
            if inspect.isawaitable(value):  # e.g. a plain def returning a coroutine
                value = await value
        except (SystemExit, KeyboardInterrupt) as exc:  # a handler must not stop the worker
            raise _HandlerExit(exc) from None
        return value

    async def record(self, job: Job, outcome: Outcome) -> Job | None:
        """Record ``outcome`` of claimed ``job`` (see :meth:`execute_job`); never raises."""
        try:
            if outcome.ok:
                if self._combined is not None:  # completion and result in one store call
                    stored = await self._combined(job, self._result(job, JobStatus.COMPLETED, outcome))
                else:
                    stored = await self.queue.complete(job)
                    await self._store(job, JobStatus.COMPLETED, outcome)
                if _debug():
                    log.debug("job %s (%s) completed in %.3fs", job.id, job.name, outcome.duration)
            else:
                stored = await self.queue.fail(job, outcome.error)
                final = stored.status is JobStatus.FAILED
                log.warning(
                    "job %s (%s) failed (attempt %d of %d%s): %s",
                    job.id,
                    job.name,
                    stored.attempts,
                    stored.max_retries,
                    ", dead" if final else ", will retry",
                    outcome.error,
                )
                if final:
                    await self._store(job, JobStatus.FAILED, outcome)
            return stored
        except Exception:
            log.exception("could not record the outcome of job %s (%s); its lease will run out", job.id, job.name)
            return None

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


def _debug() -> bool:
    return log.isEnabledFor(logging.DEBUG)


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


def _describe_error(exc: BaseException, ctx: JobContext) -> str:
    if isinstance(exc, _HandlerExit):
        exc = exc.cause
    text = str(exc)
    name = type(exc).__name__
    if ctx.cancelled and ctx.cancel_reason:
        return f"{name}: {text} ({ctx.cancel_reason})" if text else f"{name} ({ctx.cancel_reason})"
    return f"{name}: {text}" if text else name


async def _in_thread(loop: asyncio.AbstractEventLoop, func: Callable[..., Any], *args: Any) -> Any:
    """Run ``func(*args)`` on a reusable daemon thread and await its result.

    Daemon threads (not a ThreadPoolExecutor, whose threads are joined at exit) so that a
    handler that never returns cannot keep the process alive after the worker stopped;
    reused, because starting a thread per job cost a sync handler most of its throughput.
    The context variables are carried over.
    """
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(value: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)

    def work() -> None:
        try:
            value = context.run(func, *args)
        except BaseException as exc:
            _call_soon(loop, settle, None, exc)
        else:
            _call_soon(loop, settle, value, None)

    _HANDLER_THREADS.submit(work)
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

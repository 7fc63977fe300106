"""What a handler gets besides the job: deadline, cancellation, a bound logger, lease renewal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import MutableMapping
from typing import Any

from bananas import checkpoints as _checkpoints
from bananas.clock import Clock
from bananas.job import Job
from bananas.logsafe import printable
from bananas.protocols import DEFAULT_LEASE_SECONDS, Queue
from bananas.workflows import steps as _workflow

__all__ = ["JobContext", "JobLogger"]

_events_lock = threading.Lock()
"""Guards the hand-over between :meth:`JobContext.cancel` (any thread) and the events its
waiters create when they first wait."""


class JobLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger that prefixes every message with the job's name and id (also in ``extra``).

    The prefix shows them escaped (:func:`~bananas.logsafe.printable`): they come from
    storage, and a name holding a newline must not forge log lines.
    """

    _prefix = ""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(self.extra or {})
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        if not self._prefix:
            self._prefix = f"[{printable(extra.get('job_name'))} {printable(extra.get('job_id'))}]"
        return f"{self._prefix} {msg}", kwargs


class JobContext:
    """Passed to every handler as ``ctx``.

    ``deadline`` is the clock time (Unix seconds) the attempt times out at. ``cancelled``
    turns true when the attempt timed out, lost its lease or the worker stops hard;
    long handlers should check it (sync) or await :meth:`wait_cancelled` (async) and
    return early. Leases are renewed by the worker pool while a job runs;
    :meth:`renew_lease` / :meth:`heartbeat` renew at once and say whether it is still held.
    """

    def __init__(
        self,
        job: Job,
        *,
        queue: Queue,
        clock: Clock,
        deadline: float,
        lease: float = DEFAULT_LEASE_SECONDS,
        loop: asyncio.AbstractEventLoop | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.job = job
        self.deadline = deadline
        self.lease = lease
        self._queue = queue
        self._clock = clock
        self._loop = loop or asyncio.get_running_loop()
        # Most attempts are never cancelled and never log: the events and the logger are made
        # when first asked for (about a tenth of the worker's own time per job otherwise).
        self._is_cancelled = False
        self._cancelled: threading.Event | None = None  # for wait_cancelled_sync
        self._async_cancelled: asyncio.Event | None = None  # for wait_cancelled
        self.cancel_reason = ""
        self._base_logger = logger
        self._logger: JobLogger | None = None
        # Kept by the worker runtime (executor and pool); not for handlers.
        self._attempt: asyncio.Future[Any] | None = None
        """The task running the handler, while the attempt runs."""
        self._escape: str | None = None
        """The error of a SystemExit / KeyboardInterrupt raised by a task the handler started."""
        self._thread: Any = None
        """The thread run of a plain ``def`` handler (``None`` for an async one)."""
        self._checkpoint: Any = None
        """The state last saved with :meth:`checkpoint` (read before the attempt when resuming)."""

    @property
    def logger(self) -> JobLogger:
        """A logger (``bananas.job`` unless the worker gave another) whose lines name the job."""
        if self._logger is None:
            base = self._base_logger or logging.getLogger("bananas.job")
            self._logger = JobLogger(base, {"job_id": self.job.id, "job_name": self.job.name})
        return self._logger

    @property
    def cancelled(self) -> bool:
        """True once the attempt should stop (timeout, lost lease, hard stop)."""
        return self._is_cancelled

    @property
    def time_left(self) -> float:
        """Seconds until :attr:`deadline` (negative once passed)."""
        return self.deadline - self._clock()

    def cancel(self, reason: str) -> None:
        """Ask the handler to stop (safe from any thread); the first reason is kept."""
        with _events_lock:
            if self._is_cancelled:
                return
            self.cancel_reason = reason
            self._is_cancelled = True
            waiting, waiting_async = self._cancelled, self._async_cancelled
        if waiting is not None:
            waiting.set()
        if waiting_async is not None:
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
                self._loop.call_soon_threadsafe(waiting_async.set)

    async def wait_cancelled(self) -> None:
        """Return once :attr:`cancelled` is true."""
        with _events_lock:
            if self._is_cancelled:
                return
            if self._async_cancelled is None:
                self._async_cancelled = asyncio.Event()
            event = self._async_cancelled
        await event.wait()

    def wait_cancelled_sync(self, timeout: float | None = None) -> bool:
        """From a sync handler: block up to ``timeout`` seconds; True if cancelled (an interruptible sleep)."""
        with _events_lock:
            if self._is_cancelled:
                return True
            if self._cancelled is None:
                self._cancelled = threading.Event()
            event = self._cancelled
        return event.wait(timeout)

    async def renew_lease(self) -> bool:
        """Extend this job's lease now; False (and :attr:`cancelled`) if the lease was lost."""
        held = self.job.id in await self._queue.renew([self.job], self.lease)
        if not held:
            self.cancel("lease lost: the job was taken back (it will run again elsewhere)")
        return held

    def heartbeat(self, timeout: float = 10.0) -> bool:
        """:meth:`renew_lease` for a sync handler running in a worker thread."""
        if _on_loop(self._loop):
            raise RuntimeError("heartbeat() is for sync handlers; in async code use `await ctx.renew_lease()`")
        future = asyncio.run_coroutine_threadsafe(self.renew_lease(), self._loop)
        return future.result(timeout)

    @property
    def checkpoint_state(self) -> Any:
        """The state last saved with :meth:`checkpoint`, when the job is claimed again after a
        crash, a lost lease or a failed attempt; ``None`` on a fresh start."""
        return self._checkpoint

    def checkpoint(self, state: Any) -> _checkpoints.Saving:
        """Save ``state`` (JSON) as this job's progress, in the store, fenced by this claim.

        In async code ``await ctx.checkpoint(state)``; a sync handler calls ``ctx.checkpoint(state)``,
        which blocks until stored. Raises :class:`~bananas.errors.LeaseLost` once another worker
        has the job, and :class:`~bananas.errors.CapabilityNotSupported` on a backend without the
        ``checkpoints`` capability.
        """

        async def save_now() -> None:
            await _checkpoints.save(self._queue, self.job, state)
            self._checkpoint = state

        return _checkpoints.saving(self._loop, save_now)

    @property
    def previous_result(self) -> Any:
        """In a workflow, the result of the chain step before this one (``None`` for a first step)."""
        return _workflow.previous_result(self.job)

    @property
    def group_results(self) -> list[Any] | None:
        """In a chord callback (or a step after a group), the members' results in member order
        (``None`` for a member that failed, under ``allow_failures``); ``None`` elsewhere."""
        outcomes = _workflow.group_outcomes(self.job)
        return None if outcomes is None else [o.result for o in outcomes]

    @property
    def group_outcomes(self) -> list[_workflow.Outcome] | None:
        """Like :attr:`group_results`, with how each member ended (``ok``, ``result``, ``error``)."""
        return _workflow.group_outcomes(self.job)

    def __repr__(self) -> str:
        return f"<JobContext {self.job.name} {self.job.id}>"


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False

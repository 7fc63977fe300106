"""How a worker stops the jobs ``client.cancel`` asked to stop.

With every lease renewal (every ``lease / 3`` seconds, only while it holds jobs) the pool asks
the store which of its held jobs are cancel-requested (:meth:`~bananas.protocols.Cancellation.cancel_requested`,
one round trip). For each one, the handler is told: ``ctx.cancelled`` turns true and an
``async def`` handler's task is cancelled; a plain ``def`` handler should see it and return. A
job claimed ahead that has not started yet does not start. However the attempt then ends, the
executor settles it cancelled (:meth:`~bananas.protocols.Cancellation.settle_cancelled`) and
stores its cancelled result: no retry, no dead letter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bananas.cancel import CANCELLED_WHILE_RUNNING, cancelled_result
from bananas.errors import LeaseLost
from bananas.job import Job
from bananas.logsafe import printable
from bananas.protocols import Cancellation

if TYPE_CHECKING:
    from bananas.worker.executor import Executor, Outcome

__all__ = ["CANCEL_REASON", "settle", "stop_requested"]

log = logging.getLogger("bananas.worker")

CANCEL_REASON = "cancelled: client.cancel asked the job to stop"
"""``ctx.cancel_reason`` of a job cancelled while it runs."""


async def stop_requested(queue: Cancellation, executor: Executor, held: Sequence[tuple[Any, Job]]) -> None:
    """Ask the store which ``held`` jobs are cancel-requested and tell their handlers to stop."""
    if not held:
        return
    asked = await queue.cancel_requested([job for _, job in held])
    for _, job in held:
        key = (job.id, job.lease_token)
        if job.id not in asked or key in executor.cancelling:
            continue
        executor.cancelling.add(key)
        ctx = executor.running.get(job.id)
        if ctx is None or ctx.job is not job:
            continue  # not started: the executor settles it cancelled when its turn comes
        log.info("job %s (%s) was cancelled; stopping its handler", printable(job.id), printable(job.name))
        ctx.cancel(CANCEL_REASON)
        attempt = ctx._attempt
        if ctx._thread is None and attempt is not None:  # an async handler: cancel its task
            attempt.cancel()


async def settle(executor: Executor, queue: Cancellation, job: Job, outcome: Outcome) -> Job | None:
    """Store claimed ``job`` as cancelled, whatever its attempt returned, and its cancelled result;
    ``None`` if another worker took it over or the store could not be written (never raises)."""
    executor.cancelling.discard((job.id, job.lease_token))
    try:
        stored = await queue.settle_cancelled(job, CANCELLED_WHILE_RUNNING)
        if executor.results is not None:
            now = float(executor.clock())
            await executor.results.store(cancelled_result(job.id, now, CANCELLED_WHILE_RUNNING, outcome.duration))
    except LeaseLost:
        log.warning("job %s (%s) was cancelled, but another worker took it over first",
                    printable(job.id), printable(job.name))  # fmt: skip
        return None
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("could not store job %s (%s) as cancelled; its lease will run out",
                      printable(job.id), printable(job.name))  # fmt: skip
        return None
    log.info("job %s (%s) ended cancelled after %.3fs", printable(job.id), printable(job.name), outcome.duration)
    return stored

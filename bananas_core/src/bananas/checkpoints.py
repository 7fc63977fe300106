"""Checkpoints of long jobs: a handler saves its progress (``ctx.checkpoint(state)``) in the
store with the job, fenced by its claim; when the job is claimed again after a crash, a lost
lease or a failed attempt, ``ctx.checkpoint_state`` holds the last state saved and the handler
resumes from there.

The checkpoint is read before the handler starts only for a job that has had an attempt
before (``attempts > 0``): a first attempt has nothing to resume, and costs nothing extra.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

from bananas.errors import CapabilityNotSupported
from bananas.job import JSON, MAX_DEPTH, Job, dumps, loads
from bananas.logsafe import printable
from bananas.protocols import Checkpoints

__all__ = ["Saving", "load_for_attempt", "save", "saving"]

log = logging.getLogger("bananas.worker")

Saving = Awaitable[None]
"""What ``ctx.checkpoint`` returns: await it in async code (a sync handler may ignore it)."""


async def load_for_attempt(queue: Any, job: Job) -> JSON:
    """The checkpoint ``job``'s handler resumes from, or ``None``: read only for a job attempted
    before, from a queue that keeps checkpoints. A store that cannot be read now is logged, and
    the handler starts from the beginning (correct, only slower)."""
    if not job.attempts or not isinstance(queue, Checkpoints):
        return None
    try:
        text = await queue.load_checkpoint(job.id)
        return None if text is None else loads(text)
    except Exception as exc:
        log.warning("job %s: its checkpoint could not be read (%s); it starts from the beginning",
                    printable(job.id), printable(str(exc), 200))  # fmt: skip
        return None


async def save(queue: Any, job: Job, state: JSON) -> None:
    """Save ``state`` as ``job``'s checkpoint (fenced by its claim: raises
    :class:`~bananas.errors.LeaseLost` once another worker has the job)."""
    if not isinstance(queue, Checkpoints):
        raise CapabilityNotSupported(
            "this backend does not keep checkpoints: it does not declare the 'checkpoints' capability"
        )
    await queue.save_checkpoint(job, dumps(state, max_depth=MAX_DEPTH))


class _Done:
    """An awaitable that is already done: what ``ctx.checkpoint`` returns to a sync handler."""

    def __await__(self) -> Generator[Any, None, None]:
        yield from ()


def saving(loop: asyncio.AbstractEventLoop, save_now: Callable[[], Coroutine[Any, Any, None]]) -> Saving:
    """``ctx.checkpoint``'s two faces: on the event loop, the coroutine to await; on a sync
    handler's thread, the save done (blocking until stored) and an awaitable that is done."""
    try:
        on_loop = asyncio.get_running_loop() is loop
    except RuntimeError:
        on_loop = False
    if on_loop:
        return save_now()
    asyncio.run_coroutine_threadsafe(save_now(), loop).result()
    return _Done()

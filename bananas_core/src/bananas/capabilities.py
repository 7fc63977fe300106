"""Optional capabilities a backend declares once, in its :class:`~bananas.plugins.types.BackendSpec`.

Core semantics (enqueue, claim with leases, complete, fail with retry and dead letter,
scheduled jobs, results, worker liveness) are not capabilities: every backend has them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from bananas.errors import CapabilityNotSupported

__all__ = ["Capability", "require"]


class Capability(enum.StrEnum):
    """Something a backend may or may not do; the conformance suite tests each one it declares."""

    CRON = "cron"
    """Cron schedule storage (:class:`~bananas.protocols.Scheduler`): ticks fired once, schedule state."""

    DEAD_LETTER_ADMIN = "dead_letter_admin"
    """List, requeue and purge the dead letter queue."""

    JOB_NAME_FILTER = "job_name_filter"
    """``claim(job_names=...)`` takes only jobs with those names and leaves others in place."""

    PUSH_WAKEUP = "push_wakeup"
    """``wait_for_work`` returns within milliseconds of an enqueue by another client."""

    RESULT_PUSH = "result_push"
    """``wait`` for a result is woken by the store, not by polling."""

    TRANSACTIONAL_ENQUEUE = "transactional_enqueue"
    """Jobs can be submitted inside the caller's own database transaction."""

    RESULT_TTL = "result_ttl"
    """Results and finished jobs expire after their TTLs."""

    HAND_OFF = "hand_off"
    """The queue is a :class:`~bananas.protocols.HandOff`: an idle worker waits in the store and
    is handed new jobs, already claimed, by the enqueue that makes them ready."""

    COMPLETE_AND_STORE = "complete_and_store"
    """The queue is a :class:`~bananas.protocols.CompleteAndStore`: a completion and its result
    are written together, in one atomic step."""

    CHECKPOINTS = "checkpoints"
    """The queue is a :class:`~bananas.protocols.Checkpoints`: a long job saves its progress with
    ``ctx.checkpoint(state)`` and resumes from it when claimed again."""

    WORKFLOWS = "workflows"
    """The queue is a :class:`~bananas.protocols.WorkflowSteps`: chains, groups and chords whose
    next steps are created in the same atomic write that settles a step (see :mod:`bananas.workflows`)."""

    UNIQUE_JOBS = "unique_jobs"
    """The queue is a :class:`~bananas.protocols.UniqueEnqueue`: a submit with a unique key writes
    nothing while another job holds the key (see :mod:`bananas.unique`)."""

    GROUPS = "groups"
    """The queue is a :class:`~bananas.protocols.GroupLimits`: jobs submitted with a ``group`` obey
    the limits stored for it (running at once, starts per window) and groups are served in turn
    (see :mod:`bananas.groups`)."""

    CANCEL = "cancel"
    """The queue is a :class:`~bananas.protocols.Cancellation`: ``client.cancel(job_id)`` stops a job
    that has not started at once and a running one at its worker's next lease renewal (see
    :mod:`bananas.cancel`)."""


def require(declared: Iterable[Capability], needed: Capability, *, backend: str, operation: str) -> None:
    """Raise :class:`CapabilityNotSupported` unless ``needed`` is among ``declared``."""
    if needed not in set(declared):
        raise CapabilityNotSupported(
            f"the {backend!r} backend does not support {operation}: it does not declare the {needed.value!r} capability"
        )

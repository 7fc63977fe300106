"""How the worker tells a workflow step from a plain job, and what a handler reads of it."""

from __future__ import annotations

from typing import Any

import attrs

from bananas.job import JSON, Job
from bananas.protocols import WorkflowSteps
from bananas.workflows.plan import GROUP_FIELD, PREVIOUS_FIELD, WORKFLOW_FIELD

__all__ = ["Outcome", "group_outcomes", "previous_result", "step_queue", "workflow_id"]


def workflow_id(job: Job) -> str | None:
    """The id of the workflow ``job`` is a step of, or ``None``."""
    value = job.extra.get(WORKFLOW_FIELD)
    return value if isinstance(value, str) and value else None


def step_queue(job: Job, queue: Any) -> WorkflowSteps | None:
    """``queue`` as the :class:`~bananas.protocols.WorkflowSteps` that settles ``job``, if
    ``job`` is a workflow step; ``None`` for a plain job."""
    if workflow_id(job) is not None and isinstance(queue, WorkflowSteps):
        return queue
    return None


@attrs.frozen
class Outcome:
    """How a member of a chord's group ended: ``ok`` with its ``result``, or its ``error``
    (``cancelled`` when it was cancelled rather than dead)."""

    ok: bool
    result: JSON = None
    error: str = ""
    cancelled: bool = False


def previous_result(job: Job) -> JSON:
    """The result of the chain step before ``job`` (``None`` for a first step)."""
    return job.extra.get(PREVIOUS_FIELD)


def group_outcomes(job: Job) -> list[Outcome] | None:
    """How each member of the group before ``job`` ended, in member order; ``None`` if no group precedes it."""
    raw = job.extra.get(GROUP_FIELD)
    if not isinstance(raw, list):
        return None
    out = []
    for item in raw:
        d = item if isinstance(item, dict) else {}
        out.append(Outcome(bool(d.get("ok")), d.get("result"), str(d.get("error") or ""), d.get("cancelled") is True))
    return out

"""What the clients do for workflows: submit, report, wait, cancel (the backend stores; this decides)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime

from bananas.backend import Backend
from bananas.cancel import CancelOutcome, cancel_job
from bananas.capabilities import Capability
from bananas.errors import InvalidJob, JobNotFound, Timeout
from bananas.job import Job, JobPriority
from bananas.protocols import WorkflowSteps
from bananas.workflows.canvas import NODE_TYPES, Node, Task
from bananas.workflows.plan import compile_workflow
from bananas.workflows.view import WorkflowInfo, build_info

__all__ = ["WorkflowNotFound", "cancel_workflow", "get_workflow", "job_maker", "submit_workflow", "wait_for_workflow"]


FEW = 20
"""Steps still running below which :func:`wait_for_workflow` builds the full report each poll."""


class WorkflowNotFound(JobNotFound):
    """No workflow with this id is stored."""

    def __str__(self) -> str:
        return f"no workflow with id {self.job_id!r}"


def _steps(backend: Backend, operation: str) -> WorkflowSteps:
    backend.require(Capability.WORKFLOWS, operation)
    queue = backend.queue
    if not isinstance(queue, WorkflowSteps):
        raise TypeError(f"the {backend.name!r} backend declares workflows but its queue is not a WorkflowSteps")
    return queue


async def submit_workflow(backend: Backend, root: Node, make_job: Callable[[Task, str], Job]) -> str:
    """Compile ``root`` and store it (its first steps enqueued) in one atomic write; return its id."""
    if not isinstance(root, NODE_TYPES):
        raise InvalidJob(
            f"submit() takes a workflow built with task(), chain(), group() or chord(), got {type(root).__name__}"
        )
    steps = _steps(backend, "workflows (client.submit of a task, chain, group or chord)")
    plan = compile_workflow(root, make_job, now=backend.clock())
    await steps.submit_workflow(plan)
    return plan.id


async def get_workflow(backend: Backend, workflow_id: str) -> WorkflowInfo:
    """The workflow's report; raises :class:`WorkflowNotFound`."""
    steps = _steps(backend, "workflows (get_workflow)")
    record = await steps.workflow_record(workflow_id)
    if record is None:
        raise WorkflowNotFound(workflow_id)
    live: dict[str, Job | None] = {}
    for job_id, step in record.steps.items():
        if step.state == "created":
            try:
                live[job_id] = await backend.queue.get_job(job_id)
            except JobNotFound:
                live[job_id] = None
    records = {k: (v.state, v.outcome) for k, v in record.steps.items()}
    return build_info(record.document, records, live)


async def wait_for_workflow(backend: Backend, workflow_id: str, timeout: float) -> WorkflowInfo:
    """The report once the workflow reached its final state, polling up to ``timeout`` real seconds;
    raises :class:`~bananas.errors.Timeout`."""
    steps = _steps(backend, "workflows (wait_for_workflow)")
    deadline = time.monotonic() + timeout
    pause = 0.01
    while True:
        record = await steps.workflow_record(workflow_id)
        if record is None:
            raise WorkflowNotFound(workflow_id)
        running = sum(1 for step in record.steps.values() if step.state == "created")
        # Every settle records its step's outcome, so a step still "created" has not finished
        # (or its job record vanished): the report, which reads those jobs, is built only
        # when few of them are left.
        if running <= FEW:
            info = await get_workflow(backend, workflow_id)
            if info.done:
                return info
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout(f"workflow {workflow_id!r} did not finish within {timeout:g}s (it is running)")
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, 0.5)


async def cancel_workflow(backend: Backend, workflow_id: str) -> dict[str, CancelOutcome]:
    """Cancel every step of the workflow that has not finished; what happened to each, by job id.

    First, in one atomic write, every step not created yet is recorded ``cancelled`` (``CANCELLED``:
    it will never be created, whatever finishes meanwhile). Then each step created and not yet
    settled is cancelled as :func:`~bananas.cancel.cancel_job` cancels a job, each in its own
    atomic write with the following of its dead link: one not started is ``CANCELLED`` at once,
    a running one is stopped by its worker (``REQUESTED``), one that finished meanwhile is left
    as it ended (``ALREADY_FINISHED``). A workflow already finished is left alone (an empty
    answer). Raises :class:`WorkflowNotFound`, and
    :class:`~bananas.errors.CapabilityNotSupported` without the ``workflows`` and ``cancel``
    capabilities."""
    steps = _steps(backend, "workflows (cancel_workflow)")
    backend.require(Capability.CANCEL, "cancel_workflow")
    stop = await steps.stop_workflow(workflow_id)
    if stop is None:
        raise WorkflowNotFound(workflow_id)
    out = dict.fromkeys(stop.cancelled, CancelOutcome.CANCELLED)
    for job_id in stop.running:
        try:
            out[job_id] = await cancel_job(backend, job_id)
        except JobNotFound:  # its record expired or was purged: nothing left to stop
            out[job_id] = CancelOutcome.ALREADY_FINISHED
    return out


def job_maker(build: Callable[..., Job], now: datetime) -> Callable[[Task, str], Job]:
    """Turn a client's job builder (its ``_job``) into the step builder :func:`compile_workflow` takes."""

    def make(node: Task, job_id: str) -> Job:
        options = dict(node.options)
        return build(
            node.name,
            node.payload,
            options.pop("priority", JobPriority.NORMAL),
            options.pop("description", None),
            job_id=job_id,
            now=now,
            **options,
        )

    return make

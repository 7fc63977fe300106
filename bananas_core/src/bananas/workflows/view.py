"""What ``client.get_workflow`` reports: every step's state and the workflow's, read from the
stored record (and, for steps that run, from their jobs)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Literal

import attrs

from bananas.job import JSON, Job, JobStatus

__all__ = ["StepInfo", "WorkflowInfo", "build_info"]

WorkflowState = Literal["running", "completed", "failed", "cancelled"]


@attrs.frozen
class StepInfo:
    """One step: ``state`` is ``waiting`` (not created yet), ``pending``, ``scheduled``,
    ``processing``, ``completed``, ``dead``, ``cancelled`` or ``skipped`` (will never run:
    ``note`` says why)."""

    job_id: str
    name: str
    state: str
    result: JSON = None
    error: str = ""
    note: str = ""

    @property
    def final(self) -> bool:
        """True once the step will not change any more."""
        return self.state in ("completed", "dead", "cancelled", "skipped")


@attrs.frozen
class WorkflowInfo:
    """A workflow as stored now: ``state`` is ``running`` while any step may still run, then
    ``completed``, ``failed`` (it did not complete and a step ended dead) or ``cancelled`` (it
    did not complete because steps were cancelled, none ended dead); ``steps`` by job id,
    ``tree`` the structure (JSON) as submitted."""

    id: str
    state: WorkflowState
    created_at: str
    tree: JSON
    steps: Mapping[str, StepInfo]
    result: JSON = None
    """The result of what ran last (a chain's last step, a chord's callback; a list for a group)
    once the workflow completed."""

    @property
    def done(self) -> bool:
        """True once the workflow reached its final state (completed, failed or cancelled)."""
        return self.state != "running"

    def step_list(self) -> list[StepInfo]:
        """The steps in the order the tree names them."""
        return [self.steps[job_id] for job_id in _job_ids(self.tree)]


_LIVE = {
    JobStatus.PENDING: "pending",
    JobStatus.SCHEDULED: "scheduled",
    JobStatus.PROCESSING: "processing",
    JobStatus.COMPLETED: "completed",
    JobStatus.FAILED: "dead",
    JobStatus.CANCELLED: "cancelled",
}


def _job_ids(tree: JSON) -> list[str]:
    if not isinstance(tree, dict):
        return []
    if "job_id" in tree:
        return [str(tree["job_id"])]
    out: list[str] = []
    for key in ("chain", "group", "chord"):
        for part in tree.get(key) or ():
            out += _job_ids(part)
    if "callback" in tree:
        out += _job_ids(tree["callback"])
    return out


def _names(tree: JSON) -> dict[str, str]:
    if isinstance(tree, dict) and "job_id" in tree:
        return {str(tree["job_id"]): str(tree["task"])}
    out: dict[str, str] = {}
    if isinstance(tree, dict):
        for key in ("chain", "group", "chord"):
            for part in tree.get(key) or ():
                out.update(_names(part))
        if "callback" in tree:
            out.update(_names(tree["callback"]))
    return out


def build_info(
    document: str, records: Mapping[str, tuple[str, str | None]], live: Mapping[str, Job | None]
) -> WorkflowInfo:
    """The report of a workflow from its stored ``document``, each step's ``(state, outcome)``
    record and, for created steps, their jobs (``None``: the job record is gone)."""
    doc = json.loads(document)
    tree = doc["tree"]
    names = _names(tree)
    steps: dict[str, StepInfo] = {}
    for job_id, name in names.items():
        state, outcome = records.get(job_id, ("waiting", None))
        result: JSON = None
        error = ""
        if state in ("completed", "dead", "cancelled") and outcome is not None:
            data = json.loads(outcome)
            result, error = data.get("result"), data.get("error", "")
        elif state == "created":
            job = live.get(job_id)
            if job is None:
                state, error = "dead", "its job record is gone (it expired or was purged)"
            else:
                final = job.status in (JobStatus.FAILED, JobStatus.CANCELLED)
                state, error = _LIVE[job.status], job.error if final else ""
        steps[job_id] = StepInfo(job_id, name, state, result, error)
    running = any(s.state in ("pending", "scheduled", "processing") for s in steps.values())
    status = _status(tree, steps)
    dead = [s for s in steps.values() if s.state == "dead"]
    cancelled = [s for s in steps.values() if s.state == "cancelled"]
    overall: WorkflowState
    if running:
        overall = "running"
    elif status == "completed":
        overall = "completed"
    else:
        overall = "cancelled" if cancelled and not dead else "failed"
    if overall in ("failed", "cancelled"):
        reasons = [f"step {s.name} ({s.job_id}) ended dead" for s in dead[:3]]
        reasons += [f"step {s.name} ({s.job_id}) was cancelled" for s in cancelled[: 3 - len(reasons)]]
        why = "not run: " + (", ".join(reasons) if reasons else f"the workflow {overall}")
        steps = {k: attrs.evolve(s, state="skipped", note=why) if s.state == "waiting" else s for k, s in steps.items()}
    result = _result(tree, steps) if overall == "completed" else None
    return WorkflowInfo(str(doc["id"]), overall, str(doc.get("created_at", "")), tree, steps, result)


def _status(tree: JSON, steps: Mapping[str, StepInfo]) -> str:
    """``completed``, ``failed`` or ``open`` (still to run) for one node of the tree."""
    assert isinstance(tree, dict)
    if "job_id" in tree:
        state = steps[str(tree["job_id"])].state
        return "completed" if state == "completed" else "failed" if state in ("dead", "cancelled") else "open"
    if "chain" in tree:
        for part in tree["chain"]:
            s = _status(part, steps)
            if s != "completed":
                return s
        return "completed"
    if "chord" in tree:
        return _status(tree["callback"], steps)
    parts = [_status(p, steps) for p in tree["group"]]
    return "failed" if "failed" in parts else "open" if "open" in parts else "completed"


def _result(tree: JSON, steps: Mapping[str, StepInfo]) -> JSON:
    assert isinstance(tree, dict)
    if "job_id" in tree:
        return steps[str(tree["job_id"])].result
    if "chain" in tree:
        return _result(tree["chain"][-1], steps)
    if "chord" in tree:
        return _result(tree["callback"], steps)
    return [_result(p, steps) for p in tree["group"]]

"""A workflow compiled into what a backend stores: steps (jobs) with their links, and joins.

The policy (what follows what, what a failure stops) is decided here, once, when the workflow
is submitted; a backend only follows the links, atomically with the settle of each step:

- A step's ``on_success`` link, followed when it completes: create the ``start`` steps with
  ``previous_result`` = its result, and/or arrive at ``join`` (a join id and a slot).
- A step's ``on_dead`` link, followed when it ends dead or cancelled: arrive at ``join`` as a
  failure (such a step never starts anything: the rest of its chain does not run).
- A join (a group that something waits for) counts arrivals. When all ``size`` slots have
  arrived: if none failed, or the join allows failures, it creates the ``then`` steps with
  ``group_outcomes`` = the slots' outcomes in order and arrives at ``ok_up`` (if any) with
  the list of the slots' results; otherwise it arrives at ``fail_up`` (if any) as a failure.

Every step has its job id from the start, so a step is created at most once by construction.

A backend also counts the steps created and not yet settled (``open``). Creation happens only
in a settle, so when a settle brings that count to 0 nothing can run any more: the workflow has
reached its final state, and its record expires :func:`record_ttl` seconds later.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence

import attrs

from bananas.job import JSON, Job, dumps
from bananas.timefmt import from_timestamp
from bananas.workflows.canvas import Chain, Chord, Group, Node, Task

__all__ = [
    "CANCELLED_WAITING",
    "GROUP_FAILED",
    "Join",
    "Link",
    "PlannedStep",
    "StepRecord",
    "WorkflowPlan",
    "WorkflowRecord",
    "WorkflowStop",
    "cancelled_outcome",
    "compile_workflow",
    "failed_outcome",
    "ok_outcome",
    "record_ttl",
    "with_field",
]

GROUP_FAILED = "a member of the group failed"
"""The error a failed group (or chord) reports to the group it is a member of."""

CANCELLED_WAITING = "Cancelled: the workflow was cancelled before this step ran"
"""The error recorded for a step :func:`~bananas.workflows.submit.cancel_workflow` cancelled
before it was created."""

JoinRef = tuple[str, int]


@attrs.frozen
class Link:
    """What a step's settle (or a join's completion) sets off: steps to create, a join to arrive at."""

    start: tuple[str, ...] = ()
    join: JoinRef | None = None

    def to_json(self) -> str:
        """``{"start": [...], "join": [id, slot] | null}``, what backends store."""
        return json.dumps({"start": list(self.start), "join": None if self.join is None else list(self.join)})

    @classmethod
    def from_json(cls, text: str | bytes) -> Link:
        data = json.loads(text)
        join = data.get("join")
        return cls(tuple(data.get("start") or ()), None if join is None else (str(join[0]), int(join[1])))


@attrs.frozen
class Join:
    """A group something waits for: ``size`` slots; see the module docstring for what completes it does."""

    id: str
    size: int
    allow_failures: bool = False
    then: tuple[str, ...] = ()
    ok_up: JoinRef | None = None
    fail_up: JoinRef | None = None

    def to_json(self) -> str:
        return json.dumps(
            {
                "size": self.size,
                "allow_failures": self.allow_failures,
                "then": list(self.then),
                "ok_up": None if self.ok_up is None else list(self.ok_up),
                "fail_up": None if self.fail_up is None else list(self.fail_up),
            }
        )

    @classmethod
    def from_json(cls, join_id: str, text: str | bytes) -> Join:
        d = json.loads(text)

        def ref(v: list[JSON] | None) -> JoinRef | None:
            return None if v is None else (str(v[0]), int(v[1]))

        return cls(
            join_id, int(d["size"]), bool(d["allow_failures"]), tuple(d["then"]), ref(d["ok_up"]), ref(d["fail_up"])
        )


@attrs.frozen
class PlannedStep:
    """One step: its job (carrying the workflow id in ``extra``), its links, and whether it starts at once."""

    job: Job
    on_success: Link
    on_dead: Link
    initial: bool


@attrs.frozen
class WorkflowPlan:
    """Everything :meth:`WorkflowSteps.submit_workflow <bananas.protocols.WorkflowSteps.submit_workflow>`
    stores: ``document`` (the tree, JSON, stored as it is), the steps and the joins."""

    id: str
    document: str
    steps: tuple[PlannedStep, ...]
    joins: tuple[Join, ...]

    @property
    def initial(self) -> list[Job]:
        """The jobs enqueued at submit."""
        return [s.job for s in self.steps if s.initial]


STEP_STATES = ("waiting", "created", "completed", "dead", "cancelled")
"""What a backend records of a step: not created yet, created (its job says how it runs),
completed, dead or cancelled (with its outcome)."""

SETTLED_STATES = ("completed", "dead", "cancelled")
"""The states a settle records (:func:`~bananas.workflows.follow.settle_step`)."""


@attrs.frozen
class StepRecord:
    """What the store holds of one step: ``state`` (one of :data:`STEP_STATES`) and, once
    completed or dead, its ``outcome`` (JSON text: ``{"ok": true, "result": ...}`` or
    ``{"ok": false, "error": "..."}``)."""

    state: str
    outcome: str | None = None


@attrs.frozen
class WorkflowStop:
    """What :meth:`WorkflowSteps.stop_workflow <bananas.protocols.WorkflowSteps.stop_workflow>`
    did: the steps not created yet that it recorded ``cancelled`` (they will never be created),
    and the steps created and not yet settled, whose jobs the caller cancels."""

    cancelled: tuple[str, ...] = ()
    running: tuple[str, ...] = ()


@attrs.frozen
class WorkflowRecord:
    """What :meth:`WorkflowSteps.workflow_record <bananas.protocols.WorkflowSteps.workflow_record>`
    returns: the plan's ``document`` as stored, and every step's record by job id."""

    document: str
    steps: dict[str, StepRecord]


WORKFLOW_FIELD = "workflow_id"
"""The job field (kept in ``Job.extra``) naming the workflow a step belongs to."""
PREVIOUS_FIELD = "previous_result"
GROUP_FIELD = "group_outcomes"


def ok_outcome(value_text: str) -> str:
    """The stored outcome of a success whose result is the JSON ``value_text``."""
    return '{"ok":true,"result":' + value_text + "}"


def failed_outcome(error: str) -> str:
    """The stored outcome of a failure."""
    return '{"ok":false,"error":' + json.dumps(error) + "}"


def cancelled_outcome(error: str) -> str:
    """The stored outcome of a cancelled step (a failure that says it was cancelled)."""
    return '{"ok":false,"error":' + json.dumps(error) + ',"cancelled":true}'


def record_ttl(result_success_ttl: float, result_failure_ttl: float) -> float:
    """Seconds a workflow's record is kept once it reached its final state: as long as the
    longest-lived of its steps' results (every one was stored by then)."""
    return max(result_success_ttl, result_failure_ttl)


def with_field(job_text: str, field: str, value_text: str) -> str:
    """A job's JSON text with one more field (``value_text`` is JSON), as a backend creates a step."""
    body = job_text.rstrip()
    assert body.endswith("}"), "a job record is a JSON object"
    return body[:-1] + "," + json.dumps(field) + ":" + value_text + "}"


class _Compiler:
    def __init__(self, workflow_id: str, make_job: Callable[[Task, str], Job]) -> None:
        self.workflow_id = workflow_id
        self.make_job = make_job
        self.steps: list[PlannedStep] = []
        self.joins: list[Join] = []

    def new_id(self) -> str:
        return str(uuid.uuid4())

    def node(self, node: Node, succ: Link, fail: JoinRef | None) -> tuple[list[str], JSON]:
        """Compile ``node`` to be followed by ``succ`` (or to report a failure to ``fail``);
        return its entry steps and its tree for the document."""
        if isinstance(node, Task):
            return self.task(node, succ, fail)
        if isinstance(node, Chain):
            return self.chain(_normalised(node.steps), succ, fail)
        if isinstance(node, Chord):
            return self.chord(node, succ, fail)
        return self.group(node, succ, fail)

    def task(self, node: Task, succ: Link, fail: JoinRef | None) -> tuple[list[str], JSON]:
        job_id = self.new_id()
        job = self.make_job(node, job_id)
        job = job.evolve(extra={**job.extra, WORKFLOW_FIELD: self.workflow_id})
        self.steps.append(PlannedStep(job, succ, Link(join=fail), initial=False))
        return [job_id], {"task": node.name, "job_id": job_id}

    def chain(self, steps: Sequence[Node], succ: Link, fail: JoinRef | None) -> tuple[list[str], JSON]:
        trees: list[JSON] = []
        entries: list[str] = []
        follow = succ
        for step in reversed(steps):
            entries, tree = self.node(step, follow, fail)
            trees.append(tree)
            follow = Link(start=tuple(entries))
        return entries, {"chain": list(reversed(trees))}

    def chord(self, node: Chord, succ: Link, fail: JoinRef | None) -> tuple[list[str], JSON]:
        join_id = self.new_id()
        then, callback = self.node(node.callback, succ, fail)
        self.joins.append(Join(join_id, len(node.group.members), node.allow_failures, tuple(then), None, fail))
        entries, members = self.members(node.group, join_id)
        return entries, {"chord": members, "callback": callback, "allow_failures": node.allow_failures}

    def group(self, node: Group, succ: Link, fail: JoinRef | None) -> tuple[list[str], JSON]:
        if not succ.start and succ.join is None and fail is None:  # nothing waits for it
            entries: list[str] = []
            trees: list[JSON] = []
            for member in node.members:
                e, t = self.node(member, Link(), None)
                entries += e
                trees.append(t)
            return entries, {"group": trees}
        join_id = self.new_id()
        self.joins.append(Join(join_id, len(node.members), False, succ.start, succ.join, fail))
        entries, members = self.members(node, join_id)
        return entries, {"group": members}

    def members(self, node: Group, join_id: str) -> tuple[list[str], list[JSON]]:
        entries: list[str] = []
        trees: list[JSON] = []
        for slot, member in enumerate(node.members):
            e, t = self.node(member, Link(join=(join_id, slot)), (join_id, slot))
            entries += e
            trees.append(t)
        return entries, trees


def _normalised(steps: Sequence[Node]) -> list[Node]:
    """Nested chains flattened; a group followed by a step becomes a chord with that step as callback."""
    flat: list[Node] = []
    for step in steps:
        flat.extend(_normalised(step.steps) if isinstance(step, Chain) else [step])
    out: list[Node] = []
    for step in flat:
        if out and isinstance(out[-1], Group):
            out[-1] = Chord(out[-1], step)
        else:
            out.append(step)
    return out


def compile_workflow(root: Node, make_job: Callable[[Task, str], Job], *, now: float) -> WorkflowPlan:
    """Compile ``root`` into a :class:`WorkflowPlan`; ``make_job(task, job_id)`` builds (and validates)
    each step's job."""
    workflow_id = str(uuid.uuid4())
    c = _Compiler(workflow_id, make_job)
    entries, tree = c.node(root, Link(), None)
    first = set(entries)
    steps = tuple(attrs.evolve(s, initial=s.job.id in first) for s in c.steps)
    document = dumps({"id": workflow_id, "created_at": from_timestamp(now).isoformat(), "tree": tree})
    return WorkflowPlan(workflow_id, document, steps, tuple(c.joins))

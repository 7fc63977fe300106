"""A tiny model of workflow semantics, and a driver that runs a workflow on a backend by hand.

The model interprets a tree of task / chain / group / chord directly (no plan, no links): it
says which steps run, what each receives and how the workflow ends. The driver submits the
same tree to a backend and settles claimed steps through the backend's
:class:`~bananas.protocols.WorkflowSteps` (in a chosen order, concurrently), so the suite can
compare what the store did with what the model says.

A task whose payload says ``"cancel": true`` is cancelled by the driver through the backend's
:class:`~bananas.protocols.Cancellation` (it runs on the routing key :data:`DOOMED`): with an
even key while it waits (``cancel`` answers ``CANCELLED``), with an odd key once claimed
(``REQUESTED``, then ``settle_cancelled``). It never runs; it ends as a dead step does, with a
cancelled outcome.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import Sequence
from typing import Any

import attrs
from hypothesis import strategies as st

from bananas.backend import Backend
from bananas.cancel import CANCELLED_BEFORE_START, CANCELLED_WHILE_RUNNING, CancelOutcome
from bananas.clock import ManualClock
from bananas.job import JSON, Job, JobResult, JobStatus
from bananas.protocols import Cancellation, WorkflowSteps
from bananas.workflows.canvas import Chain, Chord, Group, Node, Task, chain, chord, group, task
from bananas.workflows.plan import GROUP_FAILED, GROUP_FIELD, PREVIOUS_FIELD
from bananas.workflows.submit import submit_workflow

__all__ = ["DOOMED", "Run", "cancel_error", "drive", "expected", "step_result", "trees"]

DOOMED = "doomed"
"""The routing key of the tasks the driver cancels."""


def step_result(key: int, seen: JSON) -> str:
    """What the driver's handler returns for step ``key`` given what it received (kept short)."""
    digest = hashlib.sha1(json.dumps(seen, sort_keys=True).encode()).hexdigest()[:10]
    return f"{key}:{digest}"


def dead_error(key: int) -> str:
    return f"step {key} failed"


def cancel_error(key: int) -> str:
    """The error of cancelled task ``key``: even keys are cancelled waiting, odd ones running."""
    return CANCELLED_BEFORE_START if key % 2 == 0 else CANCELLED_WHILE_RUNNING


@attrs.define
class Run:
    """What ran: ``seen[key]`` is what step ``key`` received, per run (a list: it must hold one);
    the model also says which tasks end dead and which cancelled."""

    seen: dict[int, list[JSON]] = attrs.field(factory=dict)
    ok: bool = True
    value: JSON = None
    dead: set[int] = attrs.field(factory=set)
    cancelled: set[int] = attrs.field(factory=set)

    @property
    def state(self) -> str:
        """How the workflow ends: ``completed``; else ``failed`` if a step ended dead, else ``cancelled``."""
        return "completed" if self.ok else "failed" if self.dead else "cancelled"


def expected(root: Node) -> Run:
    """What the model says running ``root`` does."""
    run = Run()
    outcome = _model(root, None, run)
    run.ok = bool(outcome["ok"])
    run.value = outcome["result"] if run.ok else outcome["error"]
    return run


Outcome = dict[str, JSON]


def _model(node: Node, given: JSON, run: Run) -> Outcome:
    """How ``node`` ends, as a stored outcome; ``given`` is what its entry steps receive:
    ``None`` or ``[field, value]``."""
    if isinstance(node, Task):
        key, dead, cancel = _key(node)
        if cancel:
            run.cancelled.add(key)
            return {"ok": False, "error": cancel_error(key), "cancelled": True}
        run.seen.setdefault(key, []).append(given)
        if dead:
            run.dead.add(key)
            return {"ok": False, "error": dead_error(key)}
        return {"ok": True, "result": step_result(key, given)}
    if isinstance(node, Chain):
        steps = _normalised(node.steps)
        out: Outcome = {"ok": True, "result": None}
        for i, step in enumerate(steps):
            out = _model(step, given, run)
            if not out["ok"]:
                return out
            if i + 1 < len(steps):
                given = _after(step, out["result"])
        return out
    if isinstance(node, Group):
        outs = [_model(m, given, run) for m in node.members]
        if all(o["ok"] for o in outs):
            return {"ok": True, "result": [o["result"] for o in outs]}
        return {"ok": False, "error": GROUP_FAILED}
    outs = [_model(m, given, run) for m in node.group.members]
    if all(o["ok"] for o in outs) or node.allow_failures:
        outcomes: list[JSON] = list(outs)
        return _model(node.callback, [GROUP_FIELD, outcomes], run)
    return {"ok": False, "error": GROUP_FAILED}


def _after(step: Node, value: JSON) -> JSON:
    """What the step after ``step`` receives: the results of the group ``step`` ends with, as
    outcomes, or else ``step``'s result."""
    if _ends_with_group(step):
        assert isinstance(value, list)
        return [GROUP_FIELD, [{"ok": True, "result": v} for v in value]]
    return [PREVIOUS_FIELD, value]


def _ends_with_group(node: Node) -> bool:
    if isinstance(node, Group):
        return True
    if isinstance(node, Chain):
        return _ends_with_group(_normalised(node.steps)[-1])
    if isinstance(node, Chord):
        return _ends_with_group(node.callback)
    return False


def _normalised(steps: Sequence[Node]) -> list[Node]:
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


def _key(node: Task) -> tuple[int, bool, bool]:
    payload: Any = node.payload
    return int(payload["key"]), bool(payload.get("dead")), bool(payload.get("cancel"))


def _received(job: Job) -> JSON:
    for field in (PREVIOUS_FIELD, GROUP_FIELD):
        if field in job.extra:
            return [field, job.extra[field]]
    return None


async def drive(
    backend: Backend, clock: ManualClock, root: Node, *, rng: random.Random | None = None, flaky: bool = False
) -> tuple[str, Run]:
    """Submit ``root`` and settle its steps until nothing is left: each claimed batch settled
    concurrently in ``rng``'s order; with ``flaky``, every step's first attempt fails with a retry;
    tasks marked ``cancel`` are cancelled (see the module docs)."""
    queue = backend.queue
    assert isinstance(queue, WorkflowSteps)
    rng = rng or random.Random(0)

    def make(node: Task, job_id: str) -> Job:
        route = DOOMED if _key(node)[2] else "default"
        return Job.create(node.name, node.payload, job_id=job_id, now=clock.now(), max_retries=3, routing_key=route)

    workflow_id = await submit_workflow(backend, root, make)
    doomed = _has_cancels(root)
    run = Run()

    async def settle(job: Job) -> None:
        key = int(job.payload["key"])
        if flaky and job.attempts == 0:
            await queue.fail_step(job, "flaky first attempt", retry_at=clock.now())
            return
        seen = _received(job)
        run.seen.setdefault(key, []).append(seen)
        if job.payload.get("dead"):
            await queue.fail_step(job, dead_error(key), retry_at=None)
        else:
            result = JobResult(job_id=job.id, status=JobStatus.COMPLETED, result=step_result(key, seen),
                               completed_at=clock.now())  # fmt: skip
            await queue.complete_step(job, result)

    for _ in range(1000):
        await backend.queue.move_scheduled()
        cancelled = await _cancel_doomed(backend, queue, workflow_id) if doomed else 0
        claimed = await backend.queue.claim(["default"], limit=100, lease=60)
        if not claimed and not cancelled:
            break
        rng.shuffle(claimed)
        await asyncio.gather(*(settle(job) for job in claimed))
    return workflow_id, run


def _has_cancels(node: Node) -> bool:
    if isinstance(node, Task):
        return _key(node)[2]
    if isinstance(node, Chain):
        return any(_has_cancels(s) for s in node.steps)
    if isinstance(node, Group):
        return any(_has_cancels(m) for m in node.members)
    return _has_cancels(node.group) or _has_cancels(node.callback)


async def _cancel_doomed(backend: Backend, queue: WorkflowSteps, workflow_id: str) -> int:
    """Cancel the created tasks marked ``cancel``: even keys while they wait, odd ones once
    claimed (then settled as their worker would); how many."""
    cancel = backend.queue
    assert isinstance(cancel, Cancellation), "cancelling steps needs the cancel capability"
    done, found = 0, True
    while found:  # a cancel may create more steps (a chord allowing failures): look again
        found = False
        record = await queue.workflow_record(workflow_id)
        assert record is not None
        for job_id, step in record.steps.items():
            if step.state != "created":
                continue
            job = await backend.queue.get_job(job_id)
            if job.routing_key == DOOMED and job.status is JobStatus.PENDING and int(job.payload["key"]) % 2 == 0:
                assert await cancel.cancel(job_id) is CancelOutcome.CANCELLED
                done, found = done + 1, True
    for job in await backend.queue.claim([DOOMED], limit=100, lease=60):
        assert int(job.payload["key"]) % 2 == 1, "a task cancelled while it waited was claimed"
        assert await cancel.cancel(job.id) is CancelOutcome.REQUESTED
        assert await cancel.cancel_requested([job]) == {job.id}
        await cancel.settle_cancelled(job, CANCELLED_WHILE_RUNNING)
        done += 1
    return done


def trees(max_leaves: int = 8, *, cancels: bool = False) -> st.SearchStrategy[Node]:
    """Random nestings of task / chain / group / chord; each task's payload is ``{"key": n, "dead":
    bool, "cancel": bool}`` (keys made unique by :func:`numbered`; ``cancel`` only with ``cancels``)."""
    kinds = st.sampled_from(["ok", "dead", "cancel"] if cancels else ["ok", "dead"])
    leaves = kinds.map(lambda kind: task("step", {"key": 0, "dead": kind == "dead", "cancel": kind == "cancel"}))

    def extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
        parts = st.lists(children, min_size=1, max_size=3)
        return st.one_of(
            parts.map(lambda p: chain(*p)),
            parts.map(lambda p: group(*p)),
            st.tuples(parts, children, st.booleans()).map(lambda t: chord(group(*t[0]), t[1], allow_failures=t[2])),
        )

    return st.recursive(leaves, extend, max_leaves=max_leaves).map(numbered)


def numbered(root: Node) -> Node:
    """``root`` with every task's ``key`` replaced by its position (0, 1, ...)."""
    counter = iter(range(10**6))

    def walk(node: Node) -> Node:
        if isinstance(node, Task):
            payload: Any = node.payload
            fields = {"dead": bool(payload.get("dead")), "cancel": bool(payload.get("cancel"))}
            return Task(node.name, {"key": next(counter), **fields}, node.options)
        if isinstance(node, Chain):
            return Chain(tuple(walk(s) for s in node.steps))
        if isinstance(node, Group):
            return Group(tuple(walk(m) for m in node.members))
        return Chord(Group(tuple(walk(m) for m in node.group.members)), walk(node.callback), node.allow_failures)

    return walk(root)

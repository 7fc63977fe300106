"""A tiny model of workflow semantics, and a driver that runs a workflow on a backend by hand.

The model interprets a tree of task / chain / group / chord directly (no plan, no links): it
says which steps run, what each receives and how the workflow ends. The driver submits the
same tree to a backend and settles claimed steps through the backend's
:class:`~bananas.protocols.WorkflowSteps` (in a chosen order, concurrently), so the suite can
compare what the store did with what the model says.
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
from bananas.clock import ManualClock
from bananas.job import JSON, Job, JobResult, JobStatus
from bananas.protocols import WorkflowSteps
from bananas.workflows.canvas import Chain, Chord, Group, Node, Task, chain, chord, group, task
from bananas.workflows.plan import GROUP_FAILED, GROUP_FIELD, PREVIOUS_FIELD
from bananas.workflows.submit import submit_workflow

__all__ = ["Run", "drive", "expected", "step_result", "trees"]


def step_result(key: int, seen: JSON) -> str:
    """What the driver's handler returns for step ``key`` given what it received (kept short)."""
    digest = hashlib.sha1(json.dumps(seen, sort_keys=True).encode()).hexdigest()[:10]
    return f"{key}:{digest}"


def dead_error(key: int) -> str:
    return f"step {key} failed"


@attrs.define
class Run:
    """What ran: ``seen[key]`` is what step ``key`` received, per run (a list: it must hold one)."""

    seen: dict[int, list[JSON]] = attrs.field(factory=dict)
    ok: bool = True
    value: JSON = None


def expected(root: Node) -> Run:
    """What the model says running ``root`` does."""
    run = Run()
    run.ok, run.value = _model(root, None, run)
    return run


def _model(node: Node, given: JSON, run: Run) -> tuple[bool, JSON]:
    """``given`` is what the node's entry steps receive: ``None`` or ``[field, value]``."""
    if isinstance(node, Task):
        key, dead = _key(node)
        run.seen.setdefault(key, []).append(given)
        return (False, dead_error(key)) if dead else (True, step_result(key, given))
    if isinstance(node, Chain):
        steps = _normalised(node.steps)
        ok, value = True, None
        for i, step in enumerate(steps):
            ok, value = _model(step, given, run)
            if not ok:
                return False, value
            if i + 1 < len(steps):
                given = _after(step, value)
        return ok, value
    if isinstance(node, Group):
        outs = [_model(m, given, run) for m in node.members]
        if all(ok for ok, _ in outs):
            return True, [v for _, v in outs]
        return False, GROUP_FAILED
    outs = [_model(m, given, run) for m in node.group.members]
    if all(ok for ok, _ in outs) or node.allow_failures:
        outcomes: list[JSON] = [{"ok": True, "result": v} if ok else {"ok": False, "error": v} for ok, v in outs]
        return _model(node.callback, [GROUP_FIELD, outcomes], run)
    return False, GROUP_FAILED


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


def _key(node: Task) -> tuple[int, bool]:
    payload: Any = node.payload
    return int(payload["key"]), bool(payload.get("dead"))


def _received(job: Job) -> JSON:
    for field in (PREVIOUS_FIELD, GROUP_FIELD):
        if field in job.extra:
            return [field, job.extra[field]]
    return None


async def drive(
    backend: Backend, clock: ManualClock, root: Node, *, rng: random.Random | None = None, flaky: bool = False
) -> tuple[str, Run]:
    """Submit ``root`` and settle its steps until nothing is left: each claimed batch settled
    concurrently in ``rng``'s order; with ``flaky``, every step's first attempt fails with a retry."""
    queue = backend.queue
    assert isinstance(queue, WorkflowSteps)
    rng = rng or random.Random(0)

    def make(node: Task, job_id: str) -> Job:
        return Job.create(node.name, node.payload, job_id=job_id, now=clock.now(), max_retries=3)

    workflow_id = await submit_workflow(backend, root, make)
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
        claimed = await backend.queue.claim(["default"], limit=100, lease=60)
        if not claimed:
            break
        rng.shuffle(claimed)
        await asyncio.gather(*(settle(job) for job in claimed))
    return workflow_id, run


def trees(max_leaves: int = 8) -> st.SearchStrategy[Node]:
    """Random nestings of task / chain / group / chord; each task's payload is ``{"key": n, "dead": bool}``
    (keys made unique by :func:`numbered`)."""
    leaves = st.booleans().map(lambda dead: task("step", {"key": 0, "dead": dead}))

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
            return Task(node.name, {"key": next(counter), "dead": bool(payload.get("dead"))}, node.options)
        if isinstance(node, Chain):
            return Chain(tuple(walk(s) for s in node.steps))
        if isinstance(node, Group):
            return Group(tuple(walk(m) for m in node.members))
        return Chord(Group(tuple(walk(m) for m in node.group.members)), walk(node.callback), node.allow_failures)

    return walk(root)

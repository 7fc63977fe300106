"""The compiled plan of any nesting is well formed: every link names a step or a join slot that
exists, every step has exactly one thing that creates it, every join slot exactly one member
that fills it on success, and the document names exactly the steps."""

from __future__ import annotations

import json
from collections import Counter

from bananas import Job
from bananas.testing.workflow_model import trees
from bananas.workflows.canvas import Node, Task
from bananas.workflows.plan import WORKFLOW_FIELD, compile_workflow
from bananas.workflows.view import _job_ids
from hypothesis import given, settings


def _compile(root: Node):  # type: ignore[no-untyped-def]
    def make(node: Task, job_id: str) -> Job:
        return Job.create(node.name, node.payload, job_id=job_id)

    return compile_workflow(root, make, now=0.0)


def _tasks(root: Node) -> int:
    if isinstance(root, Task):
        return 1
    parts = getattr(root, "steps", None) or getattr(root, "members", None)
    if parts is not None:
        return sum(_tasks(p) for p in parts)
    return _tasks(root.group) + _tasks(root.callback)  # type: ignore[union-attr]


@settings(max_examples=200, deadline=None)
@given(root=trees(max_leaves=12))
def test_every_plan_is_well_formed(root: Node) -> None:
    plan = _compile(root)
    steps = {s.job.id: s for s in plan.steps}
    joins = {j.id: j for j in plan.joins}
    assert len(steps) == len(plan.steps) == _tasks(root)
    assert all(s.job.extra[WORKFLOW_FIELD] == plan.id for s in plan.steps)

    creators: Counter[str] = Counter(s.job.id for s in plan.steps if s.initial)
    fills: Counter[tuple[str, int]] = Counter()
    for s in plan.steps:
        creators.update(s.on_success.start)
        assert not s.on_dead.start, "a dead step must never start anything"
        for link in (s.on_success, s.on_dead):
            if link.join is not None:
                join_id, slot = link.join
                assert join_id in joins and 0 <= slot < joins[join_id].size
        if s.on_success.join is not None:
            fills[s.on_success.join] += 1
    for j in plan.joins:
        creators.update(j.then)
        for ref in (j.ok_up, j.fail_up):
            if ref is not None:
                assert ref[0] in joins and 0 <= ref[1] < joins[ref[0]].size
        if j.ok_up is not None:
            fills[j.ok_up] += 1
    assert set(creators) == set(steps) and set(creators.values()) == {1}, "each step has exactly one creator"
    every_slot = {(j.id, i) for j in plan.joins for i in range(j.size)}
    assert set(fills) == every_slot and set(fills.values()) <= {1}, "each join slot is filled by exactly one member"

    document = json.loads(plan.document)
    assert document["id"] == plan.id
    assert sorted(_job_ids(document["tree"])) == sorted(steps)

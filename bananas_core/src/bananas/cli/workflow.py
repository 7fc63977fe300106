"""``bananas workflow ID``: a workflow as a tree, each step with its state."""

from __future__ import annotations

import argparse
import json
from collections import Counter
from typing import Any

import attrs

from bananas.cancel import CancelOutcome
from bananas.cli.common import add_common, open_from_args, seconds_arg
from bananas.cli.output import emit_json, shorten
from bananas.errors import Timeout
from bananas.job import JSON
from bananas.workflows.submit import cancel_workflow, get_workflow, wait_for_workflow
from bananas.workflows.view import StepInfo, WorkflowInfo

__all__ = ["register", "render_tree", "show_workflow"]


def register(sub: Any) -> None:
    """Add the ``workflow`` command."""
    p = sub.add_parser(
        "workflow",
        help="show a workflow as a tree",
        description="Show a workflow (chain, group, chord) as a tree, each step with its state. "
        "Exits 1 when the workflow failed or was cancelled, or is still running after --wait.",
    )
    p.add_argument("id", help="workflow id (what client.submit returned)")
    p.add_argument("--wait", type=seconds_arg, metavar="SECONDS", help="wait up to SECONDS for it to finish")
    p.add_argument(
        "--cancel",
        action="store_true",
        help="first cancel every step that has not finished (steps not started never run; running ones are stopped)",
    )
    add_common(p)
    p.set_defaults(run=show_workflow)


async def show_workflow(args: argparse.Namespace) -> int:
    """``bananas workflow ID``: the tree, or JSON with ``--json``."""
    async with open_from_args(args, read_only=not args.cancel) as backend:
        if args.cancel:
            outcomes = Counter((await cancel_workflow(backend, args.id)).values())
            if not args.json:
                print(_cancel_line(outcomes))
        info = await get_workflow(backend, args.id)
        if args.wait is not None and not info.done:
            try:
                info = await wait_for_workflow(backend, args.id, args.wait)
            except Timeout:
                info = await get_workflow(backend, args.id)
    if args.json:
        emit_json(_as_dict(info))
    else:
        print("\n".join(render_tree(info)))
    return 0 if info.state == "completed" else 1


def _cancel_line(outcomes: Counter[CancelOutcome]) -> str:
    if not outcomes:
        return "nothing to cancel: the workflow had already finished"
    stopped, asked = outcomes[CancelOutcome.CANCELLED], outcomes[CancelOutcome.REQUESTED]
    line = f"cancelled {stopped} step(s) not started"
    if asked:
        line += f", asked the workers of {asked} running step(s) to stop"
    if outcomes[CancelOutcome.ALREADY_FINISHED]:
        line += f"; {outcomes[CancelOutcome.ALREADY_FINISHED]} finished meanwhile"
    return line


def _as_dict(info: WorkflowInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "state": info.state,
        "created_at": info.created_at,
        "result": info.result,
        "tree": info.tree,
        "steps": [attrs.asdict(s) for s in info.step_list()],
    }


def render_tree(info: WorkflowInfo) -> list[str]:
    """The workflow as lines of a tree: the header, then one line per node."""
    lines = [f"workflow {info.id}: {info.state}" + (f" (created {info.created_at})" if info.created_at else "")]
    lines += _node(info.tree, info.steps, "", "")
    if info.state == "completed":
        lines.append(f"result: {shorten(json.dumps(info.result), 200)}")
    return lines


def _step_line(step: StepInfo) -> str:
    text = f"{step.name} [{step.state}] {step.job_id}"
    if step.state == "completed":
        text += f" -> {shorten(json.dumps(step.result), 60)}"
    elif step.error:
        text += f": {shorten(step.error, 80)}"
    elif step.note:
        text += f" ({shorten(step.note, 80)})"
    return text


def _node(tree: JSON, steps: Any, first: str, rest: str) -> list[str]:
    assert isinstance(tree, dict)
    if "job_id" in tree:
        return [first + _step_line(steps[str(tree["job_id"])])]
    if "chain" in tree:
        return [first + "chain", *_children(list(tree["chain"]), steps, rest)]
    if "chord" in tree:
        label = "chord (allow failures)" if tree.get("allow_failures") else "chord"
        group = {"group": tree["chord"]}
        return [first + label, *_children([group, {"callback": tree["callback"]}], steps, rest)]
    if "callback" in tree:
        return _node(tree["callback"], steps, first + "then: ", rest)
    return [first + "group", *_children(list(tree["group"]), steps, rest)]


def _children(parts: list[JSON], steps: Any, rest: str) -> list[str]:
    out: list[str] = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        out += _node(part, steps, rest + ("└── " if last else "├── "), rest + ("    " if last else "│   "))
    return out

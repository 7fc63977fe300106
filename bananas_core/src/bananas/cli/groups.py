"""``bananas groups``: list, set and remove the limits of job groups (see :mod:`bananas.groups`)."""

from __future__ import annotations

import argparse
from typing import Any

from bananas.capabilities import Capability
from bananas.cli.common import UsageError, add_common, count_arg, open_from_args
from bananas.cli.output import emit_json, print_table
from bananas.errors import InvalidGroup
from bananas.groups import DEFAULT_GROUP, MAX_RUNNING_LIMIT, GroupLimit, validate_limit_target
from bananas.protocols import GroupLimits

__all__ = ["NO_LIMIT_EXIT", "register"]

NO_LIMIT_EXIT = 1
"""The exit code of ``remove`` for a group that had no limit stored."""


def register(sub: Any) -> None:
    """Add ``groups`` to the ``bananas`` subparsers."""
    p = sub.add_parser(
        "groups",
        help="limits of job groups",
        description="List, set or remove the limits of job groups (jobs submitted with a group). "
        "The group '*' holds the default of every group without a limit of its own. With no ACTION: list. "
        "Exit 0 ok, 1 remove of a group with no limit (or an unreachable backend), 2 a bad name or value.",
    )
    add_common(p, group=True)
    p.set_defaults(run=groups_list)
    actions = p.add_subparsers(dest="groups_command", metavar="ACTION", parser_class=type(p))
    q = actions.add_parser("list", help="every stored limit, '*' (the default) included")
    add_common(q)
    q.set_defaults(run=groups_list)
    q = actions.add_parser(
        "set",
        help="store a group's limit (replacing its old one)",
        description="Store the limit of NAME ('*': the default of every group without its own), replacing "
        "any: a limit not given is no limit of that kind.",
    )
    q.add_argument("name", help="the group, or '*' for the default")
    q.add_argument(
        "--max-running",
        type=count_arg(0, MAX_RUNNING_LIMIT),
        metavar="N",
        help="at most N of its jobs running at once across all workers (0 pauses the group)",
    )
    q.add_argument(
        "--rate",
        metavar="COUNT/UNIT",
        help="at most COUNT starts per second, minute or hour, spaced evenly: 10/s, 100/m, 5/h",
    )
    add_common(q)
    q.set_defaults(run=groups_set)
    q = actions.add_parser("remove", help="forget a group's limit (it falls back on '*')")
    q.add_argument("name", help="the group, or '*' for the default")
    add_common(q)
    q.set_defaults(run=groups_remove)


def _queue(backend: Any) -> GroupLimits:
    backend.require(Capability.GROUPS, "group limits")
    queue = backend.queue
    if not isinstance(queue, GroupLimits):
        raise TypeError(f"the {backend.name!r} backend declares 'groups' but its queue is not a GroupLimits")
    return queue


def _target(name: str) -> str:
    try:
        return validate_limit_target(name)
    except InvalidGroup as exc:
        raise UsageError(str(exc)) from None


def _row(group: str, limit: GroupLimit) -> dict[str, Any]:
    return {"group": group, "max_running": limit.max_running, "rate": None if limit.rate is None else str(limit.rate)}


async def groups_list(args: argparse.Namespace) -> int:
    """``bananas groups [list]``: one line per stored limit."""
    async with open_from_args(args, read_only=True) as backend:
        limits = await _queue(backend).group_limits()
    if args.json:
        emit_json([_row(group, limit) for group, limit in limits.items()])
    elif not limits:
        print("no group limits stored: every group runs without limits")
    else:
        rows = [
            (
                group + (" (default)" if group == DEFAULT_GROUP else ""),
                "-" if limit.max_running is None else limit.max_running,
                "-" if limit.rate is None else str(limit.rate),
            )
            for group, limit in limits.items()
        ]
        print_table(["GROUP", "MAX RUNNING", "RATE"], rows)
    return 0


async def groups_set(args: argparse.Namespace) -> int:
    """``bananas groups set NAME [--max-running N] [--rate R]``: store the limit, print it."""
    target = _target(args.name)
    try:
        limit = GroupLimit(max_running=args.max_running, rate=args.rate)
    except InvalidGroup as exc:
        raise UsageError(str(exc).replace("max_running", "--max-running")) from None
    async with open_from_args(args, lasting="stores") as backend:
        await _queue(backend).set_group_limit(target, limit)
    if args.json:
        emit_json(_row(target, limit))
    else:
        print(f"group {target}: {limit.describe()}")
    return 0


async def groups_remove(args: argparse.Namespace) -> int:
    """``bananas groups remove NAME``: exit 0 removed, 1 there was none."""
    target = _target(args.name)
    async with open_from_args(args, lasting="removes") as backend:
        removed = await _queue(backend).remove_group_limit(target)
    if args.json:
        emit_json({"group": target, "removed": removed})
    elif removed:
        print(f"group {target}: limit removed" + ("" if target == DEFAULT_GROUP else " (the default '*' applies)"))
    else:
        print(f"group {target} has no limit stored: nothing removed")
    return 0 if removed else NO_LIMIT_EXIT

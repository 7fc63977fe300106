"""The building blocks of a workflow: :func:`task`, :func:`chain`, :func:`group`, :func:`chord`.

They are plain descriptions (nothing is written until ``client.submit(workflow)``) and nest
freely: a chain whose step is a chord, a group of chains, a chord whose callback is a chain.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeAlias

import attrs

from bananas.errors import InvalidJob
from bananas.job import JSON

__all__ = ["Chain", "Chord", "Group", "Node", "Task", "chain", "chord", "group", "task"]

TASK_OPTIONS = frozenset({"priority", "routing_key", "description", "max_retries"})
"""The options of :func:`task`: those of ``submit_job`` that apply to a step."""


@attrs.frozen
class Task:
    """One job of a workflow: a handler name, a JSON payload and submit options."""

    name: str
    payload: JSON = None
    options: tuple[tuple[str, Any], ...] = ()


@attrs.frozen
class Chain:
    """Steps run one after another; each step receives the previous one's result."""

    steps: tuple[Node, ...]


@attrs.frozen
class Group:
    """Members run in parallel."""

    members: tuple[Node, ...]


@attrs.frozen
class Chord:
    """A group, then ``callback`` once every member reached a final state, with their results in order."""

    group: Group
    callback: Node
    allow_failures: bool = False


Node: TypeAlias = Task | Chain | Group | Chord
"""Anything :meth:`bananas.AsyncClient.submit` takes."""

NODE_TYPES = (Task, Chain, Group, Chord)


def _nodes(parts: Iterable[Any], what: str) -> tuple[Node, ...]:
    out = tuple(parts)
    if not out:
        raise InvalidJob(f"{what} needs at least one step")
    for i, part in enumerate(out):
        if not isinstance(part, NODE_TYPES):
            raise InvalidJob(
                f"{what} step {i} is a {type(part).__name__}; steps are task(...), chain(...), group(...) or chord(...)"
            )
    return out


def task(name: str, payload: JSON = None, **options: Any) -> Task:
    """One job: ``name`` and ``payload`` as in ``submit_job``, and its options ``priority``,
    ``routing_key``, ``description`` and ``max_retries``. Raises :class:`~bananas.errors.InvalidJob`
    for any other option."""
    unknown = sorted(set(options) - TASK_OPTIONS)
    if unknown:
        raise InvalidJob(f"task() got {', '.join(unknown)}; its options are {', '.join(sorted(TASK_OPTIONS))}")
    if not isinstance(name, str) or not name:
        raise InvalidJob(f"task() needs a job name (a non-empty string), got {name!r}")
    return Task(name, payload, tuple(sorted(options.items())))


def chain(*steps: Node) -> Chain:
    """Run ``steps`` one after another; a step gets the previous one's result in ``ctx.previous_result``
    (a step after a group, or after anything ending in a group, gets that group's results in
    ``ctx.group_results``)."""
    return Chain(_nodes(steps, "chain()"))


def group(*members: Node) -> Group:
    """Run ``members`` in parallel (also ``group(iterable)``)."""
    if len(members) == 1 and not isinstance(members[0], NODE_TYPES) and isinstance(members[0], Iterable):
        return Group(_nodes(members[0], "group()"))
    return Group(_nodes(members, "group()"))


def chord(members: Group | Iterable[Node], callback: Node, *, allow_failures: bool = False) -> Chord:
    """Run the group, then ``callback`` once every member reached a final state, with the members'
    results in ``ctx.group_results`` (member order). By default the callback runs only if every
    member succeeded; with ``allow_failures=True`` it runs anyway and ``ctx.group_outcomes`` says
    how each member ended."""
    g = members if isinstance(members, Group) else group(*members)
    if not isinstance(callback, NODE_TYPES):
        raise InvalidJob(f"chord() callback is a {type(callback).__name__}; use task(...), chain(...), group(...)")
    return Chord(g, callback, bool(allow_failures))

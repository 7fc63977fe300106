"""A group commit on PostgreSQL as few statements: each kind of outcome written more than
once (completions, completions with their results, results) is one statement over arrays
(:data:`~bananas_sql.queries.postgres.COMBINED`); each write still gets its own answer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bananas_sql.batch import Write
from bananas_sql.queries.postgres import COMBINED

Step = tuple[str, Mapping[str, Any], list[int]]
"""A statement, its parameters, and the indexes of the writes it carries (one, or several combined)."""


def plan(writes: Sequence[Write], single: Mapping[str, str], combined: Mapping[str, str]) -> list[Step]:
    """Statements for ``writes``: each kind in :data:`COMBINED` written more than once becomes
    one statement (a repeated id is left to its own statement); every other write runs alone."""
    steps: list[Step] = []
    groups: dict[str, list[int]] = {}
    for i, (name, _params) in enumerate(writes):
        groups.setdefault(name if name in combined else f"#{i}", []).append(i)
    for key, indexes in groups.items():
        ids = [writes[i][1]["id"] for i in indexes] if key in combined else []
        if len(indexes) > 1 and len(set(ids)) == len(ids):
            _template, columns = COMBINED[key]
            arrays = {col: [writes[i][1][col] for i in indexes] for col, _kind in columns}
            steps.append((combined[key], arrays, indexes))
        else:
            for i in indexes:
                name, params = writes[i]
                steps.append((single[name], params, [i]))
    return steps

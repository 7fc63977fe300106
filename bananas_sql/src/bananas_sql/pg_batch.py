"""Many outcomes of one kind in one PostgreSQL statement: a group commit of N successes
(completion and result, ``complete_and_store``) runs one statement instead of N (each
statement costs client and server CPU).

Each input write still gets its own answer: the combined statement returns the ids it touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bananas_sql.batch import Write

_COMBINED: Mapping[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    # name: (statement over unnest()ed arrays, (parameter, array type) in column order)
    # Each completion fenced by its own lease token: a stale one is left out, the others apply.
    "complete": (
        "UPDATE {jobs} AS j SET state = 'completed', data = v.data, lease_until = NULL, lease_token = NULL, "
        "finished_at = v.now, expires_at = v.expires_at FROM unnest({arrays}) AS v(id, token, data, now, expires_at) "
        "WHERE j.id = v.id AND j.state = 'processing' AND j.lease_token = v.token RETURNING j.id",
        (("id", "text"), ("token", "text"), ("data", "text"), ("now", "float8"), ("expires_at", "float8")),
    ),
    # Results only for the jobs the UPDATE found: a lost job gets no result.
    "complete_and_store": (
        "WITH v AS (SELECT * FROM unnest({arrays}) AS v(id, token, data, now, expires_at, result, "
        "result_expires_at)), "
        "done AS (UPDATE {jobs} AS j SET state = 'completed', data = v.data, lease_until = NULL, lease_token = NULL, "
        "finished_at = v.now, expires_at = v.expires_at FROM v "
        "WHERE j.id = v.id AND j.state = 'processing' AND j.lease_token = v.token RETURNING j.id) "
        "INSERT INTO {results} AS r (job_id, data, expires_at) "
        "SELECT v.id, v.result, v.result_expires_at FROM v JOIN done ON done.id = v.id "
        "ON CONFLICT (job_id) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at RETURNING r.job_id",
        (
            ("id", "text"),
            ("token", "text"),
            ("data", "text"),
            ("now", "float8"),
            ("expires_at", "float8"),
            ("result", "text"),
            ("result_expires_at", "float8"),
        ),
    ),
    "store_result": (
        "INSERT INTO {results} AS r (job_id, data, expires_at) SELECT * FROM unnest({arrays}) "
        "ON CONFLICT (job_id) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at RETURNING r.job_id",
        (("id", "text"), ("data", "text"), ("expires_at", "float8")),
    ),
}


def insert_many_sql(names: Mapping[str, str]) -> str:
    """Jobs from arrays in one INSERT; positions drawn in array order (FIFO within the batch).

    Arrays go in binary (``%(x)b``): in text form every JSON document would be escaped.
    """
    return (
        "INSERT INTO {jobs} (id, name, state, routing_key, priority, position, run_at, data) "
        "SELECT v.id, v.name, v.state, v.routing_key, v.priority, nextval('{position_seq}'), v.run_at, v.data "
        "FROM unnest(CAST(%(id)b AS text[]), CAST(%(name)b AS text[]), CAST(%(state)b AS text[]), "
        "CAST(%(routing_key)b AS text[]), CAST(%(priority)b AS smallint[]), CAST(%(run_at)b AS float8[]), "
        "CAST(%(data)b AS text[])) WITH ORDINALITY AS v(id, name, state, routing_key, priority, run_at, data, n) "
        "ORDER BY v.n"
    ).format(**names)


def single_sql(names: Mapping[str, str]) -> dict[str, str]:
    """Writes that are a chain of statements elsewhere (:data:`~bananas_sql.batch.CHAINS`) as
    one statement each (psycopg parameter style), returning a row iff the first part applied."""
    return {
        "complete_and_store": (
            "WITH done AS (UPDATE {jobs} SET state = 'completed', data = %(data)s, lease_until = NULL, "
            "lease_token = NULL, finished_at = %(now)s, expires_at = %(expires_at)s "
            "WHERE id = %(id)s AND state = 'processing' AND lease_token = %(token)s RETURNING id) "
            "INSERT INTO {results} AS r (job_id, data, expires_at) "
            "SELECT id, CAST(%(result)s AS text), CAST(%(result_expires_at)s AS float8) FROM done "
            "ON CONFLICT (job_id) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at "
            "RETURNING r.job_id"
        ).format(**names)
    }


def renew_sql(names: Mapping[str, str]) -> str:
    """Lease renewal of ``(id, lease token)`` arrays in one statement, each fenced by its token."""
    return (
        "UPDATE {jobs} AS j SET lease_until = %(until)s "
        "FROM unnest(CAST(%(ids)s AS text[]), CAST(%(tokens)s AS text[])) AS v(id, token) "
        "WHERE j.id = v.id AND j.state = 'processing' AND j.lease_token = v.token RETURNING j.id"
    ).format(**names)


def combined_sql(names: Mapping[str, str]) -> dict[str, str]:
    """The combined statements (psycopg parameter style) for one namespace."""
    out = {}
    for name, (template, columns) in _COMBINED.items():
        arrays = ", ".join(f"CAST(%({col})b AS {kind}[])" for col, kind in columns)
        out[name] = template.format(arrays=arrays, **names)
    return out


Step = tuple[str, Mapping[str, Any], list[int]]
"""A statement, its parameters, and the indexes of the writes it carries (one, or several combined)."""


def plan(writes: Sequence[Write], single: Mapping[str, str], combined: Mapping[str, str]) -> list[Step]:
    """Statements for ``writes``: each kind in :data:`_COMBINED` written more than once becomes
    one statement (a repeated id is left to its own statement); every other write runs alone."""
    steps: list[Step] = []
    groups: dict[str, list[int]] = {}
    for i, (name, _params) in enumerate(writes):
        groups.setdefault(name if name in combined else f"#{i}", []).append(i)
    for key, indexes in groups.items():
        ids = [writes[i][1]["id"] for i in indexes] if key in combined else []
        if len(indexes) > 1 and len(set(ids)) == len(ids):
            _template, columns = _COMBINED[key]
            arrays = {col: [writes[i][1][col] for i in indexes] for col, _kind in columns}
            steps.append((combined[key], arrays, indexes))
        else:
            for i in indexes:
                name, params = writes[i]
                steps.append((single[name], params, [i]))
    return steps

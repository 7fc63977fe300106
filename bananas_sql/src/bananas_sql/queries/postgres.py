"""PostgreSQL's own statements: the claim, the hand-off and writes over arrays.

Parameters are in psycopg's style (``%(name)s``; ``%(name)b`` for arrays sent in binary).
"""

from __future__ import annotations

from collections.abc import Mapping

from bananas_sql.queries import PROCESSING

FRAGMENTS: Mapping[str, str] = {
    "next_pos": "nextval('{position_seq}')",
    "front_pos": "-nextval('{position_seq}')",
    "lock": "FOR UPDATE SKIP LOCKED",
}
"""PostgreSQL's parts of the shared statements (see :mod:`bananas_sql.queries`)."""

_CLAIM_ONE_KEY = """
UPDATE {jobs} SET state = 'processing', lease_until = %(lease_until)s, lease_token = %(lease_token)s
WHERE seq = ANY(ARRAY(
    SELECT seq FROM {jobs}
    WHERE state IN ('ready', 'scheduled') AND run_at <= %(now)s AND routing_key = %(k{i})s
        AND group_name IS NULL AND NOT (SELECT grouped FROM g) {priority_filter} {name_filter}
    ORDER BY priority, position
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
))
RETURNING seq, data, id, {i} AS key_rank, priority, position"""
"""The claim of one routing key; claims return ``(seq, data, id, key_rank, priority, position)``."""

_GROUPED = """g AS (SELECT EXISTS (SELECT 1 FROM {jobs} WHERE state IN ('ready', 'scheduled')
    AND group_name IS NOT NULL AND run_at <= %(now)s AND routing_key IN ({keys})) AS grouped)"""
"""Whether a grouped job of the claim's routing keys is due (one probe of ``jobs_grouped``): if
so the claim takes nothing and returns a mark (a row whose ``seq`` is NULL), and the queue claims through the
group rules instead (see :mod:`bananas_sql.groups`)."""

_MARK = "SELECT NULL, NULL, NULL, -1, NULL, NULL FROM g WHERE grouped"


def _grouped(jobs: str, n_keys: int) -> str:
    return _GROUPED.format(jobs=jobs, keys=", ".join(f"%(k{i})s" for i in range(n_keys)))


def claim_sql(jobs: str, n_keys: int, all_priorities: bool, by_name: bool) -> str:
    """One statement claiming up to ``%(limit)s`` jobs over ``n_keys`` routing keys in order.

    Each key is a data-modifying CTE walking the partial index in (priority, position)
    order, limited to what the keys before it left; so no claim sorts the whole backlog.
    The claimed rows are found again by primary key from an ARRAY of their ``seq``: with
    ``seq IN (subquery)`` PostgreSQL's generic plan for the prepared statement (which it
    may switch to after five executions) hash-joins the subquery against a sequential
    scan of the whole table, 200 ms with a million jobs (bench/pg_claim_probe.py).

    Jobs in a group are not claimed here: while one of the keys has a grouped job due, the
    statement claims nothing and returns one row whose ``seq`` is NULL (see ``_GROUPED``).
    """
    parts = _claim_parts(jobs, n_keys, all_priorities, by_name)
    ctes = ",\n".join([_grouped(jobs, n_keys)] + [f"c{i} AS ({body})" for i, body in enumerate(parts)])
    arms = [f"SELECT * FROM c{i}" for i in range(n_keys)] + [_MARK]
    return f"WITH {ctes}\n" + "\nUNION ALL ".join(arms)


def _claim_parts(jobs: str, n_keys: int, all_priorities: bool, by_name: bool) -> list[str]:
    """The claim of each routing key, in order; each a CTE named ``c{i}`` (see :func:`claim_sql`)."""
    priority_filter = "" if all_priorities else "AND priority = ANY(CAST(%(prios)s AS smallint[]))"
    name_filter = "AND name = ANY(CAST(%(names)s AS text[]))" if by_name else ""
    parts = []
    for i in range(n_keys):
        taken = "".join(f" - (SELECT count(*) FROM c{j})" for j in range(i))
        limit = f"(%(limit)s{taken})" if taken else "%(limit)s"
        body = _CLAIM_ONE_KEY.format(
            jobs=jobs, i=i, limit=limit, priority_filter=priority_filter, name_filter=name_filter
        )
        parts.append(body)
    return parts


def claim_or_register_sql(jobs: str, waiters: str, n_keys: int, all_priorities: bool) -> str:
    """:func:`claim_sql` that also registers the claiming worker as a waiter when it finds
    nothing and ``%(register)s`` is true, and removes its registration otherwise.

    While a grouped job is due it neither claims nor registers, and returns the mark of
    :func:`claim_sql`. The registration and the claim share one snapshot: a job committed after it was taken is
    seen by the trigger (and handed over) or by this claim; one committed in between wakes the
    worker through the ordinary work channel, which it listens on too.
    """
    parts = _claim_parts(jobs, n_keys, all_priorities, False)
    ctes = [_grouped(jobs, n_keys)] + [f"c{i} AS ({body})" for i, body in enumerate(parts)]
    ctes.append("c AS (" + " UNION ALL ".join(f"SELECT * FROM c{i}" for i in range(n_keys)) + ")")
    ctes.append(
        f"r AS (INSERT INTO {waiters} (token, channel, slot, routing_keys, priorities, lease, clock_offset, until, "
        "fenced) SELECT %(token)s, %(channel)s, %(slot)s, CAST(%(wkeys)s AS text[]), CAST(%(wprios)s AS smallint[]), "
        "%(lease)s, %(now)s - s.t, s.t + %(wait)s, true "
        "FROM (SELECT extract(epoch FROM clock_timestamp())::float8 AS t) AS s "
        "WHERE %(register)s AND NOT EXISTS (SELECT 1 FROM c) AND NOT (SELECT grouped FROM g) "
        "ON CONFLICT (token) DO UPDATE SET channel = excluded.channel, slot = excluded.slot, "
        "routing_keys = excluded.routing_keys, priorities = excluded.priorities, lease = excluded.lease, "
        "clock_offset = excluded.clock_offset, until = excluded.until, fenced = true)"
    )
    ctes.append(
        f"d AS (DELETE FROM {waiters} WHERE token = %(token)s "
        "AND NOT (%(register)s AND NOT EXISTS (SELECT 1 FROM c) AND NOT (SELECT grouped FROM g)))"
    )
    return "WITH " + ",\n".join(ctes) + f"\nSELECT * FROM c UNION ALL {_MARK}"


# A batch's row still held under its lease token (see PROCESSING).
_HELD_BY_V = f"j.state = {PROCESSING} AND j.lease_token = v.token"

_TEMPLATES: Mapping[str, str] = {
    "unregister": "DELETE FROM {waiters} WHERE token = %(token)s",
    # Jobs handed over too large to travel with their notification, still held under their token.
    "handed_rows": (
        "SELECT j.seq, j.data, j.id FROM {jobs} AS j "
        "JOIN unnest(CAST(%(seqs)s AS bigint[]), CAST(%(tokens)s AS text[])) AS v(seq, token) "
        f"ON j.seq = v.seq WHERE {_HELD_BY_V}"
    ),
    "renew_handed": (
        "UPDATE {jobs} AS j SET lease_until = %(until)s "
        "FROM unnest(CAST(%(seqs)s AS bigint[]), CAST(%(tokens)s AS text[])) AS v(seq, token) "
        f"WHERE j.seq = v.seq AND {_HELD_BY_V}"
    ),
    # Lease renewal of (id, lease token) arrays in one statement, each fenced by its token.
    "renew_many": (
        "UPDATE {jobs} AS j SET lease_until = %(until)s "
        "FROM unnest(CAST(%(ids)s AS text[]), CAST(%(tokens)s AS text[])) AS v(id, token) "
        f"WHERE j.id = v.id AND {_HELD_BY_V} RETURNING j.id"
    ),
    # Jobs from arrays in one INSERT; positions drawn in array order (FIFO within the batch).
    # Arrays go in binary: in text form every JSON document would be escaped.
    "insert_many": (
        "INSERT INTO {jobs} (id, name, state, routing_key, priority, position, run_at, data, group_name) "
        "SELECT v.id, v.name, v.state, v.routing_key, v.priority, nextval('{position_seq}'), v.run_at, v.data, "
        "v.group_name FROM unnest(CAST(%(id)b AS text[]), CAST(%(name)b AS text[]), CAST(%(state)b AS text[]), "
        "CAST(%(routing_key)b AS text[]), CAST(%(priority)b AS smallint[]), CAST(%(run_at)b AS float8[]), "
        "CAST(%(data)b AS text[]), CAST(%(group_name)b AS text[])) "
        "WITH ORDINALITY AS v(id, name, state, routing_key, priority, run_at, data, group_name, n) ORDER BY v.n"
    ),
    # complete_and_store (a chain of two statements on SQLite) as one statement, returning a
    # row iff the completion applied.
    "complete_and_store": (
        "WITH done AS (UPDATE {jobs} SET state = 'completed', data = %(data)s, lease_until = NULL, "
        "lease_token = NULL, finished_at = %(now)s, expires_at = %(expires_at)s "
        f"WHERE id = %(id)s AND state = {PROCESSING} AND lease_token = %(token)s RETURNING id) "
        "INSERT INTO {results} AS r (job_id, data, expires_at) "
        "SELECT id, CAST(%(result)s AS text), CAST(%(result_expires_at)s AS float8) FROM done "
        "ON CONFLICT (job_id) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at "
        "RETURNING r.job_id"
    ),
}


def statements(names: Mapping[str, str]) -> dict[str, str]:
    """PostgreSQL's own named statements for one namespace (see :func:`claim_sql` for claims)."""
    return {name: template.format(**names) for name, template in _TEMPLATES.items()}


COMBINED: Mapping[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    # name: (statement over unnest()ed arrays, (parameter, array type) in column order)
    # Each completion fenced by its own lease token: a stale one is left out, the others apply.
    "complete": (
        "UPDATE {jobs} AS j SET state = 'completed', data = v.data, lease_until = NULL, lease_token = NULL, "
        "finished_at = v.now, expires_at = v.expires_at FROM unnest({arrays}) AS v(id, token, data, now, expires_at) "
        f"WHERE j.id = v.id AND {_HELD_BY_V} RETURNING j.id",
        (("id", "text"), ("token", "text"), ("data", "text"), ("now", "float8"), ("expires_at", "float8")),
    ),
    # Results only for the jobs the UPDATE found: a lost job gets no result.
    "complete_and_store": (
        "WITH v AS (SELECT * FROM unnest({arrays}) AS v(id, token, data, now, expires_at, result, "
        "result_expires_at)), "
        "done AS (UPDATE {jobs} AS j SET state = 'completed', data = v.data, lease_until = NULL, lease_token = NULL, "
        "finished_at = v.now, expires_at = v.expires_at FROM v "
        f"WHERE j.id = v.id AND {_HELD_BY_V} RETURNING j.id) "
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
"""Many outcomes of one kind in one statement (a group commit of N successes runs one
statement, not N); each returns the ids it touched, so every write still gets its answer."""


def combined_sql(names: Mapping[str, str]) -> dict[str, str]:
    """The :data:`COMBINED` statements for one namespace."""
    out = {}
    for name, (template, columns) in COMBINED.items():
        arrays = ", ".join(f"CAST(%({col})b AS {kind}[])" for col, kind in columns)
        out[name] = template.format(arrays=arrays, **names)
    return out

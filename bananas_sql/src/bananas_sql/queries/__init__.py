"""Every SQL statement of the backend, by name: the statements both dialects run are here;
:mod:`~bananas_sql.queries.postgres` and :mod:`~bananas_sql.queries.sqlite` hold each
dialect's own (claims, the hand-off, writes over arrays) and its fragments. The schema's DDL
is in :mod:`bananas_sql.tables` and :mod:`bananas_sql.migrate`.

Templates use ``{jobs}``-style table names (see :meth:`Names.as_mapping
<bananas_sql.tables.Names.as_mapping>`) and two dialect fragments: ``{next_pos}`` (a
position after every other, for FIFO) and ``{front_pos}`` (a position before every
other, for a released job). ``:name`` are bound parameters; ``now`` is always one,
read from the backend's clock. Lists bind as expanding ``IN :ids`` parameters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy as sa

EXPANDING = frozenset({"ids", "keys", "prios", "names"})

_JOB_COLUMNS = "state, data, error, name, id, finished_at"

# "The row is being processed", for statements that find their rows by key. A one-row subquery,
# not the literal: from ``state = 'processing'`` the planner can prove the lease index's
# predicate and, with the statistics a busy drain leaves (few leases when last analysed, many
# index entries now), walk every lease in that index for each statement instead of looking
# its rows up by key; in a 10,000-job PostgreSQL drain that doubled the buffers per settle.
PROCESSING = "(SELECT 'processing')"

# Settles are fenced: they apply only while the claim that made ``:token`` still holds the row.
HELD = f"id = :id AND state = {PROCESSING} AND lease_token = :token"

TEMPLATES: Mapping[str, str] = {
    "schema_version": "SELECT version FROM {version} WHERE id = 1",
    "ping": "SELECT 1",
    # -- jobs --------------------------------------------------------------------------
    "enqueue": (
        "INSERT INTO {jobs} AS j (id, name, state, routing_key, priority, position, run_at, data, group_name) "
        "VALUES (:id, :name, :state, :routing_key, :priority, {next_pos}, :run_at, :data, :group_name) "
        "ON CONFLICT (id) DO UPDATE SET name = excluded.name, state = excluded.state, "
        "routing_key = excluded.routing_key, priority = excluded.priority, position = excluded.position, "
        "run_at = excluded.run_at, data = excluded.data, group_name = excluded.group_name, lease_until = NULL, "
        "lease_token = NULL, finished_at = NULL, "
        "expires_at = NULL, error = NULL "
        "WHERE j.expires_at IS NOT NULL AND j.expires_at <= :now "
        "RETURNING id"
    ),
    "insert": (
        "INSERT INTO {jobs} (id, name, state, routing_key, priority, position, run_at, data, group_name) "
        "VALUES (:id, :name, :state, :routing_key, :priority, {next_pos}, :run_at, :data, :group_name)"
    ),
    "delete_expired_ids": "DELETE FROM {jobs} WHERE id IN :ids AND expires_at <= :now",
    # What a submission retried after an unknown outcome finds: its own commit, or another job's id?
    "stored_data": "SELECT id, data FROM {jobs} WHERE id IN :ids",
    "complete": (
        "UPDATE {jobs} SET state = 'completed', data = :data, lease_until = NULL, lease_token = NULL, "
        f"finished_at = :now, expires_at = :expires_at WHERE {HELD} RETURNING id"
    ),
    "retry_later": (
        "UPDATE {jobs} SET state = 'scheduled', data = :data, lease_until = NULL, lease_token = NULL, "
        f"run_at = :run_at, position = {{next_pos}} WHERE {HELD} RETURNING id"
    ),
    "bury": (
        "UPDATE {jobs} SET state = 'dead', data = :data, lease_until = NULL, lease_token = NULL, "
        f"finished_at = :now, expires_at = :expires_at WHERE {HELD} RETURNING id"
    ),
    # What a settle that touched no row finds: was it applied already (a retry), or is the job lost?
    "settled": "SELECT state, data FROM {jobs} WHERE id = :id",
    "release": (
        "UPDATE {jobs} SET state = 'ready', lease_until = NULL, lease_token = NULL, run_at = 0, "
        f"position = {{front_pos}} WHERE {HELD}"
    ),
    "renew": f"UPDATE {{jobs}} SET lease_until = :until WHERE {HELD} RETURNING id",
    # Callers of the former renew(ids): by id alone, whoever holds the row.
    # move_scheduled reads each due job (an unreadable one is buried, not made ready), a bounded batch at a time.
    "due_scheduled": (
        "SELECT seq, data, id FROM {jobs} WHERE state = 'scheduled' AND run_at <= :now ORDER BY run_at, position "
        "LIMIT :batch {lock}"
    ),
    "make_ready": "UPDATE {jobs} SET state = 'ready', position = {next_pos} WHERE seq = :seq AND state = 'scheduled'",
    # Bounded: a huge backlog of expired leases is taken back in several short transactions.
    "expired_leases": (
        "SELECT seq, data, id FROM {jobs} WHERE state = 'processing' AND lease_until < :now "
        "ORDER BY lease_until LIMIT :batch {lock}"
    ),
    "reap_ready": (
        "UPDATE {jobs} SET state = 'ready', data = :data, lease_until = NULL, lease_token = NULL, run_at = 0, "
        f"position = {{next_pos}} WHERE seq = :seq AND state = {PROCESSING}"
    ),
    "reap_dead": (
        "UPDATE {jobs} SET state = 'dead', data = :data, lease_until = NULL, lease_token = NULL, "
        f"finished_at = :now, expires_at = :expires_at WHERE seq = :seq AND state = {PROCESSING}"
    ),
    "bury_unreadable": (
        "UPDATE {jobs} SET state = 'dead', error = :error, lease_until = NULL, lease_token = NULL, "
        "finished_at = :now, expires_at = :expires_at WHERE seq = :seq RETURNING id"
    ),
    "get_job": f"SELECT {_JOB_COLUMNS} FROM {{jobs}} WHERE id = :id AND (expires_at IS NULL OR expires_at > :now)",
    # Four branches, each matching one partial index, so finished history is never scanned.
    "depths": (
        "SELECT state, routing_key, priority, COUNT(*) AS n FROM {jobs} "
        "WHERE state IN ('ready', 'scheduled') AND group_name IS NULL GROUP BY state, routing_key, priority "
        "UNION ALL SELECT state, routing_key, priority, COUNT(*) AS n FROM {jobs} "
        "WHERE state IN ('ready', 'scheduled') AND group_name IS NOT NULL GROUP BY state, routing_key, priority "
        "UNION ALL SELECT 'processing', '', 0, COUNT(*) FROM {jobs} WHERE state = 'processing' "
        "UNION ALL SELECT 'dead', '', 0, COUNT(*) FROM {jobs} WHERE state = 'dead'"
    ),
    "dead_letters": (
        f"SELECT {_JOB_COLUMNS} FROM {{jobs}} WHERE state = 'dead' AND (expires_at IS NULL OR expires_at > :now) "
        "ORDER BY finished_at DESC, seq DESC LIMIT :limit OFFSET :offset"
    ),
    "dead_all": "SELECT seq, data, id FROM {jobs} WHERE state = 'dead' ORDER BY finished_at, seq {lock}",
    "dead_some": (
        "SELECT seq, data, id FROM {jobs} WHERE state = 'dead' AND id IN :ids ORDER BY finished_at, seq {lock}"
    ),
    "requeue": (
        "UPDATE {jobs} SET state = 'ready', data = :data, run_at = 0, finished_at = NULL, expires_at = NULL, "
        "error = NULL, position = {next_pos} WHERE seq = :seq AND state = 'dead'"
    ),
    "purge_all": "DELETE FROM {jobs} WHERE state = 'dead'",
    "purge_some": "DELETE FROM {jobs} WHERE state = 'dead' AND id IN :ids",
    "prune_jobs": ("DELETE FROM {jobs} WHERE seq IN (SELECT seq FROM {jobs} WHERE expires_at <= :now LIMIT 1000)"),
    # Jobs without a group (whether a grouped job could be claimed is for the group rules).
    "any_ready": (
        "SELECT 1 FROM {jobs} WHERE state IN ('ready', 'scheduled') AND run_at <= :now AND routing_key IN :keys "
        "AND group_name IS NULL LIMIT 1"
    ),
    # -- results -----------------------------------------------------------------------
    "store_result": (
        "INSERT INTO {results} AS r (job_id, data, expires_at) VALUES (:id, :data, :expires_at) "
        "ON CONFLICT (job_id) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at"
    ),
    # The second statement of ``complete_and_store`` (see :data:`bananas_sql.batch.CHAINS`).
    "store_completed_result": (
        "INSERT INTO {results} AS r (job_id, data, expires_at) VALUES (:id, :result, :result_expires_at) "
        "ON CONFLICT (job_id) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at"
    ),
    "get_result": "SELECT data FROM {results} WHERE job_id = :id AND expires_at > :now",
    "delete_result": "DELETE FROM {results} WHERE job_id = :id",
    "prune_results": (
        "DELETE FROM {results} WHERE job_id IN (SELECT job_id FROM {results} WHERE expires_at <= :now LIMIT 1000)"
    ),
    # -- cron --------------------------------------------------------------------------
    "fire": (
        "INSERT INTO {schedules} AS s (schedule_id, last_run, next_run, run_count) VALUES (:id, :tick, :next_run, 1) "
        "ON CONFLICT (schedule_id) DO UPDATE SET last_run = excluded.last_run, next_run = excluded.next_run, "
        "run_count = s.run_count + 1 WHERE s.last_run IS NULL OR s.last_run < excluded.last_run "
        "RETURNING schedule_id"
    ),
    "schedule_state": (
        "SELECT schedule_id, last_run, next_run, last_success, last_error, run_count FROM {schedules} "
        "WHERE schedule_id = :id"
    ),
    "schedule_states": (
        "SELECT schedule_id, last_run, next_run, last_success, last_error, run_count FROM {schedules} "
        "ORDER BY schedule_id"
    ),
    # -- workers -----------------------------------------------------------------------
    "heartbeat": (
        "INSERT INTO {workers} AS w (id, data, expires_at) VALUES (:id, :data, :expires_at) "
        "ON CONFLICT (id) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at"
    ),
    "deregister": "DELETE FROM {workers} WHERE id = :id",
    "workers": "SELECT data FROM {workers} WHERE expires_at > :now ORDER BY id",
    "prune_workers": "DELETE FROM {workers} WHERE expires_at <= :now",
}


SCHEDULE_COLUMNS = frozenset({"next_run", "last_success", "last_error"})
"""The columns of a schedule's row that :func:`record_schedule_sql` may write."""


def record_schedule_sql(schedules: str, columns: list[str]) -> str:
    """The upsert of a schedule's row writing ``columns`` (some of :data:`SCHEDULE_COLUMNS`)
    from ``:id`` and parameters named after them."""
    if not columns or not set(columns) <= SCHEDULE_COLUMNS:
        raise ValueError(f"not columns of a schedule's row: {columns!r}")
    return (
        f"INSERT INTO {schedules} AS s (schedule_id, {', '.join(columns)}) "
        f"VALUES (:id, {', '.join(':' + c for c in columns)}) "
        f"ON CONFLICT (schedule_id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in columns)}"
    )


def fill(names: Mapping[str, str], fragments: Mapping[str, str]) -> dict[str, str]:
    """Every named statement as SQL text for one namespace and dialect, with ``:name`` parameters
    (SQLite's own style; expanding list parameters are left as ``IN :ids``)."""
    values = dict(names)
    values.update({k: v.format(**names) for k, v in fragments.items()})
    return {name: template.format(**values) for name, template in TEMPLATES.items()}


_PARAM = re.compile(r"(?<![:\w]):(\w+)")
_EXPANDING = re.compile(r"\bIN :(" + "|".join(sorted(EXPANDING)) + r")\b")


def pyformat(sql: str) -> str:
    """``:name`` parameters as psycopg's ``%(name)s``; an expanding ``IN :ids`` becomes
    ``= ANY(CAST(%(ids)s AS text[]))`` (the list is sent as one array; every list parameter
    of the shared statements is one of ids or routing keys)."""
    sql = _EXPANDING.sub(r"= ANY(CAST(:\1 AS text[]))", sql.replace("%", "%%"))
    return _PARAM.sub(r"%(\1)s", sql)


def pyformat_all(statements: Mapping[str, str]) -> dict[str, str]:
    """:func:`pyformat` of each statement."""
    return {name: pyformat(sql) for name, sql in statements.items()}


def compile_all(names: Mapping[str, str], fragments: Mapping[str, str]) -> dict[str, sa.TextClause]:
    """Every named statement as a SQLAlchemy ``TextClause`` (expanding list parameters bound),
    for the code that runs on a SQLAlchemy connection."""
    import sqlalchemy as sa

    out = {}
    for name, text in fill(names, fragments).items():
        clause = sa.text(text)
        expanding: list[sa.BindParameter[Any]] = [
            sa.bindparam(p, expanding=True) for p in EXPANDING if f":{p}" in TEMPLATES[name]
        ]
        out[name] = clause.bindparams(*expanding) if expanding else clause
    return out

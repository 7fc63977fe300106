"""The statements of groups with limits (see :mod:`bananas_sql.groups`) for each dialect, and the
group tables (schema version 10).

``group_limits`` holds each stored limit as :meth:`GroupLimit.to_json
<bananas.groups.GroupLimit.to_json>` text under its group name (``*``: the default).
``group_state`` holds, per group, when it was last served (``served``, a counter that only
grows: the round robin serves the smallest first; the jobs without a group are the row ``''``).
``group_starts`` logs the starts of groups whose limit has a rate (the rate's window counts
them); the reaper prunes starts older than the longest window.

A group's running jobs are not counted anywhere: a claim counts the group's processing rows
whose lease has not run out, so a settle, the reaper and a lease running out free a slot with
no bookkeeping that could leak.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the runtime reads only the statements: no SQLAlchemy import for them
    import sqlalchemy as sa

__all__ = ["UNGROUPED", "GroupSql", "PostgresSql", "SqliteSql", "group_tables"]

UNGROUPED = ""
"""The ``group_state`` row of the jobs without a group (no group name is empty)."""

_CLAIMABLE = "state IN ('ready', 'scheduled') AND run_at <= {now}"
_GROUPED = "state IN ('ready', 'scheduled') AND group_name IS NOT NULL"
"""The rows of the ``jobs_grouped`` index."""


def group_tables(md: sa.MetaData, prefix: str) -> None:
    """Add the group tables to ``md`` (see the module docstring)."""
    import sqlalchemy as sa

    double = sa.Float(precision=53).with_variant(sa.Double(), "postgresql")
    sa.Table(
        prefix + "group_limits",
        md,
        sa.Column("group_name", sa.String(128), primary_key=True),
        sa.Column("data", sa.Text, nullable=False),
    )
    state = sa.Table(
        prefix + "group_state",
        md,
        sa.Column("group_name", sa.String(128), primary_key=True),
        sa.Column("served", sa.BigInteger, nullable=False),
        sa.Column("served_at", double, nullable=False),
    )
    sa.Index(prefix + "group_state_served", state.c.served)
    starts = sa.Table(
        prefix + "group_starts",
        md,
        sa.Column("group_name", sa.String(128), nullable=False),
        sa.Column("started_at", double, nullable=False),
    )
    sa.Index(prefix + "group_starts_window", starts.c.group_name, starts.c.started_at)


class GroupSql:
    """The named statements of one namespace that both dialects share (``:name`` parameters)."""

    def __init__(self, names: Mapping[str, str]) -> None:
        limits, state, starts, jobs = names["group_limits"], names["group_state"], names["group_starts"], names["jobs"]
        self.set_limit = (
            f"INSERT INTO {limits} (group_name, data) VALUES (:group, :data) "
            "ON CONFLICT (group_name) DO UPDATE SET data = excluded.data"
        )
        self.get_limit = f"SELECT data FROM {limits} WHERE group_name = :group"
        self.all_limits = f"SELECT group_name, data FROM {limits} ORDER BY group_name"
        self.remove_limit = f"DELETE FROM {limits} WHERE group_name = :group"
        # Starts older than the longest window count for nothing; groups not served for a day
        # are forgotten (served again, they line up as never served).
        self.prune_starts = f"DELETE FROM {starts} WHERE started_at <= :before"
        self.prune_state = f"DELETE FROM {state} WHERE served_at <= :forgotten"
        self.jobs = jobs


def _in(prefix: str, count: int) -> str:
    """``(:prefix0, :prefix1, ...)`` for SQLite's expanded lists."""
    return "(" + ", ".join(f":{prefix}{i}" for i in range(count)) + ")"


class PostgresSql:
    """PostgreSQL's statements (psycopg ``%(name)s`` parameters; lists sent as arrays)."""

    @staticmethod
    def grouped_due(jobs: str, n_keys: int) -> str:
        """Whether a grouped job of the claim's routing keys (``%(k0)s``...) is due: the claim
        then goes through the group rules. One probe of the ``jobs_grouped`` index."""
        keys = ", ".join(f"%(k{i})s" for i in range(n_keys))
        return (
            f"SELECT EXISTS (SELECT 1 FROM {jobs} WHERE state IN ('ready', 'scheduled') AND group_name IS NOT NULL "
            f"AND run_at <= %(now)s AND routing_key IN ({keys})) AS grouped"
        )

    @staticmethod
    def participants(names: Mapping[str, str], all_prios: bool, by_name: bool) -> str:
        """Per routing key and priority, each group with due jobs (its oldest job's position, when
        it was last served, its own and the default limit) and the head of the jobs without one.

        The groups are found by a skip scan of ``jobs_grouped`` (each step seeks the next
        (priority, group) of the key), so a group's backlog is never read: one index probe per
        group and one for its head, however many jobs it holds."""
        jobs, state, limits = names["jobs"], names["group_state"], names["group_limits"]
        claimable = _CLAIMABLE.format(now="%(now)s")
        prio = "" if all_prios else "AND d.priority = ANY(CAST(%(ranks)s AS smallint[]))"
        name = "AND name = ANY(CAST(%(names)s AS text[]))" if by_name else ""
        return (
            "WITH RECURSIVE d AS ("
            "SELECT f.routing_key, f.priority, f.group_name FROM unnest(CAST(%(keys)s AS text[])) AS k(key) "
            f"CROSS JOIN LATERAL (SELECT routing_key, priority, group_name FROM {jobs} WHERE {_GROUPED} "
            "AND routing_key = k.key ORDER BY priority, group_name LIMIT 1) AS f "
            "UNION ALL "
            "SELECT f.routing_key, f.priority, f.group_name FROM d "
            f"CROSS JOIN LATERAL (SELECT routing_key, priority, group_name FROM {jobs} WHERE {_GROUPED} "
            "AND routing_key = d.routing_key AND (priority, group_name) > (d.priority, d.group_name) "
            "ORDER BY priority, group_name LIMIT 1) AS f) "
            "SELECT p.routing_key, p.priority, p.group_name, p.head, s.served, l.data AS own, x.data AS fallback "
            "FROM (SELECT d.routing_key, d.priority, d.group_name, "
            f"(SELECT position FROM {jobs} WHERE {claimable} AND group_name IS NOT NULL "
            "AND routing_key = d.routing_key AND priority = d.priority AND group_name = d.group_name "
            f"{name} ORDER BY position LIMIT 1) AS head FROM d WHERE true {prio} OFFSET 0) AS p "  # head read once
            f"LEFT JOIN {state} AS s ON s.group_name = p.group_name "
            f"LEFT JOIN {limits} AS l ON l.group_name = p.group_name "
            f"LEFT JOIN {limits} AS x ON x.group_name = '*' "
            "WHERE p.head IS NOT NULL "
            "UNION ALL "
            "SELECT u.routing_key, u.priority, NULL, u.head, "
            f"(SELECT served FROM {state} WHERE group_name = ''), NULL, NULL "
            "FROM (SELECT k.routing_key, r.priority, "
            f"(SELECT position FROM {jobs} WHERE {claimable} AND routing_key = k.routing_key "
            f"AND priority = r.priority AND group_name IS NULL {name} ORDER BY position LIMIT 1) AS head "
            "FROM unnest(CAST(%(keys)s AS text[])) AS k(routing_key) "
            "CROSS JOIN unnest(CAST(%(ranks)s AS smallint[])) AS r(priority)) AS u WHERE u.head IS NOT NULL"
        )

    @staticmethod
    def lock(jobs: str) -> str:
        """Of ``%(groups)s``, those whose claim lock this transaction took (a transaction-scoped
        advisory lock per group of the namespace; a group another claim holds is skipped)."""
        return (
            "SELECT g FROM unnest(CAST(%(groups)s AS text[])) AS g "
            f"WHERE pg_try_advisory_xact_lock(hashtext('{jobs}'), hashtext(g))"
        )

    @staticmethod
    def usage(names: Mapping[str, str]) -> str:
        """Rows ``('r', group, running, first lease end)`` for the groups ``%(groups)s`` and
        ``('s', group, start, NULL)`` for the counted starts of ``%(rated)s`` (newer than its
        ``%(since)s``, at most its ``%(caps)s``, newest first)."""
        jobs, starts = names["jobs"], names["group_starts"]
        return (
            "SELECT 'r' AS kind, group_name, CAST(count(*) AS float8) AS value, min(lease_until) AS until "
            f"FROM {jobs} WHERE state = 'processing' AND group_name IS NOT NULL "
            "AND group_name = ANY(CAST(%(groups)s AS text[])) AND lease_until > %(now)s GROUP BY group_name "
            "UNION ALL SELECT 's', v.g, s.started_at, NULL "
            "FROM unnest(CAST(%(rated)s AS text[]), CAST(%(since)s AS float8[]), CAST(%(caps)s AS int[])) "
            "AS v(g, since, cap) CROSS JOIN LATERAL "
            f"(SELECT started_at FROM {starts} WHERE group_name = v.g AND started_at > v.since "
            "ORDER BY started_at DESC LIMIT v.cap) AS s"
        )

    @staticmethod
    def take(jobs: str, by_name: bool) -> str:
        """Claim, for each ``(routing key, priority, group, n)`` of the arrays ``%(gk)s``... and
        each ``(routing key, priority, n)`` of ``%(uk)s``... (no group), its first ``n`` jobs."""
        claimable = _CLAIMABLE.format(now="%(now)s")
        name = "AND name = ANY(CAST(%(names)s AS text[]))" if by_name else ""
        return (
            f"UPDATE {jobs} SET state = 'processing', lease_until = %(lease_until)s, lease_token = %(token)s "
            "WHERE seq = ANY(ARRAY("
            "SELECT j.seq FROM unnest(CAST(%(gk)s AS text[]), CAST(%(gp)s AS smallint[]), CAST(%(gg)s AS text[]), "
            "CAST(%(gn)s AS int[])) AS v(k, p, g, n) CROSS JOIN LATERAL "
            f"(SELECT seq FROM {jobs} WHERE {claimable} AND group_name IS NOT NULL AND routing_key = v.k "
            f"AND priority = v.p AND group_name = v.g {name} ORDER BY position LIMIT v.n FOR UPDATE SKIP LOCKED) AS j "
            "UNION ALL "
            "SELECT j.seq FROM unnest(CAST(%(uk)s AS text[]), CAST(%(up)s AS smallint[]), CAST(%(un)s AS int[])) "
            "AS v(k, p, n) CROSS JOIN LATERAL "
            f"(SELECT seq FROM {jobs} WHERE {claimable} AND routing_key = v.k AND priority = v.p "
            f"AND group_name IS NULL {name} ORDER BY position LIMIT v.n FOR UPDATE SKIP LOCKED) AS j)) "
            "RETURNING seq, data, id, routing_key, priority, group_name, position"
        )

    @staticmethod
    def record(names: Mapping[str, str]) -> str:
        """Log a start at ``%(now)s`` for each of ``%(starts)s`` and mark ``%(served)s`` served,
        in that order, after every group served before."""
        state, starts = names["group_state"], names["group_starts"]
        return (
            f"WITH s AS (INSERT INTO {starts} (group_name, started_at) "
            "SELECT g, %(now)s FROM unnest(CAST(%(starts)s AS text[])) AS g) "
            f"INSERT INTO {state} AS t (group_name, served, served_at) "
            "SELECT v.g, m.top + v.i, %(now)s FROM unnest(CAST(%(served)s AS text[])) WITH ORDINALITY AS v(g, i) "
            f"CROSS JOIN (SELECT COALESCE(max(served), 0) AS top FROM {state}) AS m "
            "ON CONFLICT (group_name) DO UPDATE SET served = excluded.served, served_at = excluded.served_at"
        )


class SqliteSql:
    """SQLite's statements (``:name`` parameters; lists expanded as ``:k0, :k1``...)."""

    @staticmethod
    def grouped_due(jobs: str, n_keys: int) -> str:
        """See `PostgresSql.grouped_due`."""
        return (
            f"SELECT 1 FROM {jobs} WHERE state IN ('ready', 'scheduled') AND group_name IS NOT NULL "
            f"AND run_at <= :now AND routing_key IN {_in('k', n_keys)} LIMIT 1"
        )

    @staticmethod
    def participants(names: Mapping[str, str], n_keys: int, ranks: Sequence[int], filtered: bool, n_names: int) -> str:
        """See `PostgresSql.participants` (``ranks`` filter the groups when ``filtered``): the
        same skip scan, each step a row of ``jobs_grouped`` found by ``seq`` (the next group of
        the priority, else the first of the next priority: SQLite seeks on one row-value column
        only, and would read the rest of the priority's rows)."""
        jobs, state, limits = names["jobs"], names["group_state"], names["group_limits"]
        claimable = _CLAIMABLE.format(now=":now")
        prio = f"AND g.priority IN ({', '.join(str(r) for r in ranks)})" if filtered else ""
        name = f"AND name IN {_in('n', n_names)}" if n_names else ""
        firsts = " UNION ALL ".join(
            f"SELECT (SELECT seq FROM {jobs} WHERE {_GROUPED} AND routing_key = :k{i} "
            "ORDER BY priority, group_name LIMIT 1)"
            for i in range(n_keys)
        )
        heads = " UNION ALL ".join(
            f"SELECT :k{i} AS routing_key, {rank} AS priority, (SELECT position FROM {jobs} WHERE {claimable} "
            f"AND routing_key = :k{i} AND priority = {rank} AND group_name IS NULL {name} "
            "ORDER BY position LIMIT 1) AS head"
            for i in range(n_keys)
            for rank in ranks
        )
        return (
            f"WITH RECURSIVE d(seq) AS ({firsts} UNION ALL "
            f"SELECT COALESCE((SELECT n.seq FROM {jobs} AS n WHERE n.state IN ('ready', 'scheduled') "
            "AND n.group_name IS NOT NULL AND n.routing_key = j.routing_key AND n.priority = j.priority "
            "AND n.group_name > j.group_name ORDER BY n.group_name LIMIT 1), "
            f"(SELECT n.seq FROM {jobs} AS n WHERE n.state IN ('ready', 'scheduled') "
            "AND n.group_name IS NOT NULL AND n.routing_key = j.routing_key AND n.priority > j.priority "
            "ORDER BY n.priority, n.group_name LIMIT 1)) "
            f"FROM d JOIN {jobs} AS j ON j.seq = d.seq), "
            f"g AS (SELECT j.routing_key, j.priority, j.group_name FROM d JOIN {jobs} AS j ON j.seq = d.seq) "
            "SELECT p.routing_key, p.priority, p.group_name, p.head, s.served, l.data AS own, x.data AS fallback "
            "FROM (SELECT g.routing_key, g.priority, g.group_name, "
            f"(SELECT position FROM {jobs} WHERE {claimable} AND group_name IS NOT NULL "
            "AND routing_key = g.routing_key AND priority = g.priority AND group_name = g.group_name "
            f"{name} ORDER BY position LIMIT 1) AS head FROM g WHERE true {prio} LIMIT -1) AS p "  # head read once
            f"LEFT JOIN {state} AS s ON s.group_name = p.group_name "
            f"LEFT JOIN {limits} AS l ON l.group_name = p.group_name "
            f"LEFT JOIN {limits} AS x ON x.group_name = '*' "
            "WHERE p.head IS NOT NULL "
            "UNION ALL "
            "SELECT u.routing_key, u.priority, NULL, u.head, "
            f"(SELECT served FROM {state} WHERE group_name = ''), NULL, NULL "
            f"FROM ({heads}) AS u WHERE u.head IS NOT NULL"
        )

    @staticmethod
    def running(jobs: str, n_groups: int) -> str:
        """``(group, running, first lease end)`` of the groups ``:g0``..."""
        return (
            f"SELECT group_name, count(*), min(lease_until) FROM {jobs} WHERE state = 'processing' "
            f"AND group_name IS NOT NULL AND group_name IN {_in('g', n_groups)} AND lease_until > :now "
            "GROUP BY group_name"
        )

    @staticmethod
    def starts(starts: str) -> str:
        """The counted starts of ``:group`` (newer than ``:since``, at most ``:cap``, newest first)."""
        return (
            f"SELECT started_at FROM {starts} WHERE group_name = :group AND started_at > :since "
            "ORDER BY started_at DESC LIMIT :cap"
        )

    @staticmethod
    def take(jobs: str, grouped: bool, n_names: int) -> str:
        """Claim the first ``:n`` jobs of ``:k``/``:p`` in group ``:g`` (or without a group)."""
        claimable = _CLAIMABLE.format(now=":now")
        group = "group_name IS NOT NULL AND group_name = :g" if grouped else "group_name IS NULL"
        name = f"AND name IN {_in('n', n_names)}" if n_names else ""
        return (
            f"UPDATE {jobs} SET state = 'processing', lease_until = :lease_until, lease_token = :token "
            f"WHERE seq IN (SELECT seq FROM {jobs} WHERE {claimable} AND routing_key = :k AND priority = :p "
            f"AND {group} {name} ORDER BY position LIMIT :n) "
            "RETURNING seq, data, id, routing_key, priority, group_name, position"
        )

    @staticmethod
    def start(starts: str) -> str:
        return f"INSERT INTO {starts} (group_name, started_at) VALUES (:group, :now)"

    @staticmethod
    def served(state: str) -> str:
        """Mark ``:group`` served ``:i``-th after every group served before."""
        return (
            f"INSERT INTO {state} (group_name, served, served_at) "
            f"SELECT :group, COALESCE(MAX(served), 0) + 1, :now FROM {state} WHERE true "
            "ON CONFLICT (group_name) DO UPDATE SET served = excluded.served, served_at = excluded.served_at"
        )

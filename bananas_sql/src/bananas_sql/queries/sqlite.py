"""SQLite's own statements: the claim, and the look for ready work. Parameters are ``:name``."""

from __future__ import annotations

from collections.abc import Mapping

FRAGMENTS: Mapping[str, str] = {
    # SQLite has no sequences; writers are serialised, so MAX/MIN(position) are safe.
    "next_pos": "(SELECT COALESCE(MAX(position), 0) + 1 FROM {jobs})",
    "front_pos": "(SELECT COALESCE(MIN(position), 0) - 1 FROM {jobs})",
    "lock": "",
}
"""SQLite's parts of the shared statements (see :mod:`bananas_sql.queries`)."""


def claim_sql(jobs: str, n_keys: int, ranks: tuple[int, ...] | None, n_names: int) -> str:
    """One UPDATE claiming up to ``:limit`` jobs over ``n_keys`` routing keys (``:k0``...) in
    order, of the priorities ``ranks`` (None: all) and ``n_names`` job names (``:n0``...; 0:
    any), returning ``(seq, data, id, key_rank, priority, position)``.

    One arm per routing key, each walking the claim index in (priority, position) order and
    stopping at the limit: no sort of the whole backlog. Key rank first.
    """
    prio = f"AND priority IN ({', '.join(str(r) for r in ranks)})" if ranks is not None else ""
    names = f"AND name IN ({', '.join(f':n{i}' for i in range(n_names))})" if n_names else ""
    arms = " UNION ALL ".join(
        f"SELECT * FROM (SELECT seq, {i} AS key_rank, priority, position FROM {jobs} "
        f"WHERE state IN ('ready', 'scheduled') AND group_name IS NULL AND routing_key = :k{i} AND run_at <= :now "
        f"{prio} {names} ORDER BY priority, position LIMIT :limit)"
        for i in range(n_keys)
    )
    rank = "CASE routing_key " + " ".join(f"WHEN :k{i} THEN {i}" for i in range(n_keys)) + " END"
    return (
        f"UPDATE {jobs} SET state = 'processing', lease_until = :lease_until, lease_token = :token "
        f"WHERE seq IN ("
        f"SELECT seq FROM ({arms}) ORDER BY key_rank, priority, position LIMIT :limit) "
        f"RETURNING seq, data, id, {rank} AS key_rank, priority, position"
    )


def any_ready_sql(any_ready: str, n_keys: int) -> str:
    """The shared ``any_ready`` statement for ``n_keys`` routing keys (``:k0``...)."""
    return any_ready.replace(":keys", "(" + ", ".join(f":k{i}" for i in range(n_keys)) + ")")

"""The steps of a grouped claim (:func:`bananas_sql.groups.claim_steps`) on one ``sqlite3``
connection, inside the claim's write transaction: SQLite serialises writers, so no group needs
a lock of its own."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from bananas_sql.groups import GroupClaim
from bananas_sql.queries.groups import SqliteSql as sql


class SqliteGroupSteps:
    """The steps of one grouped claim ``req`` on ``conn``."""

    def __init__(self, conn: sqlite3.Connection, names: Mapping[str, str], req: GroupClaim) -> None:
        self.conn = conn
        self.names = names
        self.req = req
        self.base: dict[str, Any] = {"now": req.now, **{f"k{i}": key for i, key in enumerate(req.keys)}}
        self.base.update({f"n{i}": name for i, name in enumerate(req.names or ())})

    def participants(self) -> list[Any]:
        req = self.req
        query = sql.participants(self.names, len(req.keys), req.ranks, not req.all_prios, len(req.names or ()))
        return self.conn.execute(query, self.base).fetchall()

    def lock(self, groups: Sequence[str]) -> list[str]:
        return list(groups)

    def usage(
        self, groups: Sequence[str], windows: Mapping[str, tuple[float, int]]
    ) -> tuple[dict[str, tuple[int, float]], dict[str, list[float]]]:
        params: dict[str, Any] = {"now": self.req.now, **{f"g{i}": g for i, g in enumerate(groups)}}
        running = {
            str(g): (int(n), float(until))
            for g, n, until in self.conn.execute(sql.running(self.names["jobs"], len(groups)), params)
        }
        query = sql.starts(self.names["group_starts"])
        starts = {
            group: [float(t) for (t,) in self.conn.execute(query, {"group": group, "since": since, "cap": cap})]
            for group, (since, cap) in windows.items()
        }
        return running, starts

    def take(self, grouped: Sequence[tuple[str, int, str, int]], plain: Sequence[tuple[str, int, int]]) -> list[Any]:
        req, jobs, n_names = self.req, self.names["jobs"], len(self.req.names or ())
        params: dict[str, Any] = {
            "now": req.now, "lease_until": req.lease_until, "token": req.token,
            **{f"n{i}": name for i, name in enumerate(req.names or ())},
        }  # fmt: skip
        rows: list[Any] = []
        with_group, without = sql.take(jobs, True, n_names), sql.take(jobs, False, n_names)
        for key, prio, group, n in grouped:
            rows += self.conn.execute(with_group, {**params, "k": key, "p": prio, "g": group, "n": n}).fetchall()
        for key, prio, n in plain:
            rows += self.conn.execute(without, {**params, "k": key, "p": prio, "n": n}).fetchall()
        return rows

    def record(self, served: Sequence[str], starts: Sequence[str]) -> None:
        now = self.req.now
        if starts:
            self.conn.executemany(sql.start(self.names["group_starts"]), [{"group": g, "now": now} for g in starts])
        mark = sql.served(self.names["group_state"])
        for group in served:  # one at a time: each after the one before
            self.conn.execute(mark, {"group": group, "now": now})

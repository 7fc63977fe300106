"""The steps of a grouped claim (:func:`bananas_sql.groups.claim_steps`) on one psycopg
connection, inside the claim's transaction: each step one statement over arrays.

The groups a claim counts are locked first (a transaction-scoped advisory lock, tried: a group
another claim holds is skipped, never waited for), and counted by the next statement, whose
snapshot is taken after the lock: every claim of the group committed before is seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from bananas_sql.database import Claimed, GroupClaim
from bananas_sql.groups import claim_steps, run_steps_async
from bananas_sql.queries.groups import PostgresSql as sql

if TYPE_CHECKING:
    import psycopg


class PostgresGroupStatements:
    """The statements of grouped claims for one namespace, built once per shape."""

    def __init__(self, names: Mapping[str, str]) -> None:
        self.names = names
        self.lock = sql.lock(names["jobs"])
        self.usage = sql.usage(names)
        self.record = sql.record(names)
        self._participants: dict[tuple[bool, bool], str] = {}
        self._take: dict[bool, str] = {}

    def participants(self, all_prios: bool, by_name: bool) -> str:
        key = (all_prios, by_name)
        if key not in self._participants:
            self._participants[key] = sql.participants(self.names, all_prios, by_name)
        return self._participants[key]

    def take(self, by_name: bool) -> str:
        if by_name not in self._take:
            self._take[by_name] = sql.take(self.names["jobs"], by_name)
        return self._take[by_name]


class PostgresGroupSteps:
    """The steps of one grouped claim ``req`` on ``conn`` (in a transaction)."""

    def __init__(
        self, conn: psycopg.AsyncConnection[Any], statements: PostgresGroupStatements, req: GroupClaim
    ) -> None:
        self.conn = conn
        self.sql = statements
        self.req = req

    async def _rows(self, query: str, params: Mapping[str, Any]) -> list[Any]:
        cur = await self.conn.execute(query, params)
        return await cur.fetchall() if cur.description else []

    async def participants(self) -> list[Any]:
        req = self.req
        params = {"now": req.now, "keys": list(req.keys), "ranks": list(req.ranks), "names": list(req.names or ())}
        return await self._rows(self.sql.participants(req.all_prios, req.names is not None), params)

    async def lock(self, groups: Sequence[str]) -> list[str]:
        if self.req.dry:  # a look, not a claim: nothing to serialise
            return list(groups)
        return [g for (g,) in await self._rows(self.sql.lock, {"groups": list(groups)})]

    async def usage(
        self, groups: Sequence[str], windows: Mapping[str, tuple[float, int]]
    ) -> tuple[dict[str, tuple[int, float]], dict[str, list[float]]]:
        rated = list(windows)
        params = {
            "now": self.req.now, "groups": list(groups), "rated": rated,
            "since": [windows[g][0] for g in rated], "caps": [windows[g][1] for g in rated],
        }  # fmt: skip
        running: dict[str, tuple[int, float]] = {}
        starts: dict[str, list[float]] = {g: [] for g in rated}
        for kind, group, value, until in await self._rows(self.sql.usage, params):
            if kind == "r":
                running[group] = (int(value), float(until))
            else:
                starts[group].append(float(value))
        return running, starts

    async def take(
        self, grouped: Sequence[tuple[str, int, str, int]], plain: Sequence[tuple[str, int, int]]
    ) -> list[Any]:
        req = self.req
        params = {
            "now": req.now, "lease_until": req.lease_until, "token": req.token, "names": list(req.names or ()),
            "gk": [t[0] for t in grouped], "gp": [t[1] for t in grouped], "gg": [t[2] for t in grouped],
            "gn": [t[3] for t in grouped], "uk": [t[0] for t in plain], "up": [t[1] for t in plain],
            "un": [t[2] for t in plain],
        }  # fmt: skip
        return await self._rows(self.sql.take(req.names is not None), params)

    async def record(self, served: Sequence[str], starts: Sequence[str]) -> None:
        await self.conn.execute(self.sql.record, {"now": self.req.now, "served": list(served), "starts": list(starts)})


async def claim_grouped(
    conn: psycopg.AsyncConnection[Any], *, statements: PostgresGroupStatements, req: GroupClaim
) -> Claimed:
    """The grouped claim ``req`` in one transaction on ``conn`` (a dry one: reads only)."""
    if req.dry:
        return await run_steps_async(claim_steps(req), PostgresGroupSteps(conn, statements, req))
    async with conn.transaction():
        return await run_steps_async(claim_steps(req), PostgresGroupSteps(conn, statements, req))

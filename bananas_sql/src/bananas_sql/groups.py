"""Groups with limits on PostgreSQL and SQLite (:class:`~bananas.protocols.GroupLimits`).

A claim finds no grouped job due among its routing keys (one index probe in the claim's own
statement) and claims as it always did; otherwise it is a *grouped claim*, one transaction of
:func:`claim_steps` run by the dialect (:mod:`bananas_sql.pg.database`,
:mod:`bananas_sql.sqlite.database`):

1. the participants of each (routing key, priority): every group with due jobs (found by a
   skip scan of an index, one probe per group however long its line: its oldest position,
   when it was last served, its limits) and the head of the jobs without one;
2. the groups with a limit are locked for this claim (PostgreSQL: a transaction-scoped advisory
   lock per group, taken with a try, so two claims never count one group at once and never
   wait for each other; SQLite serialises writers anyway); then, in a statement of its own
   (a snapshot taken after the lock), each locked group's running jobs (processing rows whose
   lease has not run out) and the starts its rate window counts;
3. within each (routing key, priority), in priority order, the admitted participants take turns
   (served longest ago first) until the claim's limit; their first jobs are claimed in one
   statement (PostgreSQL) or one per participant (SQLite), and the turns of a participant
   found short are planned again without it;
4. the participants served are marked so (in turn order) and the starts logged, in the same
   transaction.

A job held back is not touched. A claim that took nothing because of limits says when the
earliest held-back group may start again (:attr:`Claimed.wake_at`), so that the worker waits
until then (or until a slot frees) instead of asking again at once.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterable, Mapping, Sequence
from typing import Any

import attrs
from bananas.errors import JobDecodeError
from bananas.groups import GroupLimit, effective_limit, next_start_at, unreadable_limit
from bananas.job import ALL_PRIORITIES, JobPriority

from bananas_sql.database import Claimed, ClaimedRow, Connection, Database, GroupClaim
from bananas_sql.queries.groups import UNGROUPED, GroupSql

__all__ = ["Claimed", "GroupClaim", "SqlGroups", "claim_steps", "run_steps", "run_steps_async"]

LOCKED_RETRY = 0.05
"""Seconds after which a worker held back only by another claim's lock on a group looks again."""

LONGEST_WINDOW = 3600.0
"""The longest rate window: starts older than this count for nothing."""

FORGET_GROUPS_AFTER = 86400.0
"""Seconds after which the last-served mark of a group no longer served is dropped."""

Step = tuple[str, tuple[Any, ...]]
"""What a claim asks its dialect for: a method name of the dialect's steps and its arguments."""


@attrs.frozen
class _Participant:
    routing_key: str
    key_rank: int
    priority: int
    group: str | None
    head: int
    served: int | None
    limit: GroupLimit

    @property
    def turn(self) -> tuple[bool, int, int]:
        """Served longest ago first; never served first of all, by its oldest job."""
        return (self.served is not None, self.served or 0, self.head)

    @property
    def mark(self) -> str:
        return UNGROUPED if self.group is None else self.group


_parsed: dict[tuple[str, str], GroupLimit] = {}


def _limit(group: str, text: str | None) -> GroupLimit | None:
    """The stored limit ``text`` of ``group`` (None: none stored); unreadable: paused, said once."""
    if text is None:
        return None
    found = _parsed.get((group, text))
    if found is None:
        try:
            found = GroupLimit.from_json(text)
        except JobDecodeError as exc:
            found = unreadable_limit(group, exc)
        if len(_parsed) > 10_000:
            _parsed.clear()
        _parsed[(group, text)] = found
    return found


def _participants(req: GroupClaim, rows: Iterable[Any]) -> list[_Participant]:
    ranks = {key: i for i, key in enumerate(req.keys)}
    wanted = set(req.ranks)
    found = []
    for routing_key, priority, group, head, served, own, fallback in rows:
        if int(priority) not in wanted or routing_key not in ranks:
            continue
        limit = GroupLimit() if group is None else effective_limit(_limit(group, own), _limit("*", fallback))
        found.append(
            _Participant(
                routing_key=routing_key, key_rank=ranks[routing_key], priority=int(priority), group=group,
                head=int(head), served=None if served is None else int(served), limit=limit,
            )
        )  # fmt: skip
    return found


def _bound(p: _Participant, left: int) -> int:
    """The most ``p`` could take before its usage is known."""
    bound = left
    if p.limit.max_running is not None:
        bound = min(bound, p.limit.max_running)
    if p.limit.rate is not None:
        bound = min(bound, p.limit.rate.burst)
    return bound


def _capacity(
    p: _Participant,
    left: int,
    locked: set[str],
    running: Mapping[str, tuple[int, float]],
    starts: Mapping[str, Sequence[float]],
    now: float,
) -> tuple[int, float | None]:
    """How many jobs ``p`` may start now, and (if none) when it may start one (None: unknown)."""
    cap = _bound(p, left)
    if p.group is None or p.limit.unlimited or cap <= 0:
        return cap, None
    if p.group not in locked:
        return 0, now + LOCKED_RETRY  # another claim is counting this group right now
    limit = p.limit
    wake: float | None = None
    if limit.max_running is not None:
        count, first_end = running.get(p.group, (0, math.inf))
        cap = min(cap, limit.max_running - count)
        if cap <= 0 and first_end != math.inf:
            wake = first_end  # the first lease to run out frees a slot, should its worker die
    if limit.rate is not None:
        counted = starts.get(p.group, ())
        free = limit.rate.burst - len(counted)
        if free <= 0:
            at = next_start_at(counted, limit.rate, now)
            wake = at if wake is None else max(wake, at)
        cap = min(cap, free)
    return max(cap, 0), wake


def claim_steps(req: GroupClaim) -> Generator[Step, Any, Claimed]:
    """A grouped claim as the steps it asks its dialect for (see the module docstring).

    How many jobs a participant has is not counted (that would read a big group's backlog):
    the turns are planned as if each had enough, and a take that finds a participant short
    plans the rest of the claim again without it."""
    parts = _participants(req, (yield ("participants", ())))
    grouped = any(p.group is not None for p in parts)
    levels: dict[tuple[int, int], list[_Participant]] = {}
    for p in parts:
        levels.setdefault((p.key_rank, p.priority), []).append(p)
    caps: dict[_Participant, int] = {}  # what each participant looked at may still take now
    wake_at: list[float] = []
    claimed: list[ClaimedRow] = []
    served: dict[str, None] = {}
    logged: list[str] = []
    left = req.limit
    while left > 0:
        order = yield from _plan(req, [levels[level] for level in sorted(levels)], caps, left, wake_at)
        if req.dry or not order:
            break
        counts: dict[_Participant, int] = {}
        for p in order:
            counts[p] = counts.get(p, 0) + 1
        take_grouped = [(p.routing_key, p.priority, p.group, n) for p, n in counts.items() if p.group is not None]
        take_plain = [(p.routing_key, p.priority, n) for p, n in counts.items() if p.group is None]
        lines: dict[tuple[str, int, str | None], list[tuple[int, ClaimedRow]]] = {}
        for seq, data, job_id, routing_key, priority, group, position in (yield ("take", (take_grouped, take_plain))):
            entry = (int(position), ClaimedRow(seq, data, job_id))
            lines.setdefault((routing_key, int(priority), group), []).append(entry)
        for line in lines.values():
            line.sort(key=lambda entry: entry[0], reverse=True)  # popped from the end: oldest first
        short = False
        for p in order:
            line = lines.get((p.routing_key, p.priority, p.group), [])
            if not line:
                caps[p], short = 0, True  # it had fewer jobs than its turns (or they were taken meanwhile)
                continue
            claimed.append(line.pop()[1])
            caps[p] -= 1
            left -= 1
            served.pop(p.mark, None)
            served[p.mark] = None  # the order of each participant's last turn
            if p.group is not None and p.limit.rate is not None:
                logged.append(p.group)
        if not short:
            break
    if req.dry:
        return Claimed([], grouped, min(wake_at, default=None), takes=any(c > 0 for c in caps.values()))
    if claimed:
        yield ("record", (list(served), logged))
    return Claimed(claimed, grouped, None if claimed else min(wake_at, default=None))


def _plan(
    req: GroupClaim, levels: list[list[_Participant]], caps: dict[_Participant, int], left: int, wake_at: list[float]
) -> Generator[Step, Any, list[_Participant]]:
    """The next ``left`` turns, highest level first, each level's participants in turn (served
    longest ago first). A participant not looked at yet is locked and counted first (in
    batches, growing while the groups looked at are held back); ``caps`` and ``wake_at`` are
    kept up to date."""
    order: list[_Participant] = []
    for level in levels:
        if left <= 0:
            break
        candidates = sorted(level, key=lambda p: p.turn)
        fresh = [p for p in candidates if p not in caps]
        size = left
        while fresh and (open_ := sum(1 for p in candidates if caps.get(p, 0) > 0)) < left:
            # Enough to fill the claim if all are free; twice as many each time some were not, so
            # however many groups are held back, the free ones behind them are reached in a few rounds.
            batch, fresh = fresh[: max(size, left - open_)], fresh[max(size, left - open_) :]
            size *= 2
            limited = sorted({p.group for p in batch if p.group is not None and not p.limit.unlimited
                              and _bound(p, left) > 0})  # fmt: skip
            locked: set[str] = set()
            running: dict[str, tuple[int, float]] = {}
            starts: dict[str, list[float]] = {}
            if limited:
                locked = set((yield ("lock", (limited,))))
                windows = {
                    p.group: (req.now - p.limit.rate.window, p.limit.rate.burst)
                    for p in batch
                    if p.group in locked and p.limit.rate is not None
                }
                running, starts = yield ("usage", (sorted(locked), windows))
            for p in batch:
                caps[p], wake = _capacity(p, req.limit, locked, running, starts, req.now)
                if caps[p] <= 0 and wake is not None and wake > req.now:
                    wake_at.append(wake)
        admitted = [p for p in candidates if caps.get(p, 0) > 0]
        if req.dry and admitted:
            return admitted
        given: dict[_Participant, int] = {}
        while left > 0:
            before = left
            for p in admitted:
                if left > 0 and given.get(p, 0) < caps[p]:
                    given[p] = given.get(p, 0) + 1
                    order.append(p)
                    left -= 1
            if left == before:
                break
    return order


def run_steps(steps: Generator[Step, Any, Claimed], dialect: Any) -> Claimed:
    """Run ``steps`` on a dialect whose step methods return plainly (SQLite)."""
    try:
        name, args = next(steps)
        while True:
            name, args = steps.send(getattr(dialect, name)(*args))
    except StopIteration as done:
        result: Claimed = done.value
        return result


async def run_steps_async(steps: Generator[Step, Any, Claimed], dialect: Any) -> Claimed:
    """Run ``steps`` on a dialect whose step methods are coroutines (PostgreSQL)."""
    try:
        name, args = next(steps)
        while True:
            name, args = steps.send(await getattr(dialect, name)(*args))
    except StopIteration as done:
        result: Claimed = done.value
        return result


class SqlGroups:
    """The group limits of :class:`~bananas_sql.queue.SqlQueue` (mixed in): stored in
    ``group_limits`` as :meth:`GroupLimit.to_json <bananas.groups.GroupLimit.to_json>` text."""

    db: Database
    _group_q: Mapping[str, Any] | None = None
    _grouped = False
    """The last claim found grouped jobs due: claims go through the group rules."""
    _group_wake_at: float | None = None
    """The last claim took nothing: when a group it held back may start a job."""

    async def claim_grouped(
        self,
        keys: Sequence[str],
        prios: Sequence[JobPriority],
        limit: int,
        now: float,
        lease_until: float,
        names: Sequence[str] | None,
        token: str,
    ) -> list[ClaimedRow]:
        """A claim through the group rules (see :mod:`bananas_sql.groups`). Claims go on this way
        while grouped jobs are due, and remember when a group held back may start a job again."""
        ranks = tuple(sorted({p.rank for p in prios}))
        req = GroupClaim(
            tuple(keys), ranks, set(prios) == set(ALL_PRIORITIES), None if names is None else tuple(names),
            limit, now, lease_until, token,
        )  # fmt: skip
        claimed = await self.db.claim_grouped(req)
        self._grouped = claimed.grouped
        self._group_wake_at = claimed.wake_at if not claimed.rows else None
        return claimed.rows

    def work_wait(self, timeout: float) -> float:
        """``timeout``, cut short to when a group held back by the last claim may start a job."""
        if self._group_wake_at is None:
            return timeout
        return max(0.0, min(timeout, self._group_wake_at - self.db.clock()))

    def _gq(self) -> Mapping[str, Any]:
        if self._group_q is None:
            sql = GroupSql(self.db.names.as_mapping())
            names = ("set_limit", "get_limit", "all_limits", "remove_limit", "prune_starts", "prune_state")
            self._group_q = {name: self.db.statement(getattr(sql, name)) for name in names}
        return self._group_q

    async def set_group_limit(self, group: str, limit: GroupLimit) -> None:
        """Store ``limit`` for ``group`` (or ``"*"``), replacing any; one statement."""
        params = {"group": group, "data": limit.to_json()}
        statement = self._gq()["set_limit"]

        async def work(conn: Connection) -> None:
            await conn.execute(statement, params)

        await self.db.run(work, single=True)

    async def get_group_limit(self, group: str) -> GroupLimit | None:
        """The limit stored for ``group`` itself, or None; an unreadable one reads as paused."""
        statement = self._gq()["get_limit"]

        async def work(conn: Connection) -> Any:
            return (await conn.execute(statement, {"group": group})).first()

        row = await self.db.run(work, readonly=True)
        return None if row is None else _limit(group, str(row.data))

    async def group_limits(self) -> dict[str, GroupLimit]:
        """Every stored limit by group name, ``"*"`` included; unreadable ones are left out."""
        statement = self._gq()["all_limits"]

        async def work(conn: Connection) -> list[Any]:
            return list((await conn.execute(statement)).all())

        limits = {}
        for row in await self.db.run(work, readonly=True):
            try:
                limits[str(row.group_name)] = GroupLimit.from_json(str(row.data))
            except JobDecodeError:
                continue
        return limits

    async def remove_group_limit(self, group: str) -> bool:
        """Forget the limit stored for ``group``; True if there was one."""
        statement = self._gq()["remove_limit"]

        async def work(conn: Connection) -> bool:
            return (await conn.execute(statement, {"group": group})).rowcount > 0

        return await self.db.run(work, single=True)

    async def prune_groups(self, conn: Connection, now: float) -> None:
        """In ``conn``'s transaction: drop starts no window counts and long-forgotten turns."""
        q = self._gq()
        await conn.execute(q["prune_starts"], {"before": now - LONGEST_WINDOW})
        await conn.execute(q["prune_state"], {"forgotten": now - FORGET_GROUPS_AFTER})

"""Groups with limits on ``memory://``: :class:`~bananas.protocols.GroupLimits` and the claim
of lines holding grouped jobs, under the store's lock (the rules are :mod:`bananas.groups`)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from bananas.backends._memory_store import MemoryPart, MemoryStore
from bananas.groups import DEFAULT_GROUP, GroupLimit, admits, effective_limit, next_start_at
from bananas.job import Job, JobPriority

__all__ = ["MemoryGroups"]

_LONGEST_WINDOW = 3600.0
"""Starts older than the longest rate window count for nothing and are forgotten."""
_NO_GROUP = ""
"""The participant of a line's turns that stands for its jobs without a group."""


class MemoryGroups(MemoryPart):
    """Limits live in ``store.group_limits``; ``store.running`` holds the slots, ``store.starts`` the starts."""

    if TYPE_CHECKING:  # provided by MemoryQueue

        def _load_or_bury(self, job_id: str, now: float, what: str) -> Job | None: ...

    async def set_group_limit(self, group: str, limit: GroupLimit) -> None:
        """Store ``limit`` for ``group`` (or ``"*"``), replacing any."""
        s = self._store
        with s.lock:
            s.group_limits[group] = limit
        s.work_signal.wake_all()  # a looser limit may let held-back jobs go

    async def get_group_limit(self, group: str) -> GroupLimit | None:
        """The limit stored for ``group`` itself, or ``None``."""
        with self._store.lock:
            return self._store.group_limits.get(group)

    async def group_limits(self) -> dict[str, GroupLimit]:
        """Every stored limit, ``"*"`` included."""
        with self._store.lock:
            return dict(sorted(self._store.group_limits.items()))

    async def remove_group_limit(self, group: str) -> bool:
        """Forget ``group``'s limit; True if there was one."""
        s = self._store
        with s.lock:
            removed = s.group_limits.pop(group, None) is not None
        if removed:
            s.work_signal.wake_all()
        return removed

    # -- the claim of a line with grouped jobs; the caller holds the lock --------------------

    def _limit(self, group: str) -> GroupLimit:
        limits = self._store.group_limits
        return effective_limit(limits.get(group), limits.get(DEFAULT_GROUP))

    def _running(self, now: float) -> Mapping[str, int]:
        """How many slots each group holds at ``now`` (claimed, lease still running), counted
        when asked."""
        return _Running(self._store, now)

    def _admitted(self, group: str, running: Mapping[str, int], now: float) -> bool:
        limit = self._limit(group)
        held = 0 if limit.max_running is None else running.get(group, 0)  # counted only where it matters
        return admits(limit, held, self._store.starts.get(group, ()), now)

    def _pick(self, line: tuple[str, JobPriority], names: set[str] | None, now: float) -> str | None:
        """The id the next turn of ``line`` takes: the FIFO head of the participant (a group its
        limit admits, or the jobs without a group) served longest ago; ``None`` if none."""
        s = self._store
        running = self._running(now)
        served = s.served.get(line, {})
        heads: dict[str, tuple[int, str]] = {}
        held: set[str] = set()
        ready = s.ready.get(line, deque())
        ids = ready if names is None else list(ready)  # a copy where looking may bury (change the line)
        counts = s.line_groups.get(line, {})
        present = len(counts) + (1 if len(ready) > sum(counts.values()) else 0)  # participants in the line
        for index, job_id in enumerate(ids):
            if len(heads) + len(held) >= present:
                break  # every participant's head is found: the rest of the line changes nothing
            who = s.group_of.get(job_id, _NO_GROUP)
            if who in heads or who in held:
                continue
            if who != _NO_GROUP and not self._admitted(who, running, now):
                held.add(who)
                continue
            if names is not None:
                job = self._load_or_bury(job_id, now, "claimed")
                if job is None or job.name not in names:
                    continue  # buried (off the line), or left for another worker
            heads[who] = (index, job_id)
        if not heads:
            return None
        who = min(heads, key=lambda p: (served.get(p, -1), heads[p][0]))
        s.turns += 1
        s.served.setdefault(line, {})[who] = s.turns
        return heads[who][1]

    def _take_turn(self, line: tuple[str, JobPriority], names: set[str] | None, now: float) -> Job | None:
        """Take the next job of ``line`` by turns, holding its group's slot (and recording its
        start); ``None`` if nothing may be taken. Unreadable jobs met on the way are buried."""
        s = self._store
        while (job_id := self._pick(line, names, now)) is not None:
            job = self._load_or_bury(job_id, now, "claimed")
            if job is None:
                continue  # buried, and so off the line
            s.ready[line].remove(job_id)
            group = s.take_grouped(line, job_id)
            if group is not None:
                s.running[job_id] = group
                s.slots.setdefault(group, set()).add(job_id)
                if self._limit(group).rate is not None:
                    self._record_start(group, now)
            return job
        return None

    def _record_start(self, group: str, now: float) -> None:
        starts = self._store.starts.setdefault(group, deque())
        starts.append(now)
        while starts and starts[0] <= now - _LONGEST_WINDOW:
            starts.popleft()

    def _claimable(self, lines: Iterable[tuple[str, JobPriority]], now: float) -> bool:
        """True if a claim of ``lines`` would find a job (held-back grouped jobs do not count)."""
        s = self._store
        running = self._running(now)
        for line in lines:
            counts = s.line_groups.get(line, {})
            if len(s.ready.get(line, ())) > sum(counts.values()):
                return True  # a job without a group
            if any(self._admitted(group, running, now) for group in counts):
                return True
        return False

    def _next_free(self, lines: Iterable[tuple[str, JobPriority]], now: float) -> float | None:
        """When a group holding back ready jobs of ``lines`` may next start one (a lease running
        out, a start leaving the rate window); ``None`` if only a settle or a new limit can free one."""
        s = self._store
        groups = {group for line in lines for group in s.line_groups.get(line, {})}
        times: list[float] = []
        for group in groups:
            limit = self._limit(group)
            at = next_start_at(s.starts.get(group, ()), limit.rate, now)
            if limit.max_running == 0:
                continue  # paused: only a new limit lets it go
            if limit.max_running is not None:
                leases = sorted(d for i in s.slots.get(group, ()) if (d := s.processing.get(i, now)) > now)
                if len(leases) >= limit.max_running:
                    at = max(at, leases[len(leases) - limit.max_running])
            times.append(at)
        return min(times) if times else None

    def _lines(self, routing_keys: Iterable[str]) -> list[tuple[str, JobPriority]]:
        keys = set(routing_keys)
        return [line for line, ids in self._store.ready.items() if line[0] in keys and ids]


class _Running(Mapping[str, int]):
    """Each group's slots held at ``now``, counted for the groups asked about (a claim asks
    about a few; the store may hold many claimed jobs)."""

    def __init__(self, store: MemoryStore, now: float) -> None:
        self._store, self._now = store, now
        self._counted: dict[str, int] = {}

    def __getitem__(self, group: str) -> int:
        if group not in self._counted:
            s, now = self._store, self._now
            self._counted[group] = sum(1 for i in s.slots.get(group, ()) if s.processing.get(i, now) > now)
        return self._counted[group]

    def __iter__(self) -> Iterator[str]:
        return iter(self._store.slots)

    def __len__(self) -> int:
        return len(self._store.slots)

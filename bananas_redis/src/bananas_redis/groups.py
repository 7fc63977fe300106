"""Redis's :class:`~bananas.protocols.GroupLimits`: the limits hash, and the wake-up after a
grouped job's settle.

The rules are :mod:`bananas.groups`; the claim applies them in Lua (grouplib.lua, included by
claim.lua) in the same script that takes the job. Limits are ``{ns}:groups:limits``, a hash of
group (or ``*``) -> :meth:`GroupLimit.to_json <bananas.groups.GroupLimit.to_json>`; a value
nobody can read holds its group back (and is left out of :meth:`RedisGroups.group_limits`,
with a WARNING). Writes wait for the replicas with ``wait_replicas``, as every write does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bananas.groups import GroupLimit, unreadable_limit
from bananas.job import Job

if TYPE_CHECKING:
    from bananas_redis.connection import Connection
    from bananas_redis.keys import Keys

__all__ = ["RedisGroups"]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class RedisGroups:
    """Mixed into :class:`~bananas_redis.queue.RedisQueue`."""

    conn: Connection
    k: Keys

    async def _write_limit(self, group: str, text: str) -> int:
        keys, args = [self.k.group_limits], [group, text]
        if self.conn.wait_replicas:
            return int(await self.conn.run_replicated("group_limit", keys, args, f"group limit of {group!r}"))
        return int(await self.conn.call("group_limit", keys, args, f"group limit of {group!r}"))

    async def set_group_limit(self, group: str, limit: GroupLimit) -> None:
        """Store ``limit`` for ``group`` (or ``"*"``), replacing any."""
        await self._write_limit(group, limit.to_json())

    async def get_group_limit(self, group: str) -> GroupLimit | None:
        """The limit stored for ``group`` itself, or ``None`` (an unreadable one: what is applied,
        paused)."""
        raw = await self.conn.run(lambda: self.conn.client.hget(self.k.group_limits, group), "get_group_limit")
        if raw is None:
            return None
        try:
            return GroupLimit.from_json(raw)
        except Exception as exc:  # hostile data: the claim holds the group back; say so here too
            return unreadable_limit(group, exc)

    async def group_limits(self) -> dict[str, GroupLimit]:
        """Every readable stored limit, ``"*"`` included, by group name."""
        raw = await self.conn.run(lambda: self.conn.client.hgetall(self.k.group_limits), "group_limits")
        out: dict[str, GroupLimit] = {}
        for key, value in raw.items():
            group = _text(key)
            try:
                out[group] = GroupLimit.from_json(value)
            except Exception as exc:  # hostile data: left out, and the claim holds the group back
                unreadable_limit(group, exc)
        return dict(sorted(out.items()))

    async def remove_group_limit(self, group: str) -> bool:
        """Forget ``group``'s limit; True if there was one."""
        return await self._write_limit(group, "") == 1

    async def group_settled(self, job: Job) -> None:
        """After a settle of a grouped job (a slot may be free): wake the workers waiting for its
        routing key. Nothing for a job without a group (no round trip)."""
        if job.group is None:
            return
        k, now = self.k, self.conn.now()
        args = [k.wakeup, job.routing_key, k.waiting(""), k.waiter(""), k.inbox(""), repr(now)]
        await self.conn.call("group_wake", [k.leases], args, "wake workers")

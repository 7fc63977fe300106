"""Following a settled step's links, for backends that run Python inside their atomic write
(memory://, SQL). Redis does the same in Lua (wflib.lua). Await :func:`settle_step` inside the
write (lock or transaction) that records the step's completion, death or cancellation; the
store's methods are coroutines so that a database connection can serve them (memory's never
suspend)."""

from __future__ import annotations

from typing import Protocol

from bananas.workflows.plan import (
    GROUP_FAILED,
    GROUP_FIELD,
    PREVIOUS_FIELD,
    SETTLED_STATES,
    Join,
    Link,
    cancelled_outcome,
    failed_outcome,
    ok_outcome,
)

__all__ = ["StepStore", "settle_step"]


class StepStore(Protocol):
    """The primitive writes of one workflow's links, inside the caller's atomic write."""

    async def links(self, job_id: str) -> tuple[Link, Link] | None:
        """The step's ``(on_success, on_dead)`` links while it is ``created`` (not settled yet);
        ``None`` once it was settled, or if the workflow is gone."""
        ...

    async def set_outcome(self, job_id: str, state: str, outcome: str) -> None:
        """Record the step as ``completed``, ``dead`` or ``cancelled`` with its outcome (JSON text)."""
        ...

    async def create(self, job_ids: tuple[str, ...], field: str, value: str) -> int:
        """Enqueue the waiting steps ``job_ids`` with ``field`` = ``value`` (JSON text) added and
        record them ``created``; a step no longer waiting (created, or cancelled before it was)
        is left alone. Returns how many were created."""
        ...

    async def join(self, join_id: str) -> Join:
        """The join's definition."""
        ...

    async def arrive(self, join_id: str, slot: int, outcome: str, value: str, ok: bool) -> tuple[int, int]:
        """Fill ``slot`` (once: a repeat changes nothing) and return ``(arrived, failed)`` counts after it."""
        ...

    async def slots(self, join_id: str) -> list[tuple[str, str]]:
        """``(outcome, value)`` of every slot, in slot order (all have arrived)."""
        ...

    async def add_open(self, delta: int) -> int | None:
        """Add ``delta`` to the workflow's count of steps created and not yet settled; return the
        new count (``None`` for a workflow stored without the count: it is never expired)."""
        ...

    async def expire(self, ttl: float) -> None:
        """Make the workflow's whole record expire ``ttl`` seconds from now."""
        ...


async def settle_step(store: StepStore, job_id: str, state: str, value: str, error: str, *, ttl: float) -> None:
    """Record step ``job_id`` as ``state`` (``completed`` with ``value``, its result as JSON text;
    ``dead`` or ``cancelled`` with ``error``) and follow its link: ``on_success`` for a
    completion, ``on_dead`` otherwise. A step already settled changes nothing (its link was
    followed then). When no step is left running, the record expires after ``ttl`` seconds."""
    assert state in SETTLED_STATES, state
    links = await store.links(job_id)
    if links is None:
        return
    on_success, on_dead = links
    ok = state == "completed"
    if ok:
        outcome = ok_outcome(value)
    elif state == "cancelled":
        outcome = cancelled_outcome(error)
    else:
        outcome = failed_outcome(error)
    await store.set_outcome(job_id, state, outcome)
    link = on_success if ok else on_dead
    created = 0
    if ok and link.start:
        created += await store.create(link.start, PREVIOUS_FIELD, value)
    if link.join is not None:
        created += await _arrive(store, link.join, outcome, value if ok else "null", ok)
    left = await store.add_open(created - 1)
    if left is not None and left <= 0:
        await store.expire(ttl)


async def _arrive(store: StepStore, ref: tuple[str, int], outcome: str, value: str, ok: bool) -> int:
    """Arrive at a join; how many steps that created."""
    join_id, slot = ref
    arrived, failed = await store.arrive(join_id, slot, outcome, value, ok)
    join = await store.join(join_id)
    if arrived != join.size:
        return 0
    created = 0
    if failed == 0 or join.allow_failures:
        slots = await store.slots(join_id)
        if join.then:
            created += await store.create(join.then, GROUP_FIELD, "[" + ",".join(o for o, _ in slots) + "]")
        if join.ok_up is not None:
            values = "[" + ",".join(v for _, v in slots) + "]"
            created += await _arrive(store, join.ok_up, ok_outcome(values), values, True)
    elif join.fail_up is not None:
        created += await _arrive(store, join.fail_up, failed_outcome(GROUP_FAILED), "null", False)
    return created

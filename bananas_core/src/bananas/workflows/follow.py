"""Following a settled step's links, for backends that run Python inside their atomic write
(memory://, SQL). Redis does the same in Lua. Await :func:`settle_step` inside the write
(lock or transaction) that records the step's completion or death; the store's methods are
coroutines so that a database connection can serve them (memory's never suspend)."""

from __future__ import annotations

from typing import Protocol

from bananas.workflows.plan import GROUP_FAILED, GROUP_FIELD, PREVIOUS_FIELD, Join, Link, failed_outcome, ok_outcome

__all__ = ["StepStore", "settle_step"]


class StepStore(Protocol):
    """The primitive writes of one workflow's links, inside the caller's atomic write."""

    async def links(self, job_id: str) -> tuple[Link, Link] | None:
        """The step's ``(on_success, on_dead)`` links; ``None`` if the workflow is gone."""
        ...

    async def set_outcome(self, job_id: str, state: str, outcome: str) -> None:
        """Record the step as ``completed`` or ``dead`` with its outcome (JSON text)."""
        ...

    async def create(self, job_ids: tuple[str, ...], field: str, value: str) -> None:
        """Enqueue the waiting steps ``job_ids`` with ``field`` = ``value`` (JSON text) added;
        a step already created is left alone."""
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


async def settle_step(store: StepStore, job_id: str, ok: bool, value: str, error: str = "") -> None:
    """Record step ``job_id`` as completed (``value``: its result as JSON text) or dead
    (``error``), and follow its link."""
    links = await store.links(job_id)
    if links is None:
        return
    on_success, on_dead = links
    outcome = ok_outcome(value) if ok else failed_outcome(error)
    await store.set_outcome(job_id, "completed" if ok else "dead", outcome)
    link = on_success if ok else on_dead
    if ok and link.start:
        await store.create(link.start, PREVIOUS_FIELD, value)
    if link.join is not None:
        await _arrive(store, link.join, outcome, value if ok else "null", ok)


async def _arrive(store: StepStore, ref: tuple[str, int], outcome: str, value: str, ok: bool) -> None:
    join_id, slot = ref
    arrived, failed = await store.arrive(join_id, slot, outcome, value, ok)
    join = await store.join(join_id)
    if arrived != join.size:
        return
    if failed == 0 or join.allow_failures:
        slots = await store.slots(join_id)
        if join.then:
            await store.create(join.then, GROUP_FIELD, "[" + ",".join(o for o, _ in slots) + "]")
        if join.ok_up is not None:
            values = "[" + ",".join(v for _, v in slots) + "]"
            await _arrive(store, join.ok_up, ok_outcome(values), values, True)
    elif join.fail_up is not None:
        await _arrive(store, join.fail_up, failed_outcome(GROUP_FAILED), "null", False)

"""The PostgreSQL queue: idle workers are handed new jobs by the transaction that made them
ready (``claim_or_wait``), one hop from producer to worker."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection, Sequence

from bananas.errors import InvalidJob
from bananas.job import ALL_PRIORITIES, Job, JobPriority
from bananas.protocols import DEFAULT_LEASE_SECONDS

from bananas_sql.database import ClaimedRow
from bananas_sql.pg.database import PostgresDatabase
from bananas_sql.queue import SqlQueue
from bananas_sql.rows import claim_arguments, new_lease_token


class PostgresQueue(SqlQueue):
    """:class:`SqlQueue` whose idle workers are handed new jobs by the transaction that made
    them ready (``claim_or_wait``), as on Redis: one hop from producer to worker.

    A worker whose claim finds nothing registers in the waiters table in the same statement,
    under a slot of its process's hand-off channel (one LISTEN per process, however many
    workers), and waits. The triggers that announce work (see :mod:`bananas_sql.migrate`)
    claim a job made ready for a registered worker that takes its routing key and priority
    (state and lease, on the worker's clock) and send it, data included, to that slot. Jobs
    handed over while their worker was not waiting are kept for its next claim; until then
    their leases are renewed with the running jobs'. A hand-off whose notification is lost
    (the listening connection dropped, or the worker stopped just then) is recovered when its
    lease runs out, like any job of a worker that died.
    """

    db: PostgresDatabase

    def __init__(self, db: PostgresDatabase) -> None:
        super().__init__(db)
        self._slots: dict[str, int] = {}
        """Each waiter's slot on this process's hand-off channel."""
        self._serves: dict[int, tuple[frozenset[str], frozenset[JobPriority]]] = {}
        """Per slot of a worker that has not stopped waiting: the routing keys and priorities it
        registered for, so a plain claim takes only handed-over jobs it asked for."""

    async def claim(
        self,
        routing_keys: Sequence[str],
        priorities: Sequence[JobPriority] = ALL_PRIORITIES,
        *,
        limit: int = 1,
        lease: float = DEFAULT_LEASE_SECONDS,
        job_names: Collection[str] | None = None,
    ) -> list[Job]:
        keys, prios, _ = claim_arguments(routing_keys, priorities, limit, job_names)
        handed: list[Job] = []
        if job_names is None and self._serves:
            asked_keys, asked_prios = set(keys), set(prios)
            for slot, (served_keys, served_prios) in list(self._serves.items()):
                if len(handed) < limit and served_keys <= asked_keys and served_prios <= asked_prios:
                    handed += await self._take_handed(slot, limit - len(handed))
        if len(handed) >= limit:
            return handed
        return handed + await super().claim(
            routing_keys, priorities, limit=limit - len(handed), lease=lease, job_names=job_names
        )

    async def claim_or_wait(
        self,
        routing_keys: Sequence[str],
        priorities: Sequence[JobPriority] = ALL_PRIORITIES,
        *,
        limit: int = 1,
        lease: float = DEFAULT_LEASE_SECONDS,
        waiter: str,
        timeout: float,
    ) -> list[Job]:
        """Claim like :meth:`claim`; if nothing is ready, wait up to ``timeout`` seconds for a
        job handed over by the next transaction that makes one ready (already claimed, leased
        for ``lease`` seconds). ``waiter`` is a token unique to the worker. Returns ``[]`` when
        the wait ran out or the worker was only woken. Call :meth:`stop_waiting` on stop."""
        keys, prios, _ = claim_arguments(routing_keys, priorities, limit, None)
        if not keys or not prios:
            return []
        if lease <= 0:
            raise InvalidJob(f"lease must be > 0 seconds, got {lease!r}")
        db, listener = self.db, self.db.listener
        slot = self._slots.setdefault(waiter, len(self._slots))
        self._serves[slot] = (frozenset(keys), frozenset(prios))
        event = listener.hand_off_events.setdefault(slot, asyncio.Event())
        listener.start(listener.hand_off_channel)  # the first call reconnects to listen on it
        listener.start(listener.work_channel)
        db.note_waiting()
        jobs = await self._take_handed(slot, limit)
        # Register only while the listener is connected: a hand-off must never be sent to
        # a channel nobody listens on. Otherwise the ordinary work channel wakes the worker.
        register = not jobs and listener.connected
        now = self._now()
        lease_token = new_lease_token()
        rows = None
        if not self._grouped:
            rows = await db.claim_or_register(
                keys,
                prios,
                limit=limit - len(jobs),
                lease=lease,
                now=now,
                token=waiter,
                lease_token=lease_token,
                slot=slot,
                register=register,
                wait=timeout,
            )
        if rows is None and len(jobs) < limit:
            # Grouped jobs are due: no hand-off (a group's limits are a claim's to apply); the
            # work channel wakes the worker when a job is submitted or a group's slot frees.
            rows = await self.claim_grouped(keys, prios, limit - len(jobs), now, now + lease, None, lease_token)
        jobs += await self.claimed_jobs([(row, lease_token) for row in rows or ()], now)
        if jobs:
            return jobs
        # A wake-up since the last wait ended (set, not yet cleared) ends this one at once.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), self.work_wait(timeout))
        event.clear()
        return await self._take_handed(slot, limit)

    async def wait_for_work(self, routing_keys: Sequence[str], timeout: float) -> None:
        """Wait as :class:`SqlQueue` does; while grouped jobs are due, a wake-up that finds
        nothing a claim would take (a held-back group's job) waits on for the time left."""
        deadline = time.monotonic() + timeout
        while True:
            await super().wait_for_work(routing_keys, max(0.0, deadline - time.monotonic()))
            if not self._grouped or time.monotonic() >= deadline:
                return
            look = await self.db.grouped_takes(list(routing_keys), self._now())
            if look.takes:
                return
            self._group_wake_at = look.wake_at

    async def stop_waiting(self, waiter: str) -> list[Job]:
        """Unregister ``waiter`` and return the jobs handed to it that it has not taken (the
        caller releases them)."""
        await self.db.unregister(waiter)
        slot = self._slots.get(waiter)
        if slot is None:
            return []
        self._serves.pop(slot, None)
        self.db.listener.hand_off_events.pop(slot, None)
        return await self._take_handed(slot, len(self.db.listener.handed.get(slot, ())))

    async def wake_waiter(self, waiter: str) -> None:
        """End the current (or else the next) wait of ``waiter``, a worker of this process."""
        slot = self._slots.get(waiter)
        event = None if slot is None else self.db.listener.hand_off_events.get(slot)
        if event is not None:
            event.set()

    async def renew(self, jobs: Sequence[Job], lease: float = DEFAULT_LEASE_SECONDS) -> set[str]:
        buffers = [self.db.listener.handed.get(slot, ()) for slot in self._serves]
        handed = [(seq, token) for buffer in buffers for seq, token, _ in _parse_handed(buffer)]
        if handed:  # kept for this worker's next claim: theirs is its lease to keep
            await self.db.renew_handed(handed, self._now() + lease)
        return await super().renew(jobs, lease)

    async def _take_handed(self, slot: int, limit: int) -> list[Job]:
        """Up to ``limit`` of the jobs handed over to ``slot`` and not yet taken, oldest first."""
        buffer = self.db.listener.handed.get(slot)
        if not buffer or limit < 1:
            return []
        taken = buffer[:limit]
        del buffer[:limit]
        entries = _parse_handed(taken)
        missing = [(seq, token) for seq, token, data in entries if data is None]
        fetched = await self.db.handed_rows(missing) if missing else {}
        rows = []
        for seq, token, data in entries:
            if data is not None:
                rows.append((ClaimedRow(seq, data, f"#{seq}"), token))
            elif seq in fetched:  # gone if reaped or finished meanwhile: no longer ours
                rows.append((fetched[seq], token))
        return await self.claimed_jobs(rows, self._now())


def _parse_handed(payloads: Sequence[str]) -> list[tuple[int, str, str | None]]:
    """``(seq, lease token, data or None)`` of hand-off payloads (``seq token``, or ``seq token data``)."""
    entries: list[tuple[int, str, str | None]] = []
    for payload in payloads:
        seq, _, rest = payload.partition(" ")
        token, _, data = rest.partition(" ")
        entries.append((int(seq), token, data or None))
    return entries

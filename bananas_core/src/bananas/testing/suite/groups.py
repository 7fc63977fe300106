"""Conformance tests of groups with limits: :class:`~bananas.protocols.GroupLimits` and what
the queue's own methods do with grouped jobs, under the ``groups`` capability marker.

The rules are :mod:`bananas.groups`: at most ``max_running`` of a group's jobs hold a running
lease at once (a slot is freed by every settle and when the lease runs out); at most ``rate``
starts in any window (spaced: one start per per/count seconds); a job held back stays queued untouched while claims
take the jobs behind it; within one routing key and priority, groups take turns; priorities
and routing keys keep their meaning; ``"*"`` is the default of groups without a limit.
Time is the suite's :class:`~bananas.clock.ManualClock`, never landed on a boundary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from bananas.backend import Backend
from bananas.cancel import CANCELLED_WHILE_RUNNING
from bananas.capabilities import Capability
from bananas.clock import ManualClock
from bananas.errors import InvalidGroup, LeaseLost
from bananas.groups import DEFAULT_GROUP, GroupLimit, Rate
from bananas.job import Job, JobPriority, JobStatus
from bananas.protocols import Cancellation, GroupLimits, HandOff
from bananas.testing.suite._helpers import claim_ids, drain, new_job

__all__ = ["GroupTests"]

GROUPS = pytest.mark.bananas_capability(Capability.GROUPS)


def group_queue(backend: Backend) -> GroupLimits:
    """The backend's queue as a :class:`GroupLimits` (asserting that it is one)."""
    queue = backend.queue
    assert isinstance(queue, GroupLimits), "the backend declares groups, but its queue is not a GroupLimits"
    return queue


async def limit(backend: Backend, group: str, max_running: int | None = None, rate: str | None = None) -> None:
    """Store a limit for ``group``."""
    await group_queue(backend).set_group_limit(group, GroupLimit(max_running=max_running, rate=rate))


async def enqueue(backend: Backend, clock: ManualClock, group: str | None, n: int = 1, **fields: Any) -> list[str]:
    """``n`` jobs of ``group`` (``None``: no group), enqueued one at a time; their ids."""
    jobs = [new_job(clock, group=group, **fields) for _ in range(n)]
    for job in jobs:
        await backend.queue.enqueue(job)
    return [job.id for job in jobs]


async def claim_one(backend: Backend, lease: float = 60, keys: Sequence[str] = ("default",)) -> list[Job]:
    return await backend.queue.claim(list(keys), limit=1, lease=lease)


async def assert_untouched(backend: Backend, job_ids: Sequence[str]) -> None:
    """Held-back jobs: still pending, no attempt counted, no error."""
    for job_id in job_ids:
        stored = await backend.queue.get_job(job_id)
        assert (stored.status, stored.attempts, stored.error) == (JobStatus.PENDING, 0, ""), (
            f"held-back job {job_id} was changed: {stored.status.value}, attempts {stored.attempts}, {stored.error!r}"
        )


class GroupTests:
    """set/get/remove limits; max_running, rate, turns and the default under claims."""

    async def test_groups_declared_means_offered(self, bananas_backend: Backend) -> None:
        if bananas_backend.supports(Capability.GROUPS):
            group_queue(bananas_backend)

    @GROUPS
    async def test_groups_a_job_keeps_its_group(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        grouped, plain = new_job(bananas_clock, group="tenant-42"), new_job(bananas_clock)
        await bananas_backend.queue.enqueue_many([grouped, plain])
        assert (await bananas_backend.queue.get_job(grouped.id)).group == "tenant-42"
        assert "group" not in (await bananas_backend.queue.get_job(plain.id)).to_dict()
        claimed = await bananas_backend.queue.claim(["default"], limit=5)
        assert {job.id: job.group for job in claimed} == {grouped.id: "tenant-42", plain.id: None}

    @GROUPS
    async def test_groups_limits_read_back_replaced_and_removed(self, bananas_backend: Backend) -> None:
        queue = group_queue(bananas_backend)
        assert await queue.group_limits() == {}
        assert await queue.get_group_limit("tenant-42") is None
        await limit(bananas_backend, "tenant-42", 2, "10/s")
        await limit(bananas_backend, DEFAULT_GROUP, rate="100/m")
        await limit(bananas_backend, "free", None, None)
        assert await queue.get_group_limit("tenant-42") == GroupLimit(max_running=2, rate=Rate(10, 1.0))
        assert await queue.group_limits() == {
            "tenant-42": GroupLimit(max_running=2, rate="10/s"),
            DEFAULT_GROUP: GroupLimit(rate="100/m"),
            "free": GroupLimit(),
        }
        await limit(bananas_backend, "tenant-42", max_running=5)
        assert await queue.get_group_limit("tenant-42") == GroupLimit(max_running=5), "set must replace the limit"
        assert await queue.remove_group_limit("tenant-42") is True
        assert await queue.remove_group_limit("tenant-42") is False
        assert await queue.get_group_limit("tenant-42") is None
        assert set(await queue.group_limits()) == {DEFAULT_GROUP, "free"}

    @GROUPS
    async def test_groups_max_running_is_never_exceeded(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        await limit(bananas_backend, "A", max_running=2)
        ids = await enqueue(bananas_backend, bananas_clock, "A", 5)
        first = await claim_ids(bananas_backend, limit=10)
        assert first == ids[:2], f"max_running=2, but one claim took {len(first)} jobs of the group"
        assert await claim_ids(bananas_backend, limit=10) == [], "a third job of the group started"
        await assert_untouched(bananas_backend, ids[2:])
        assert (await bananas_backend.queue.depths()).total_ready == 3

    @GROUPS
    @pytest.mark.parametrize("settle", ["complete", "retry", "dead", "release"])
    async def test_groups_every_settle_frees_the_slot(
        self, bananas_backend: Backend, bananas_clock: ManualClock, settle: str
    ) -> None:
        queue = bananas_backend.queue
        await limit(bananas_backend, "A", max_running=1)
        ids = await enqueue(bananas_backend, bananas_clock, "A", 2, max_retries=3)
        [held] = await claim_one(bananas_backend)
        assert await claim_ids(bananas_backend) == []
        if settle == "complete":
            await queue.complete(held)
        elif settle == "retry":
            await queue.fail(held, "boom", retry_at=bananas_clock.now() + timedelta(seconds=30))
        elif settle == "dead":
            await queue.fail(held, "boom", retry_at=None)
        else:
            await queue.release(held)
        expected = [held.id] if settle == "release" else [ids[1]]
        assert await claim_ids(bananas_backend, limit=5) == expected, f"the slot was not freed by {settle}"

    @GROUPS
    @pytest.mark.bananas_capability(Capability.CANCEL)
    async def test_groups_a_cancelled_attempt_frees_the_slot(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        queue = bananas_backend.queue
        assert isinstance(queue, Cancellation)
        await limit(bananas_backend, "A", max_running=1)
        ids = await enqueue(bananas_backend, bananas_clock, "A", 3)
        [held] = await claim_one(bananas_backend)
        assert await claim_ids(bananas_backend) == []
        await queue.cancel(ids[1])  # a waiting job of the group: gone from its line
        await queue.cancel(held.id)
        await queue.settle_cancelled(held, CANCELLED_WHILE_RUNNING)
        assert await claim_ids(bananas_backend, limit=5) == [ids[2]]

    @GROUPS
    async def test_groups_an_expired_lease_frees_the_slot_without_a_reaper(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        queue = bananas_backend.queue
        await limit(bananas_backend, "A", max_running=1)
        ids = await enqueue(bananas_backend, bananas_clock, "A", 3)
        [crashed] = await claim_one(bananas_backend, lease=10)
        bananas_clock.advance(9)
        assert await claim_ids(bananas_backend) == [], "the slot was freed while its lease ran"
        bananas_clock.advance(2)
        assert await claim_ids(bananas_backend, lease=30) == [ids[1]], "a crashed worker's slot leaked"
        assert await queue.reap_expired() == 1
        assert await claim_ids(bananas_backend, limit=5) == [], "the reaper freed a slot it did not hold"
        with pytest.raises(LeaseLost):
            await queue.complete(crashed)  # the crashed worker comes back: it frees nobody's slot
        assert await claim_ids(bananas_backend, limit=5) == [], "a stale settle freed the slot of another claim"

    @GROUPS
    async def test_groups_the_reaper_frees_the_slot_of_a_dead_job(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        await limit(bananas_backend, "A", max_running=1)
        ids = await enqueue(bananas_backend, bananas_clock, "A", 2, max_retries=0)
        await claim_one(bananas_backend, lease=10)
        assert await claim_ids(bananas_backend) == []
        bananas_clock.advance(11)
        assert await bananas_backend.queue.reap_expired() == 1
        assert (await bananas_backend.queue.get_job(ids[0])).status is JobStatus.FAILED
        assert await claim_ids(bananas_backend) == [ids[1]]

    @GROUPS
    async def test_groups_renew_keeps_the_slot(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        await limit(bananas_backend, "A", max_running=1)
        await enqueue(bananas_backend, bananas_clock, "A", 2)
        [held] = await claim_one(bananas_backend, lease=10)
        bananas_clock.advance(8)
        assert await bananas_backend.queue.renew([held], lease=10) == {held.id}
        bananas_clock.advance(5)
        assert await claim_ids(bananas_backend) == [], "a renewed lease lost its slot"

    @GROUPS
    async def test_groups_rate_spaces_the_starts(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        """``3/m``: one start every 20 s (a start counts for per/count seconds), never a burst."""
        queue = bananas_backend.queue
        await limit(bananas_backend, "A", rate="3/m")
        ids = await enqueue(bananas_backend, bananas_clock, "A", 7)
        started: list[str] = []

        async def claim_at(offset: float, expected: int) -> None:
            bananas_clock.set(t0 + offset)
            got = await queue.claim(["default"], limit=10, lease=600)
            assert len(got) == expected, f"{offset} s in, the rate 3/m let {len(got)} start, expected {expected}"
            started.extend(job.id for job in got)
            for job in got:
                await queue.complete(job)

        t0 = bananas_clock()
        await claim_at(0, 1)  # one at a time, however many are asked for
        await claim_at(0, 0)
        await claim_at(19.5, 0)
        await claim_at(20, 1)  # the start at 0 counts until 0 + 60/3
        await claim_at(45, 1)  # a late claim takes one, not the two it "saved"
        await claim_at(64.5, 0)
        await claim_at(65, 1)
        await claim_at(200, 1)
        assert started == ids[:5]
        await assert_untouched(bananas_backend, ids[5:])

    @GROUPS
    async def test_groups_a_held_back_group_blocks_nobody(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        await limit(bananas_backend, "A", max_running=1)
        a = await enqueue(bananas_backend, bananas_clock, "A", 3)
        b = await enqueue(bananas_backend, bananas_clock, "B", 1)
        plain = await enqueue(bananas_backend, bananas_clock, None, 1)
        got = [job.id for _ in range(4) for job in await claim_one(bananas_backend)]
        assert sorted(got) == sorted([a[0], b[0], plain[0]]), f"claims behind a held-back group took {got}"
        await assert_untouched(bananas_backend, a[1:])
        assert (await bananas_backend.queue.depths()).total_ready == 2

    @GROUPS
    async def test_groups_a_paused_group_waits_and_resumes(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        await limit(bananas_backend, "A", max_running=0)
        a = await enqueue(bananas_backend, bananas_clock, "A", 2)
        assert await claim_ids(bananas_backend, limit=5) == []
        await assert_untouched(bananas_backend, a)
        assert await group_queue(bananas_backend).remove_group_limit("A")
        assert await claim_ids(bananas_backend, limit=5) == a

    @GROUPS
    @pytest.mark.parametrize("batch", [1, 6])
    async def test_groups_take_turns_within_a_priority(
        self, bananas_backend: Backend, bananas_clock: ManualClock, batch: int
    ) -> None:
        big = await enqueue(bananas_backend, bananas_clock, "A", 100)
        small = await enqueue(bananas_backend, bananas_clock, "B", 3)
        first = [job_id for _ in range(6 // batch) for job_id in await claim_ids(bananas_backend, limit=batch)]
        assert len(first) == 6
        assert set(small) <= set(first), f"B's 3 jobs behind A's 100 were not served in turn: first six {first}"
        assert [i for i in first if i in big] == big[:3], "a group's jobs must come out FIFO"
        assert [i for i in first if i in small] == small

    @GROUPS
    async def test_groups_jobs_without_a_group_take_one_turn_together_in_fifo_order(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        plain = await enqueue(bananas_backend, bananas_clock, None, 4)
        a = await enqueue(bananas_backend, bananas_clock, "A", 4)
        order = await drain(bananas_backend)
        assert [i for i in order if i in plain] == plain, "jobs without a group must keep FIFO order"
        assert [i for i in order if i in a] == a
        assert set(a[:2]) <= set(order[:4]), f"the group waited behind every job without one: {order}"

    @GROUPS
    async def test_groups_priorities_win_over_turns(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        await limit(bananas_backend, "A", max_running=1)
        low = await enqueue(bananas_backend, bananas_clock, "B", 2, priority=JobPriority.LOW)
        high = await enqueue(bananas_backend, bananas_clock, "C", 2, priority=JobPriority.HIGH)
        held = await enqueue(bananas_backend, bananas_clock, "A", 2, priority=JobPriority.HIGH)
        order = await claim_ids(bananas_backend, limit=10)
        assert set(order[:3]) == {*high, held[0]}, f"high-priority jobs must come first: {order}"
        assert order[3:] == low

    @GROUPS
    async def test_groups_routing_keys_keep_their_meaning(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        await limit(bananas_backend, "A", max_running=1)
        gpu = await enqueue(bananas_backend, bananas_clock, "A", 1, routing_key="gpu")
        cpu = await enqueue(bananas_backend, bananas_clock, "A", 1)
        assert await claim_ids(bananas_backend, ["gpu"], limit=5) == gpu
        assert await claim_ids(bananas_backend, ["default"], limit=5) == [], "the limit holds across routing keys"
        await limit(bananas_backend, "A", max_running=2)
        assert await claim_ids(bananas_backend, ["default"], limit=5) == cpu

    @GROUPS
    async def test_groups_the_default_applies_to_each_group_without_its_own(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        await limit(bananas_backend, DEFAULT_GROUP, max_running=1)
        x = await enqueue(bananas_backend, bananas_clock, "X", 3)
        y = await enqueue(bananas_backend, bananas_clock, "Y", 3)
        free = await enqueue(bananas_backend, bananas_clock, "free", 3)
        plain = await enqueue(bananas_backend, bananas_clock, None, 2)
        await limit(bananas_backend, "Y", max_running=2)  # its own limit replaces the default
        await limit(bananas_backend, "free")  # an own limit of nothing: exempt from the default
        got = set(await claim_ids(bananas_backend, limit=50))
        assert got == {x[0], *y[:2], *free, *plain}, "'*' must apply to each group without a limit of its own"

    @GROUPS
    async def test_groups_scheduled_retried_and_requeued_jobs_stay_in_their_group(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        queue = bananas_backend.queue
        await limit(bananas_backend, "A", max_running=1)
        [later] = await enqueue(bananas_backend, bananas_clock, "A", 1, delay=5)
        [now] = await enqueue(bananas_backend, bananas_clock, "A", 1, max_retries=1)
        bananas_clock.advance(6)
        assert await queue.move_scheduled() == 1
        [first] = await claim_one(bananas_backend)
        assert await claim_ids(bananas_backend) == []
        await queue.fail(first, "boom", retry_at=None)  # dead
        [second] = await claim_one(bananas_backend)
        assert {first.id, second.id} == {later, now}
        if bananas_backend.supports(Capability.DEAD_LETTER_ADMIN):
            assert await queue.requeue_dead([first.id]) == 1
            assert await claim_ids(bananas_backend) == [], "a requeued job must obey its group's limit"
            await queue.complete(second)
            assert await claim_ids(bananas_backend) == [first.id]

    @GROUPS
    async def test_groups_wait_for_work_ignores_held_back_jobs(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        await limit(bananas_backend, "A", max_running=1)
        await enqueue(bananas_backend, bananas_clock, "A", 2)
        [held] = await claim_one(bananas_backend)
        started = time.monotonic()
        await bananas_backend.queue.wait_for_work(["default"], 0.3)
        assert time.monotonic() - started >= 0.2, "wait_for_work returned at once for a job its group holds back"
        if not bananas_backend.supports(Capability.PUSH_WAKEUP):
            return
        waiting = asyncio.ensure_future(bananas_backend.queue.wait_for_work(["default"], 10))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await bananas_backend.queue.complete(held)
        await asyncio.wait_for(waiting, 5)
        assert time.monotonic() - started < 3, "a freed slot did not wake a worker waiting for work"

    @GROUPS
    @pytest.mark.bananas_capability(Capability.HAND_OFF)
    async def test_groups_claim_or_wait_obeys_limits(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        queue = bananas_backend.queue
        assert isinstance(queue, HandOff)
        await limit(bananas_backend, "A", max_running=1)
        a = await enqueue(bananas_backend, bananas_clock, "A", 2)
        got = await queue.claim_or_wait(["default"], limit=5, waiter="w-groups", timeout=0.2)
        assert [job.id for job in got] == a[:1]
        assert await queue.claim_or_wait(["default"], limit=5, waiter="w-groups", timeout=0.2) == []
        more = await enqueue(bananas_backend, bananas_clock, "A", 1)
        assert await queue.claim_or_wait(["default"], limit=5, waiter="w-groups", timeout=0.2) == []
        assert await queue.stop_waiting("w-groups") == []
        await assert_untouched(bananas_backend, [a[1], *more])

    @GROUPS
    async def test_groups_names_and_rates_are_checked(self, bananas_clock: ManualClock) -> None:
        for bad in ("", "*", "has space", "x" * 129, "tab\t"):
            with pytest.raises(InvalidGroup):
                new_job(bananas_clock, group=bad)
        for rate in ("10", "0/s", "ten/s", "10/d", "-1/m"):
            with pytest.raises(InvalidGroup):
                Rate.parse(rate)
        with pytest.raises(InvalidGroup):
            GroupLimit(max_running=-1)

"""Concurrent outcomes are committed together (group commit) yet each caller gets its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.errors import LeaseLost
from bananas.job import Job, JobResult, JobStatus
from bananas_sql.batch import GroupCommit, Write

pytestmark = pytest.mark.anyio


def make(clock: ManualClock, name: str = "task") -> Job:
    return Job.create(name, None, now=clock.now())


async def test_concurrent_outcomes_each_land_once(
    backend: Backend, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    await backend.queue.enqueue_many([make(clock, f"j{i}") for i in range(40)])
    claimed = await backend.queue.claim(["default"], limit=40)
    ghost = make(clock, "never-submitted").evolve(status=JobStatus.PROCESSING, lease_token=claimed[0].lease_token)
    done, failed, missing = claimed[:20], claimed[20:], [ghost]
    outcomes = await asyncio.gather(
        *(backend.queue.complete(j) for j in done),
        *(backend.queue.fail(j, "boom") for j in failed),
        *(backend.queue.complete(j) for j in missing),
        *(backend.results.store(JobResult(job_id=j.id, status=JobStatus.COMPLETED, result={"n": 1})) for j in done),
        return_exceptions=True,
    )
    assert not [r for r in caplog.records if "one by one" in r.getMessage()]  # the batches themselves worked
    assert [type(o) for o in outcomes[40:41]] == [LeaseLost]  # only the unknown job fails
    assert all(not isinstance(o, BaseException) for o in outcomes[:40] + outcomes[41:])
    for job in done:
        assert (await backend.queue.get_job(job.id)).status is JobStatus.COMPLETED
        result = await backend.results.get(job.id)
        assert result is not None and result.result == {"n": 1}
    for job in failed:
        stored = await backend.queue.get_job(job.id)
        assert (stored.status, stored.attempts, stored.error) == (JobStatus.PENDING, 1, "boom")
    assert await backend.queue.claim(["default"], limit=40) == []  # retries wait for their backoff


async def test_a_failing_batch_is_retried_one_write_at_a_time() -> None:
    seen: list[list[str]] = []

    async def flush(writes: Sequence[Write]) -> list[bool]:
        seen.append([name for name, _ in writes])
        await asyncio.sleep(0)
        if any(name == "bad" for name, _ in writes):
            raise ValueError("bad write")
        return [params.get("hit", True) for _, params in writes]

    group = GroupCommit(flush)
    params: list[Mapping[str, Any]] = [{"hit": True}, {}, {"hit": False}]
    first = asyncio.ensure_future(group.submit("a", params[0]))
    await asyncio.sleep(0)  # the first write is in flight alone; the rest queue behind it
    rest = [group.submit("bad", params[1]), group.submit("c", params[2])]
    outcomes = await asyncio.gather(first, *rest, return_exceptions=True)
    assert outcomes[0] is True and isinstance(outcomes[1], ValueError) and outcomes[2] is False
    assert seen == [["a"], ["bad", "c"], ["bad"], ["c"]]


def test_plan_combines_each_kind_and_leaves_repeats_alone() -> None:
    from bananas_sql.pg.batch import plan
    from bananas_sql.queries.postgres import combined_sql

    combined = combined_sql({"jobs": "j", "results": "r"})
    single = {"complete": "ONE-COMPLETE", "store_result": "ONE-STORE", "bury": "ONE-BURY"}
    done = {"data": "{}", "now": 1.0, "expires_at": 2.0}
    writes: list[Write] = [
        ("complete", {"id": "a", "token": "ta", **done}),
        ("bury", {"id": "b"}),
        ("complete", {"id": "c", "token": "tc", **done}),
        ("store_result", {"id": "a", "data": "{}", "expires_at": 2.0}),
        ("store_result", {"id": "a", "data": "{}", "expires_at": 3.0}),  # same id twice: one by one
    ]
    steps = plan(writes, single, combined)
    assert [(sql, idx) for sql, _, idx in steps] == [
        (combined["complete"], [0, 2]),
        ("ONE-BURY", [1]),
        ("ONE-STORE", [3]),
        ("ONE-STORE", [4]),
    ]
    assert steps[0][1] == {
        "id": ["a", "c"], "token": ["ta", "tc"], "data": ["{}", "{}"], "now": [1.0, 1.0], "expires_at": [2.0, 2.0]
    }  # fmt: skip

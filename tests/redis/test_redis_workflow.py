"""Workflows, cancellation and checkpoints on Redis with ``wait_replicas``: every one of their
writes (workflow submit, a step's settle and continuation, a cancel and the following of its
dead link, cancel_workflow, a checkpoint save) returns only once the replicas hold it, like the
plain submits and settles do; on a lone master it says so instead of returning."""

from __future__ import annotations

import asyncio
from typing import Any

import bananas.plugins
import pytest
import redis
from bananas.backend import Backend
from bananas.cancel import CancelOutcome
from bananas.clock import ManualClock
from bananas.errors import BackendUnavailable
from bananas.job import Job, JobResult, JobStatus
from bananas.workflows import chain, task
from bananas.workflows.canvas import Node, Task
from bananas.workflows.submit import cancel_workflow, get_workflow, submit_workflow
from ha_servers import pause
from servers import RedisServer

pytestmark = pytest.mark.anyio

UNCONFIRMED = "0 of 1 replicas"


async def _submit(backend: Backend, clock: ManualClock, root: Node) -> str:
    def make(node: Task, job_id: str) -> Job:
        return Job.create(node.name, node.payload, job_id=job_id, now=clock.now())

    return await submit_workflow(backend, root, make)


def _ok(job: Job, value: object) -> JobResult:
    return JobResult(job_id=job.id, status=JobStatus.COMPLETED, result=value, completed_at=job.updated_at)


def _queue(backend: Backend) -> Any:
    return backend.queue


async def test_on_a_lone_master_every_unconfirmed_workflow_write_raises(redis_url: str, namespace: str) -> None:
    """Each write is applied on the master, but the caller is told no replica confirmed it."""
    clock = ManualClock()
    waiting = f"{redis_url}?wait_replicas=1&wait_timeout=0.05&retry_for=0.3"
    async with (
        bananas.plugins.connect(waiting, namespace=namespace, clock=clock) as strict,
        bananas.plugins.connect(redis_url, namespace=namespace, clock=clock) as plain,
    ):
        with pytest.raises(BackendUnavailable, match=UNCONFIRMED):
            wid = await _submit(strict, clock, chain(task("a"), task("b"), task("c")))
        [wid] = [k.decode().rsplit(":", 1)[1] for k in await _queue(plain).conn.client.keys(f"{namespace}:workflow:*")]
        [first] = await plain.queue.claim(["default"])  # the submit was written all the same
        with pytest.raises(BackendUnavailable, match="replicas"):
            await _queue(strict).save_checkpoint(first, '{"at": 1}')
        assert await _queue(plain).load_checkpoint(first.id) == '{"at": 1}'
        with pytest.raises(BackendUnavailable, match="replicas"):
            await _queue(strict).complete_step(first, _ok(first, 1))
        [second] = [s for s in (await get_workflow(plain, wid)).step_list() if s.state == "pending"]
        with pytest.raises(BackendUnavailable, match="replicas"):
            await _queue(strict).cancel(second.job_id)
        info = await get_workflow(plain, wid)
        assert [s.state for s in info.step_list()] == ["completed", "cancelled", "skipped"]
        other = await _submit(plain, clock, chain(task("x"), task("y")))
        with pytest.raises(BackendUnavailable, match="replicas"):
            await cancel_workflow(strict, other)
        assert [s.state for s in (await get_workflow(plain, other)).step_list()] == ["pending", "cancelled"]


async def test_workflow_writes_return_once_the_replica_holds_them(
    replicated: tuple[RedisServer, RedisServer],
) -> None:
    master, replica = replicated
    clock = ManualClock()
    url = f"{master.url}?wait_replicas=1"
    async with (
        bananas.plugins.connect(url, namespace="wf", clock=clock, wait_timeout=5) as backend,  # the replica answers
        bananas.plugins.connect(url, namespace="wf", clock=clock, wait_timeout=0.1, retry_for=60) as patient,
    ):
        wid = await _submit(backend, clock, chain(task("a"), task("b"), task("c")))
        [first] = await backend.queue.claim(["default"])
        pause(replica, True)
        done = asyncio.ensure_future(_queue(patient).complete_step(first, _ok(first, 1)))
        await asyncio.sleep(0.5)
        assert not done.done(), "a step's settle returned while the replica was paused"
        pause(replica, False)
        await done
        [second] = await backend.queue.claim(["default"])
        await _queue(backend).save_checkpoint(second, '{"at": 2}')
        assert await _queue(backend).cancel(second.id) is CancelOutcome.REQUESTED
        await _queue(backend).settle_cancelled(second, "stopped")
        assert (await get_workflow(backend, wid)).state == "cancelled"
    with redis.Redis(port=replica.port, decode_responses=True) as r:  # held by the replica on return
        states = {k: v for k, v in r.hgetall(f"wf:workflow:{wid}").items() if k.startswith("state:")}
        assert sorted(states.values()) == ["cancelled", "completed", "waiting"]
        assert r.get(f"wf:checkpoint:{second.id}") == '{"at": 2}'


async def test_the_workflow_hash_expires_after_the_longer_result_ttl_once_nothing_runs(
    redis_url: str, namespace: str, raw: Any
) -> None:
    """The wire format: ``open`` counts the running steps; the settle that brings it to 0 sets the TTL."""
    clock = ManualClock()
    ttls = {"result_success_ttl": 60.0, "result_failure_ttl": 600.0}
    async with bananas.plugins.connect(redis_url, namespace=namespace, clock=clock, **ttls) as backend:
        wid = await _submit(backend, clock, chain(task("a"), task("b"), task("c")))
        key = f"{namespace}:workflow:{wid}"
        assert (await raw.hget(key, "open"), await raw.pttl(key)) == ("1", -1)
        [a] = await backend.queue.claim(["default"])
        await _queue(backend).complete_step(a, _ok(a, 1))
        assert (await raw.hget(key, "open"), await raw.pttl(key)) == ("1", -1), "expiring while a step runs"
        [b] = await backend.queue.claim(["default"])
        await _queue(backend).fail_step(b, "boom", retry_at=None)  # the chain stops: nothing runs any more
        assert await raw.hget(key, "open") == "0"
        assert 590_000 < await raw.pttl(key) <= 600_000

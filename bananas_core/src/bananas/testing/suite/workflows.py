"""Conformance tests of :class:`~bananas.protocols.WorkflowSteps` (capability ``workflows``):
chains, groups and chords settled step by step through the queue, with the clock under
control, compared with the model of :mod:`bananas.testing.workflow_model`."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bananas.backend import Backend
from bananas.capabilities import Capability
from bananas.clock import ManualClock
from bananas.errors import CapabilityNotSupported, LeaseLost
from bananas.job import Job, JobResult, JobStatus
from bananas.protocols import LEASE_EXPIRED_ERROR, WorkflowSteps
from bananas.testing.plugin import BackendFactory, skip_unless_capable
from bananas.testing.workflow_model import drive, expected, step_result, trees
from bananas.workflows import chain, chord, group, task
from bananas.workflows.canvas import Node, Task
from bananas.workflows.submit import get_workflow, submit_workflow
from bananas.workflows.view import WorkflowInfo

WORKFLOWS = pytest.mark.bananas_capability(Capability.WORKFLOWS)

_PROPERTY_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.differing_executors],
)


def _steps(backend: Backend) -> WorkflowSteps:
    queue = backend.queue
    assert isinstance(queue, WorkflowSteps), "the backend declares workflows, but its queue is not a WorkflowSteps"
    return queue


def _t(key: int, *, dead: bool = False) -> Task:
    return task("step", {"key": key, "dead": dead})


async def _submit(backend: Backend, clock: ManualClock, root: Node) -> str:
    def make(node: Task, job_id: str) -> Job:
        retries = int(dict(node.options).get("max_retries", 3))
        return Job.create(node.name, node.payload, job_id=job_id, now=clock.now(), max_retries=retries)

    return await submit_workflow(backend, root, make)


async def _claim(backend: Backend) -> list[Job]:
    return await backend.queue.claim(["default"], limit=100, lease=60)


def _ok(job: Job, value: object) -> JobResult:
    return JobResult(job_id=job.id, status=JobStatus.COMPLETED, result=value, completed_at=job.updated_at)


def _key(job: Job) -> int:
    return int(job.payload["key"])


async def _info(backend: Backend, workflow_id: str) -> WorkflowInfo:
    return await get_workflow(backend, workflow_id)


class WorkflowTests:
    """submit_workflow / complete_step / fail_step / workflow_record."""

    @WORKFLOWS
    async def test_chain_runs_in_order_and_passes_results(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        steps = _steps(bananas_backend)
        wid = await _submit(bananas_backend, bananas_clock, chain(_t(0), _t(1), _t(2)))
        previous = None
        for key in range(3):
            claimed = await _claim(bananas_backend)
            assert [_key(j) for j in claimed] == [key], "only the next step of a chain may be ready"
            assert claimed[0].extra.get("previous_result") == previous
            previous = {"from": key, "values": [key, 1.5, None, "x"]}
            await steps.complete_step(claimed[0], _ok(claimed[0], previous))
        assert await _claim(bananas_backend) == []
        info = await _info(bananas_backend, wid)
        assert info.state == "completed" and info.result == {"from": 2, "values": [2, 1.5, None, "x"]}
        assert [s.state for s in info.step_list()] == ["completed"] * 3

    @WORKFLOWS
    async def test_chord_callback_waits_for_every_member_and_gets_results_in_order(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        steps = _steps(bananas_backend)
        wid = await _submit(bananas_backend, bananas_clock, chord(group(_t(0), _t(1), _t(2)), _t(9)))
        members = sorted(await _claim(bananas_backend), key=_key)
        assert [_key(j) for j in members] == [0, 1, 2]
        for job in reversed(members):  # the last member finishes first
            assert await _claim(bananas_backend) == [], "the callback was created before every member finished"
            await steps.complete_step(job, _ok(job, f"r{_key(job)}"))
        [callback] = await _claim(bananas_backend)
        assert _key(callback) == 9
        outcomes = callback.extra.get("group_outcomes")
        assert outcomes == [{"ok": True, "result": f"r{i}"} for i in range(3)]
        await steps.complete_step(callback, _ok(callback, "done"))
        info = await _info(bananas_backend, wid)
        assert info.state == "completed" and info.result == "done"

    @WORKFLOWS
    async def test_racing_members_create_the_callback_exactly_once(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        steps = _steps(bananas_backend)
        await _submit(bananas_backend, bananas_clock, chord(group(*(_t(i) for i in range(20))), _t(99)))
        members = await _claim(bananas_backend)
        assert len(members) == 20
        await asyncio.gather(*(steps.complete_step(j, _ok(j, _key(j))) for j in members))
        claimed = await _claim(bananas_backend)
        assert [_key(j) for j in claimed] == [99], f"callbacks created: {len(claimed)}"
        assert [o["result"] for o in claimed[0].extra["group_outcomes"]] == list(range(20))

    @WORKFLOWS
    async def test_a_dead_step_stops_the_chain(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        steps = _steps(bananas_backend)
        wid = await _submit(bananas_backend, bananas_clock, chain(_t(0), _t(1), _t(2)))
        [first] = await _claim(bananas_backend)
        await steps.complete_step(first, _ok(first, 1))
        [second] = await _claim(bananas_backend)
        dead = await steps.fail_step(second, "boom", retry_at=None)
        assert dead.status is JobStatus.FAILED
        assert await _claim(bananas_backend) == [], "a step after a dead one was created"
        info = await _info(bananas_backend, wid)
        assert info.state == "failed"
        assert [s.state for s in info.step_list()] == ["completed", "dead", "skipped"]
        assert info.step_list()[1].error == "boom"
        assert "ended dead" in info.step_list()[2].note

    @WORKFLOWS
    async def test_a_retry_continues_nothing(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        steps = _steps(bananas_backend)
        wid = await _submit(bananas_backend, bananas_clock, chain(_t(0), _t(1)))
        [first] = await _claim(bananas_backend)
        retried = await steps.fail_step(first, "flaky", retry_at=bananas_clock.now() + timedelta(seconds=5))
        assert retried.status is JobStatus.PENDING
        assert await _claim(bananas_backend) == [], "a retried step set off what follows it"
        assert (await _info(bananas_backend, wid)).state == "running"
        bananas_clock.advance(6)
        await bananas_backend.queue.move_scheduled()
        [again] = await _claim(bananas_backend)
        assert again.id == first.id
        await steps.complete_step(again, _ok(again, "fine"))
        [second] = await _claim(bananas_backend)
        assert _key(second) == 1 and second.extra.get("previous_result") == "fine"

    @WORKFLOWS
    async def test_a_chord_with_a_dead_member_never_runs_its_callback(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        steps = _steps(bananas_backend)
        wid = await _submit(bananas_backend, bananas_clock, chord(group(_t(0), _t(1)), _t(9)))
        a, b = sorted(await _claim(bananas_backend), key=_key)
        await steps.fail_step(a, "boom", retry_at=None)
        await steps.complete_step(b, _ok(b, 1))
        assert await _claim(bananas_backend) == []
        info = await _info(bananas_backend, wid)
        assert info.state == "failed" and info.step_list()[2].state == "skipped"

    @WORKFLOWS
    async def test_allow_failures_runs_the_callback_with_each_outcome(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        steps = _steps(bananas_backend)
        root = chord(group(_t(0), _t(1)), _t(9), allow_failures=True)
        wid = await _submit(bananas_backend, bananas_clock, root)
        a, b = sorted(await _claim(bananas_backend), key=_key)
        await steps.complete_step(b, _ok(b, "fine"))
        await steps.fail_step(a, "boom", retry_at=None)
        [callback] = await _claim(bananas_backend)
        assert callback.extra.get("group_outcomes") == [{"ok": False, "error": "boom"}, {"ok": True, "result": "fine"}]
        await steps.complete_step(callback, _ok(callback, "summary"))
        assert (await _info(bananas_backend, wid)).state == "completed"

    @WORKFLOWS
    async def test_a_step_the_reaper_makes_dead_follows_its_dead_link(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        """Its last attempt's lease ran out: an allow_failures chord's callback still runs, in the reap's write."""
        steps = _steps(bananas_backend)
        last_try = task("step", {"key": 0, "dead": False}, max_retries=1)
        root = chord(group(last_try, _t(1)), _t(9), allow_failures=True)
        wid = await _submit(bananas_backend, bananas_clock, root)
        a, b = sorted(await bananas_backend.queue.claim(["default"], limit=5, lease=10), key=_key)
        await steps.complete_step(b, _ok(b, "fine"))
        bananas_clock.advance(11)
        assert await bananas_backend.queue.reap_expired() == 1
        assert (await bananas_backend.queue.get_job(a.id)).status is JobStatus.FAILED
        [callback] = await _claim(bananas_backend)
        assert _key(callback) == 9, "the reaped step's death did not reach its chord"
        assert callback.extra.get("group_outcomes") == [
            {"ok": False, "error": LEASE_EXPIRED_ERROR},
            {"ok": True, "result": "fine"},
        ]
        await steps.complete_step(callback, _ok(callback, "done"))
        assert (await _info(bananas_backend, wid)).state == "completed"

    @WORKFLOWS
    async def test_a_stale_settle_continues_nothing(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        steps = _steps(bananas_backend)
        await _submit(bananas_backend, bananas_clock, chain(_t(0), _t(1)))
        [first] = await bananas_backend.queue.claim(["default"], lease=10)
        bananas_clock.advance(11)
        assert await bananas_backend.queue.reap_expired() == 1
        with pytest.raises(LeaseLost):
            await steps.complete_step(first, _ok(first, 1))
        [again] = await _claim(bananas_backend)
        assert again.id == first.id, "a stale completion created the next step"
        await steps.complete_step(again, _ok(again, 2))
        [second] = await _claim(bananas_backend)
        assert second.extra.get("previous_result") == 2

    @WORKFLOWS
    async def test_nested_shapes(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        """A chain whose step is a chord of chains and a group, followed by a step."""
        root = chain(_t(0), chord(group(chain(_t(1), _t(2)), group(_t(3), _t(4))), _t(5)), _t(6))
        wid, run = await drive(bananas_backend, bananas_clock, root)
        model = expected(root)
        assert run.seen == model.seen
        info = await _info(bananas_backend, wid)
        assert info.state == "completed"
        assert info.result == model.value == step_result(6, ["previous_result", step_result(5, run.seen[5][0])])

    @WORKFLOWS
    async def test_a_step_after_anything_ending_in_a_group_gets_its_results(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        """Two groups in a row, and a chord whose callback chain ends in a group, each followed by a step."""
        for root in (
            chain(group(_t(0)), group(_t(1), _t(2)), _t(3)),
            chain(chord(group(_t(0)), chain(_t(1), group(_t(2), _t(3)))), _t(4)),
        ):
            wid, run = await drive(bananas_backend, bananas_clock, root)
            assert run.seen == expected(root).seen
            last = max(run.seen)
            assert run.seen[last][0][0] == "group_outcomes"
            assert (await _info(bananas_backend, wid)).state == "completed"

    @WORKFLOWS
    async def test_unknown_workflow_has_no_record(self, bananas_backend: Backend) -> None:
        assert await _steps(bananas_backend).workflow_record("no-such-workflow") is None

    @WORKFLOWS
    @_PROPERTY_SETTINGS
    @given(root=trees(), seed=st.integers(0, 2**32 - 1), flaky=st.booleans())
    def test_random_shapes_match_the_model(
        self, bananas_backend_factory: BackendFactory, root: Node, seed: int, flaky: bool
    ) -> None:
        """Every step the model runs ran exactly once, with what the model says it received;
        nothing else ran; the workflow ends as the model says."""

        async def check() -> None:
            clock = ManualClock()
            async with bananas_backend_factory(clock) as backend:
                skip_unless_capable(backend, [Capability.WORKFLOWS])  # this test has no bananas_backend fixture
                wid, run = await drive(backend, clock, root, rng=random.Random(seed), flaky=flaky)
                model = expected(root)
                assert run.seen == model.seen
                info = await get_workflow(backend, wid)
                assert info.state == ("completed" if model.ok else "failed")
                if model.ok:
                    assert info.result == model.value

        asyncio.run(check())


class WorkflowCapabilityTests:
    """A backend without the capability refuses a workflow, naming it."""

    async def test_without_workflows_submit_raises(self, bananas_backend: Backend, bananas_clock: ManualClock) -> None:
        if bananas_backend.supports(Capability.WORKFLOWS):
            pytest.skip("the backend declares workflows")
        with pytest.raises(CapabilityNotSupported, match="workflows"):
            await _submit(bananas_backend, bananas_clock, chain(_t(0), _t(1)))

    async def test_declared_workflows_are_offered(self, bananas_backend: Backend) -> None:
        if bananas_backend.supports(Capability.WORKFLOWS):
            assert isinstance(bananas_backend.queue, WorkflowSteps), "declares workflows but its queue is not one"

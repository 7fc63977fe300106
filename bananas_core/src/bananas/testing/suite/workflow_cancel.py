"""Conformance tests of cancelled workflow steps, ``cancel_workflow`` and the expiry of finished
workflows (capabilities ``workflows`` and ``cancel``; ``result_ttl`` for the expiry in real
time), with the clock under control, compared with the model of
:mod:`bananas.testing.workflow_model` where the shapes vary.

A cancelled step counts as not succeeded: it follows its dead link in the cancel's (or the
worker's settle's) own write, so its chain stops, a chord waiting for it fails unless it allows
failures (then its callback gets the member's outcome, marked ``cancelled``), and the workflow
ends ``cancelled`` (``failed`` if a step also ended dead).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bananas.backend import Backend
from bananas.cancel import CANCELLED_BEFORE_START, CANCELLED_WHILE_RUNNING, CancelOutcome
from bananas.capabilities import Capability
from bananas.clock import ManualClock
from bananas.errors import LeaseLost
from bananas.job import Job, JobStatus
from bananas.testing.plugin import BackendFactory, skip_unless_capable
from bananas.testing.suite.cancel import cancel_queue
from bananas.testing.suite.workflows import _PROPERTY_SETTINGS, _claim, _info, _key, _ok, _steps, _submit, _t
from bananas.testing.workflow_model import drive, expected, trees
from bananas.workflows import chain, chord, group, task
from bananas.workflows.canvas import Node, Task
from bananas.workflows.plan import CANCELLED_WAITING
from bananas.workflows.submit import WorkflowNotFound, cancel_workflow, get_workflow

__all__ = ["WorkflowCancelTests", "WorkflowExpiryTests"]

WORKFLOWS = pytest.mark.bananas_capability(Capability.WORKFLOWS)
CANCEL = pytest.mark.bananas_capability(Capability.CANCEL)


def _c(key: int, *, cancel: bool = False) -> Task:
    """A task of the model's trees (:func:`~bananas.testing.workflow_model.trees`)."""
    return task("step", {"key": key, "dead": False, "cancel": cancel})


def _cancelled(error: str) -> dict[str, object]:
    return {"ok": False, "error": error, "cancelled": True}


class WorkflowCancelTests:
    """A cancelled step follows its dead link; cancel_workflow cancels what has not run."""

    @WORKFLOWS
    @CANCEL
    async def test_a_step_cancelled_while_it_waits_stops_the_chain(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        steps = _steps(bananas_backend)
        wid = await _submit(bananas_backend, bananas_clock, chain(_t(0), _t(1), _t(2)))
        [first] = await _claim(bananas_backend)
        await steps.complete_step(first, _ok(first, 1))
        second = (await _info(bananas_backend, wid)).step_list()[1]
        assert await cancel_queue(bananas_backend).cancel(second.job_id) is CancelOutcome.CANCELLED
        assert await _claim(bananas_backend) == [], "a cancelled step ran, or the step after it was created"
        record = await steps.workflow_record(wid)
        assert record is not None and record.steps[second.job_id].state == "cancelled", "not recorded in the cancel"
        info = await _info(bananas_backend, wid)
        assert info.state == "cancelled", f"a workflow stopped by a cancelled step is {info.state}"
        assert [s.state for s in info.step_list()] == ["completed", "cancelled", "skipped"]
        assert info.step_list()[1].error == CANCELLED_BEFORE_START
        assert "was cancelled" in info.step_list()[2].note

    @WORKFLOWS
    @CANCEL
    async def test_a_running_step_settled_cancelled_stops_the_chain(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        cancel = cancel_queue(bananas_backend)
        wid = await _submit(bananas_backend, bananas_clock, chain(_t(0), _t(1)))
        [first] = await _claim(bananas_backend)
        assert await cancel.cancel(first.id) is CancelOutcome.REQUESTED
        stored = await cancel.settle_cancelled(first, CANCELLED_WHILE_RUNNING)
        assert stored.status is JobStatus.CANCELLED
        assert await _claim(bananas_backend) == [], "the step after a cancelled one was created"
        record = await _steps(bananas_backend).workflow_record(wid)
        assert record is not None and record.steps[first.id].state == "cancelled", "not recorded in the settle"
        again = await cancel.settle_cancelled(first, CANCELLED_WHILE_RUNNING)
        assert again.status is JobStatus.CANCELLED, "a repeated settle_cancelled must answer like the first"
        assert await _claim(bananas_backend) == [], "a repeated settle_cancelled continued the workflow"
        info = await _info(bananas_backend, wid)
        assert info.state == "cancelled"
        assert [s.state for s in info.step_list()] == ["cancelled", "skipped"]

    @WORKFLOWS
    @CANCEL
    async def test_a_chord_with_a_cancelled_member_never_runs_its_callback(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        steps = _steps(bananas_backend)
        wid = await _submit(bananas_backend, bananas_clock, chord(group(_t(0), _t(1)), _t(9)))
        a_id = (await _info(bananas_backend, wid)).step_list()[0].job_id
        assert await cancel_queue(bananas_backend).cancel(a_id) is CancelOutcome.CANCELLED
        [b] = await _claim(bananas_backend)
        await steps.complete_step(b, _ok(b, 1))
        assert await _claim(bananas_backend) == [], "a chord with a cancelled member ran its callback"
        info = await _info(bananas_backend, wid)
        assert info.state == "cancelled" and info.step_list()[2].state == "skipped"

    @WORKFLOWS
    @CANCEL
    async def test_allow_failures_gives_the_callback_a_cancelled_outcome(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        steps, cancel = _steps(bananas_backend), cancel_queue(bananas_backend)
        root = chord(group(_t(0), _t(1), _t(2)), _t(9), allow_failures=True)
        wid = await _submit(bananas_backend, bananas_clock, root)
        waiting = (await _info(bananas_backend, wid)).step_list()[0].job_id
        assert await cancel.cancel(waiting) is CancelOutcome.CANCELLED  # before it started
        b, c = sorted(await _claim(bananas_backend), key=_key)
        assert await cancel.cancel(b.id) is CancelOutcome.REQUESTED  # while it runs
        await cancel.settle_cancelled(b, CANCELLED_WHILE_RUNNING)
        await steps.complete_step(c, _ok(c, "fine"))
        [callback] = await _claim(bananas_backend)
        assert callback.extra.get("group_outcomes") == [
            _cancelled(CANCELLED_BEFORE_START),
            _cancelled(CANCELLED_WHILE_RUNNING),
            {"ok": True, "result": "fine"},
        ]
        await steps.complete_step(callback, _ok(callback, "summary"))
        info = await _info(bananas_backend, wid)
        assert info.state == "completed" and info.result == "summary"

    @WORKFLOWS
    @CANCEL
    async def test_a_cancel_racing_the_steps_completion_continues_once(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        """Cancel and complete (then the worker's cancelled settle) at once: the next step is
        created exactly when the completion won, never twice, and the workflow ends either way."""
        steps, cancel = _steps(bananas_backend), cancel_queue(bananas_backend)
        wids = [await _submit(bananas_backend, bananas_clock, chain(_t(i), _t(100 + i))) for i in range(8)]
        firsts = await _claim(bananas_backend)
        assert len(firsts) == 8

        async def complete(job: Job) -> None:
            with contextlib.suppress(LeaseLost):
                await steps.complete_step(job, _ok(job, "done"))

        async def stop(job: Job) -> None:
            if await cancel.cancel(job.id) is CancelOutcome.REQUESTED:
                with contextlib.suppress(LeaseLost):
                    await cancel.settle_cancelled(job, CANCELLED_WHILE_RUNNING)

        await asyncio.gather(*(f(job) for job in firsts for f in (complete, stop)))
        seconds = await _claim(bananas_backend)
        assert len({j.id for j in seconds}) == len(seconds)
        for wid, first in zip(wids, sorted(firsts, key=_key), strict=True):
            status = (await bananas_backend.queue.get_job(first.id)).status
            made = [j for j in seconds if _key(j) == 100 + _key(first)]
            if status is JobStatus.COMPLETED:
                assert len(made) == 1, "a completion that won the race did not create the next step"
                await steps.complete_step(made[0], _ok(made[0], "end"))
            else:
                assert status is JobStatus.CANCELLED and made == [], "a cancelled step continued its chain"
            assert (await _info(bananas_backend, wid)).state in ("completed", "cancelled")

    @WORKFLOWS
    @CANCEL
    async def test_cancel_workflow_cancels_what_has_not_run(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        """Waiting steps at once, a running one through its worker; an allow_failures callback
        is not run for the cancelled members, and nothing after it either."""
        steps, cancel = _steps(bananas_backend), cancel_queue(bananas_backend)
        root = chain(_t(0), chord(group(_t(1), _t(2)), _t(3), allow_failures=True), _t(4))
        wid = await _submit(bananas_backend, bananas_clock, root)
        [first] = await _claim(bananas_backend)
        await steps.complete_step(first, _ok(first, 0))
        members = await bananas_backend.queue.claim(["default"], limit=1, lease=60)  # one runs, one waits
        [running] = members
        ids = [s.job_id for s in (await _info(bananas_backend, wid)).step_list()]
        answer = await cancel_workflow(bananas_backend, wid)
        waiting_member = ids[2] if running.id == ids[1] else ids[1]
        assert answer == {
            running.id: CancelOutcome.REQUESTED,
            waiting_member: CancelOutcome.CANCELLED,
            ids[3]: CancelOutcome.CANCELLED,
            ids[4]: CancelOutcome.CANCELLED,
        }
        assert (await _info(bananas_backend, wid)).state == "running", "a step is still running"
        assert await cancel.cancel_requested([running]) == {running.id}
        await steps.complete_step(running, _ok(running, "late"))  # it finished before it noticed
        assert await _claim(bananas_backend) == [], "a step of a cancelled workflow was created"
        info = await _info(bananas_backend, wid)
        assert info.state == "cancelled"
        states = {s.job_id: s.state for s in info.step_list()}
        assert states == {ids[0]: "completed", running.id: "completed", waiting_member: "cancelled",
                          ids[3]: "cancelled", ids[4]: "cancelled"}  # fmt: skip
        assert info.steps[ids[3]].error == CANCELLED_WAITING
        assert await cancel_workflow(bananas_backend, wid) == {}, "a finished workflow was changed"

    @WORKFLOWS
    @CANCEL
    async def test_cancel_workflow_of_a_finished_or_unknown_workflow(
        self, bananas_backend: Backend, bananas_clock: ManualClock
    ) -> None:
        steps = _steps(bananas_backend)
        wid = await _submit(bananas_backend, bananas_clock, chain(_t(0), _t(1)))
        [first] = await _claim(bananas_backend)
        await steps.fail_step(first, "boom", retry_at=None)
        assert await cancel_workflow(bananas_backend, wid) == {}
        info = await _info(bananas_backend, wid)
        assert info.state == "failed" and [s.state for s in info.step_list()] == ["dead", "skipped"]
        with pytest.raises(WorkflowNotFound):
            await cancel_workflow(bananas_backend, "no-such-workflow")

    @WORKFLOWS
    @CANCEL
    @_PROPERTY_SETTINGS
    @given(root=trees(cancels=True), seed=st.integers(0, 2**32 - 1))
    @example(  # a cancel that creates steps to cancel: the callback of a chord allowing failures
        root=chord(group(_c(0, cancel=True)), group(_c(1), _c(2, cancel=True)), allow_failures=True), seed=0
    )
    def test_random_shapes_with_cancelled_steps_match_the_model(
        self, bananas_backend_factory: BackendFactory, root: Node, seed: int
    ) -> None:
        """Steps cancelled while they wait or while they run: what ran, what each received and
        how the workflow ends are what the model says."""

        async def check() -> None:
            clock = ManualClock()
            async with bananas_backend_factory(clock) as backend:
                skip_unless_capable(backend, [Capability.WORKFLOWS, Capability.CANCEL])
                wid, run = await drive(backend, clock, root, rng=random.Random(seed))
                model = expected(root)
                assert run.seen == model.seen
                info = await get_workflow(backend, wid)
                assert info.state == model.state
                if model.ok:
                    assert info.result == model.value

        asyncio.run(check())


class WorkflowExpiryTests:
    """A workflow's record is kept while it runs and expires once it reached its final state."""

    @WORKFLOWS
    async def test_a_running_workflow_record_never_expires(
        self, bananas_backend_factory: BackendFactory, bananas_clock: ManualClock
    ) -> None:
        async with bananas_backend_factory(bananas_clock, result_success_ttl=1.0, result_failure_ttl=1.0) as backend:
            skip_unless_capable(backend, [Capability.WORKFLOWS])
            steps = _steps(backend)
            wid = await _submit(backend, bananas_clock, chain(_t(0), _t(1)))
            [first] = await _claim(backend)
            await steps.complete_step(first, _ok(first, 1))
            bananas_clock.advance(3600)
            await backend.queue.reap_expired()  # the SQL backends clean up here
            assert (await _info(backend, wid)).state == "running"

    @WORKFLOWS
    @pytest.mark.bananas_capability(Capability.RESULT_TTL)
    @pytest.mark.bananas_realtime
    async def test_a_finished_workflow_record_expires_after_its_longest_result(
        self, bananas_backend_factory: BackendFactory, bananas_clock: ManualClock
    ) -> None:
        """Kept for the longer of the two result TTLs after the last step settled (the clock is
        advanced and real time passes, for backends that expire on either)."""
        short = bananas_backend_factory(bananas_clock, result_success_ttl=1.0, result_failure_ttl=1.0)
        long = bananas_backend_factory(bananas_clock, result_success_ttl=1.0, result_failure_ttl=60.0)
        async with short, long:
            skip_unless_capable(short, [Capability.WORKFLOWS, Capability.RESULT_TTL])
            finished, kept, running = [
                await _submit(b, bananas_clock, chain(_t(0), _t(1))) for b in (short, long, short)
            ]
            for backend in (short, long):
                for a in await _claim(backend):
                    await _steps(backend).complete_step(a, _ok(a, 1))
            for b in await _claim(short):
                if b.extra.get("workflow_id") == finished:
                    await _steps(short).complete_step(b, _ok(b, 2))  # the last step: nothing runs after it
            [b] = await _claim(long)
            await _steps(long).fail_step(b, "boom", retry_at=None)
            assert (await _info(short, finished)).state == "completed"
            start = time.monotonic()
            bananas_clock.advance(2.5)
            await asyncio.sleep(max(0.0, 2.5 - (time.monotonic() - start)))
            for backend in (short, long):
                await backend.queue.reap_expired()
            with pytest.raises(WorkflowNotFound):
                await get_workflow(short, finished)
            assert await _steps(short).workflow_record(finished) is None
            assert (await _info(long, kept)).state == "failed", "expired before the longest result TTL"
            assert (await _info(short, running)).state == "running", "a running workflow expired"

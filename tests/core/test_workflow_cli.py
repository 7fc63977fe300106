"""``bananas workflow ID``: the tree with each step's state, JSON for scripts, exit codes, and
one readable line for an unknown id."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from bananas import AsyncClient, Backend, chain, chord, connect, group, task
from bananas.cli import main
from bananas.job import JobResult, JobStatus


@pytest.fixture
def url() -> str:
    return f"memory://wf-cli-{uuid.uuid4().hex}"


def _settle_first(url: str, root: Any, *, results: list[Any]) -> str:
    """Submit ``root`` and complete the ready steps with ``results`` one claim at a time (in order)."""

    async def run() -> str:
        async with connect(url) as backend, AsyncClient(backend=backend) as client:
            wid = await client.submit(root)
            for value in results:
                [job] = await backend.queue.claim(["default"])
                await _complete(backend, job, value)
            return wid

    return asyncio.run(run())


async def _complete(backend: Backend, job: Any, value: Any) -> None:
    from bananas.protocols import WorkflowSteps

    queue = backend.queue
    assert isinstance(queue, WorkflowSteps)
    result = JobResult(job_id=job.id, status=JobStatus.COMPLETED, result=value, completed_at=job.updated_at)
    await queue.complete_step(job, result)


def test_tree_shows_every_step_with_its_state(capsys: pytest.CaptureFixture[str], url: str) -> None:
    root = chain(task("fetch"), chord(group(task("a"), task("b")), task("merge")))
    wid = _settle_first(url, root, results=[{"rows": 3}])
    code = main(["workflow", wid, "--url", url])
    out, _ = capsys.readouterr()
    assert code == 1, "a running workflow exits 1"
    lines = out.splitlines()
    assert lines[0].startswith(f"workflow {wid}: running (created ")
    assert lines[1] == "chain"
    assert lines[2].startswith("├── fetch [completed] ") and lines[2].endswith('-> {"rows": 3}')
    assert lines[3] == "└── chord"
    assert lines[4] == "    ├── group"
    assert lines[5].startswith("    │   ├── a [pending] ")
    assert lines[6].startswith("    │   └── b [pending] ")
    assert lines[7].startswith("    └── then: merge [waiting] ")


def test_completed_workflow_exits_0_and_prints_its_result(capsys: pytest.CaptureFixture[str], url: str) -> None:
    wid = _settle_first(url, chain(task("one"), task("two")), results=[1, 2])
    assert main(["workflow", wid, "--url", url]) == 0
    out, _ = capsys.readouterr()
    assert out.splitlines()[0].startswith(f"workflow {wid}: completed (created ")
    assert out.splitlines()[-1] == "result: 2"


def test_json_output(capsys: pytest.CaptureFixture[str], url: str) -> None:
    wid = _settle_first(url, group(task("x"), task("y")), results=[])
    assert main(["workflow", wid, "--url", url, "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["id"] == wid and data["state"] == "running"
    assert [s["name"] for s in data["steps"]] == ["x", "y"]
    assert [s["state"] for s in data["steps"]] == ["pending", "pending"]


def test_unknown_id_is_one_line(capsys: pytest.CaptureFixture[str], url: str) -> None:
    assert main(["workflow", "nope", "--url", url]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == "bananas: no workflow with id 'nope'"


def test_a_cancelled_workflow_shows_why_and_exits_1(capsys: pytest.CaptureFixture[str], url: str) -> None:
    wid = _settle_first(url, chain(task("fetch"), task("load"), task("report")), results=[1])

    async def cancel() -> None:
        async with AsyncClient(url) as client:
            await client.cancel_workflow(wid)

    asyncio.run(cancel())
    code = main(["workflow", wid, "--url", url, "--json"])
    out, _ = capsys.readouterr()
    assert code == 1, "a cancelled workflow exits 1"
    data = json.loads(out)
    assert data["state"] == "cancelled"
    assert [s["state"] for s in data["steps"]] == ["completed", "cancelled", "cancelled"]
    assert data["steps"][1]["error"].startswith("Cancelled: the job was cancelled before it ran")


def test_cancel_stops_what_has_not_run_and_says_so(capsys: pytest.CaptureFixture[str], url: str) -> None:
    """``bananas workflow ID --cancel``: the steps not finished end cancelled; a second time there is nothing left."""
    wid = _settle_first(url, chain(task("fetch"), task("load"), task("report")), results=[1])
    code = main(["workflow", wid, "--url", url, "--cancel"])
    out, _ = capsys.readouterr()
    lines = out.splitlines()
    assert code == 1, "a cancelled workflow exits 1"
    assert lines[0] == "cancelled 2 step(s) not started"
    assert lines[1].startswith(f"workflow {wid}: cancelled")
    assert main(["workflow", wid, "--url", url, "--cancel", "--json"]) == 1
    out, _ = capsys.readouterr()
    data = json.loads(out)  # with --json only the JSON is printed
    assert data["state"] == "cancelled"
    assert [s["state"] for s in data["steps"]] == ["completed", "cancelled", "cancelled"]
    assert main(["workflow", wid, "--url", url, "--cancel"]) == 1
    assert capsys.readouterr().out.splitlines()[0] == "nothing to cancel: the workflow had already finished"

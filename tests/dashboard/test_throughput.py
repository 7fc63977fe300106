"""Throughput on the overview: completed and failed attempts per minute, from the counts real
workers publish in their heartbeats, updating in a real browser without a reload; and the
sampling arithmetic itself, with workers that come, go and restart."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import bananas
import pytest
from bananas import Job
from bananas.dashboard.throughput import MINUTES, Throughput
from bananas.protocols import WorkerInfo
from hypothesis import given, settings
from hypothesis import strategies as st


def run_async(coro: Any) -> Any:
    """Run a coroutine of the public API on a thread of its own (Playwright's loop holds this one)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _submit(url: str, jobs: list[Job]) -> None:
    async with bananas.connect(url) as backend:
        await backend.queue.enqueue_many(jobs)


def _overview(base: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(urllib.request.urlopen(base + "/api/overview", timeout=10).read())
    return data


@pytest.mark.slow
@pytest.mark.parametrize("store_url", ["redis", "sqlite"], indirect=True)
def test_the_overview_shows_throughput_live(store_url: str, processes: Any, page: Any, tmp_path: Any) -> None:
    dash = processes.dashboard(store_url)
    page.goto(dash.base + "/")
    assert "No live worker reports its counts yet" in page.locator("#throughput").inner_text()
    worker = processes.worker(store_url, "--concurrency", "4")
    never = str(tmp_path / "never")
    jobs = [Job.create("report", i) for i in range(6)]
    jobs += [Job.create("flaky", {"ok_file": never, "message": "no"}, max_retries=1) for _ in range(2)]
    run_async(_submit(store_url, jobs))
    # the worker's next heartbeats carry the counts; the page's live refresh picks them up
    page.locator("[data-stat=completed-per-minute]").filter(has_text="6").wait_for(timeout=30_000)
    page.locator("[data-stat=failed-per-minute]").filter(has_text="2").wait_for(timeout=30_000)
    assert page.locator("[data-stat=reporting]").inner_text() == "1"
    bars = page.locator("#throughput g[data-minute]")
    assert bars.count() == MINUTES
    drawn = [(int(g.get_attribute("data-completed")), int(g.get_attribute("data-failed"))) for g in bars.all()]
    assert (sum(c for c, _ in drawn), sum(f for _, f in drawn)) == (6, 2)
    api = _overview(dash.base)["throughput"]
    assert api["last_minute"] == {"completed": 6, "failed": 2} and api["reporting"] == 1
    assert len(api["minutes"]) == MINUTES
    assert worker.proc.poll() is None


def info(worker_id: str, completed: int | None, failed: int | None, started_at: float = 0.0) -> WorkerInfo:
    return WorkerInfo(
        id=worker_id,
        host="h",
        pid=1,
        routing_keys=["default"],
        priorities=["normal"],
        concurrency=1,
        started_at=started_at,
        completed=completed,
        failed=failed,
    )


def test_a_worker_seen_late_counts_from_then_and_one_started_since_counts_fully() -> None:
    t = Throughput()
    t.add([info("old", 100, 10)], now=1000.0)  # was running before the dashboard looked: a baseline
    t.add([info("old", 103, 11), info("new", 5, 1, started_at=1001.0)], now=1005.0)
    t.add([info("old", 103, 11), info("legacy", None, None)], now=1010.0)  # "new" left; legacy says nothing
    summary = t.summary(now=1010.0)
    assert summary["last_minute"] == {"completed": 8, "failed": 2}
    assert summary["reporting"] == 1
    assert sum(m["completed"] for m in summary["minutes"]) == 8


def test_old_records_without_counts_still_read() -> None:
    old = {"id": "w", "host": "h", "pid": 1, "routing_keys": ["default"], "priorities": ["high"], "concurrency": 2}
    worker = WorkerInfo.from_dict(old)
    assert (worker.completed, worker.failed) == (None, None)
    assert WorkerInfo.from_dict(info("w", 3, 4).to_dict()).completed == 3


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 5), st.floats(1, 90)), min_size=1, max_size=40))
def test_the_minutes_add_up_to_what_the_workers_did(steps: list[tuple[int, int, float]]) -> None:
    """One worker that started before the first sample: every growth after the baseline is
    counted once, in the minute of the sample that saw it; older than the window is dropped."""
    t = Throughput()
    now, completed, failed = 10_000.0, 0, 0
    t.add([info("w", 0, 0)], now=now)
    seen: list[tuple[float, int, int]] = []
    for done, broke, wait in steps:
        now += wait
        completed, failed = completed + done, failed + broke
        t.add([info("w", completed, failed)], now=now)
        seen.append((now, done, broke))
    summary = t.summary(now=now)
    first_minute = int(now // 60) - MINUTES + 1
    in_window = [(c, f) for at, c, f in seen if int(at // 60) >= first_minute and at > now - MINUTES * 60]
    assert sum(m["completed"] for m in summary["minutes"]) == sum(c for c, _ in in_window)
    assert sum(m["failed"] for m in summary["minutes"]) == sum(f for _, f in in_window)
    last = [(c, f) for at, c, f in seen if at > now - 60]
    assert summary["last_minute"] == {"completed": sum(c for c, _ in last), "failed": sum(f for _, f in last)}

"""The dashboard in a real headless Chromium, against a real ``bananas dashboard`` process and
a real worker, on Redis and on SQLite: what a person sees and clicks."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import bananas
import pytest
from bananas import Job
from e2e_helpers import wait_for

pytestmark = pytest.mark.slow  # real worker, dashboard and browser processes: about 20 s in all

XSS = "<script>window.__xss = 1</script><img src=x onerror=window.__xss=2>"
# job name -> (routing key, priority, how many)
SUBMITTED = {"resize": ("images", "high", 3), "thumbnail": ("images", "low", 2), "send": ("emails", "normal", 4)}


def run_async(coro: Any) -> Any:
    """Run a coroutine of the public API on a thread of its own (Playwright's loop holds this one)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _submit(url: str, jobs: list[Job]) -> None:
    async with bananas.connect(url) as backend:
        await backend.queue.enqueue_many(jobs)


async def _depths(url: str) -> Any:
    async with bananas.connect(url) as backend:
        return await backend.queue.depths()


async def _job(url: str, job_id: str) -> Job:
    async with bananas.connect(url) as backend:
        return await backend.queue.get_job(job_id)


def _post(url: str, data: bytes, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize("store_url", ["redis", "sqlite"], indirect=True)
def test_dashboard_in_a_browser(store_url: str, processes: Any, page: Any, screenshots: Any, tmp_path: Path) -> None:
    jobs = [
        Job.create(name, {"n": i}, routing_key=key, priority=priority)
        for name, (key, priority, count) in SUBMITTED.items()
        for i in range(count)
    ]
    ok_file = tmp_path / "let-it-pass"
    doomed = Job.create(
        "flaky", {"ok_file": str(ok_file), "message": XSS, "note": XSS}, routing_key="risky", max_retries=0
    )
    other = Job.create(
        "flaky", {"ok_file": str(tmp_path / "never"), "message": "no"}, routing_key="risky", max_retries=0
    )
    passing = tmp_path / "passes"
    passing.touch()
    fine = [Job.create("flaky", {"ok_file": str(passing), "message": "-"}, routing_key="risky") for _ in range(5)]
    run_async(_submit(store_url, [*jobs, doomed, other, *fine]))
    dash = processes.dashboard(store_url, "--app", "tests.dashboard.app:registry")
    urllib.request.urlopen(dash.base + "/api/overview", timeout=10).read()  # throughput counts from here on
    # The worker serves only "risky": the submitted jobs stay where the overview can count them.
    processes.worker(store_url, "--routing-keys", "risky", "--concurrency", "2")
    wait_for(lambda: run_async(_depths(store_url)).dead == 2, 60, "the flaky jobs to die")

    read_only = processes.dashboard(store_url, "--read-only")

    # Overview: the depths of what we submitted, per routing key and priority.
    page.goto(dash.base + "/")
    for key, expected in {"images": {"high": 3, "low": 2}, "emails": {"normal": 4}}.items():
        row = page.locator(f"tr[data-key='{key}']")
        cells = row.locator("td").all_inner_texts()
        high, normal, low, total = (int(c) for c in cells[1:5])
        assert (high, normal, low) == (expected.get("high", 0), expected.get("normal", 0), expected.get("low", 0))
        assert total == sum(expected.values())
    assert page.locator("[data-stat=dead]").inner_text() == "2"
    page.locator("svg.chart:not(.bars)").wait_for()  # the live refresh samples the depths until the chart is drawn
    page.locator("[data-stat=failed-per-minute]").filter(has_text="2").wait_for(timeout=30_000)  # heartbeats
    page.locator("[data-stat=completed-per-minute]").filter(has_text="5").wait_for(timeout=30_000)
    screenshots(page, "overview")

    # The overview's JSON twin says the same.
    api = json.loads(urllib.request.urlopen(dash.base + "/api/overview", timeout=10).read())
    assert api["ready"]["images"] == {"high": 3, "normal": 0, "low": 2} and api["dead"] == 2

    # The dead job is listed in /dlq, its error shown as text (the payload's <script> never runs).
    page.goto(dash.base + "/dlq")
    row = page.locator(f"tr[data-job-id='{doomed.id}']")
    assert row.count() == 1
    assert "failing on purpose: <script>window.__xss = 1</script>" in row.locator(".error-cell").inner_text()
    screenshots(page, "dlq")

    # The job page: its error and its escaped payload.
    page.goto(f"{dash.base}/jobs/{doomed.id}")
    assert f"failing on purpose: {XSS}" in page.locator("#job-error").inner_text()
    assert XSS in page.locator("#job-payload").inner_text()
    assert page.evaluate("window.__xss") is None
    assert page.locator("img[src=x]").count() == 0
    screenshots(page, "job")

    # Read-only: the same list, and no button or route that changes anything.
    page.goto(read_only.base + "/dlq")
    assert page.locator(f"tr[data-job-id='{doomed.id}']").count() == 1
    assert page.get_by_role("button", name="Requeue").count() == 0
    assert page.locator("form[method=post]").count() == 0
    status, body = _post(read_only.base + "/dlq/requeue", f"only={doomed.id}".encode())
    assert status == 403 and "read-only" in body
    screenshots(page, "dlq-read-only")

    # A POST without the page's CSRF token is refused, and changes nothing.
    status, body = _post(
        dash.base + "/dlq/requeue", f"only={doomed.id}".encode(), {"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert status == 403 and "CSRF" in body
    assert run_async(_job(store_url, doomed.id)).status.value == "failed"

    # Purge the selected job (confirmed): it is gone, the other one stays.
    page.goto(dash.base + "/dlq")
    purge = page.get_by_role("button", name="Purge selected")
    assert purge.is_disabled()  # nothing selected yet
    page.locator(f"tr[data-job-id='{other.id}'] input[name=ids]").check()
    purge.click()
    page.wait_for_url("**/dlq?done=*")
    assert "purged 1 dead job" in page.locator(".flash").inner_text().lower()
    assert page.locator(f"tr[data-job-id='{other.id}']").count() == 0
    assert page.locator(f"tr[data-job-id='{doomed.id}']").count() == 1

    # Requeue from the page (the dialog is confirmed): the job leaves the list and runs.
    ok_file.write_text("ok")
    page.locator(f"tr[data-job-id='{doomed.id}']").get_by_role("button", name="Requeue").click()
    page.wait_for_url("**/dlq?done=*")
    assert "requeued 1 dead job" in page.locator(".flash").inner_text().lower()
    assert page.locator(f"tr[data-job-id='{doomed.id}']").count() == 0
    assert "No dead jobs" in page.locator(".empty").inner_text()
    screenshots(page, "dlq-empty")
    wait_for(lambda: run_async(_job(store_url, doomed.id)).status.value == "completed", 60, "the requeued job to run")
    page.goto(f"{dash.base}/jobs/{doomed.id}")
    assert page.locator("h1 .status").inner_text() == "completed"
    assert json.loads(page.locator("#job-result").inner_text()) == {"ran": True}

    # Workers and schedules.
    page.goto(dash.base + "/workers")
    assert page.locator("tbody tr").count() == 1
    assert "risky" in page.locator("tbody tr").inner_text()
    screenshots(page, "workers")
    page.goto(dash.base + "/schedules")
    text = page.locator("table").inner_text()
    assert "nightly-report" in text and "0 3 * * *" in text and "Europe/Paris" in text
    screenshots(page, "schedules")

    # The search box goes to a job by id.
    page.goto(dash.base + "/")
    page.fill("input[name=id]", doomed.id)
    page.press("input[name=id]", "Enter")
    page.wait_for_url(f"**/jobs/{doomed.id}")

    # The dark theme, for the documentation.
    page.emulate_media(color_scheme="dark")
    page.goto(dash.base + "/")
    page.locator("svg.chart:not(.bars)").wait_for()  # the live refresh adds samples until the chart is drawn
    screenshots(page, "overview-dark")


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_the_overview_updates_without_a_reload(store_url: str, processes: Any, page: Any) -> None:
    dash = processes.dashboard(store_url)
    page.goto(dash.base + "/")
    assert page.locator("[data-stat=ready]").inner_text() == "0"
    assert "No jobs waiting" in page.locator("#depths").inner_text()
    run_async(_submit(store_url, [Job.create("send", i, routing_key="emails") for i in range(5)]))
    page.locator("[data-stat=ready]").filter(has_text="5").wait_for()
    assert page.locator("tr[data-key='emails'] td").nth(4).inner_text() == "5"

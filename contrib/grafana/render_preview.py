"""Draw the panels of ``bananas.json`` from a real worker's metrics, as a PNG for the docs.

No Grafana is involved: this runs a real ``bananas worker --metrics-port`` on a throwaway
SQLite store (the handlers below), submits a changing mix of jobs, scrapes ``/metrics`` every
two seconds, evaluates each panel's query over those scrapes the way Prometheus would (rates
and increases over a 20 s window, ``histogram_quantile`` with linear interpolation in the
bucket), lays the panels out at their ``gridPos`` on an HTML page in Grafana's dark colours
and has headless Chromium (Playwright, ``/usr/bin/chromium``) save it::

    python contrib/grafana/render_preview.py --seconds 150 --out docs/img/grafana-dashboard.png

The module is also the worker's APP (``render_preview:registry``).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

from bananas import Job, Registry
from bananas.worker import JobContext

HERE = Path(__file__).resolve().parent
WINDOW = 20.0
"""Seconds of the rate window (what Grafana's $__rate_interval would be at this scrape interval)."""
SCRAPE_EVERY = 2.0

registry = Registry()


@registry.handler("resize_image")
async def resize_image(ctx: JobContext, job: Job) -> None:
    """A quick job."""
    await asyncio.sleep(random.uniform(0.05, 0.35))


@registry.handler("send_email")
async def send_email(ctx: JobContext, job: Job) -> None:
    """A fast job that sometimes fails."""
    await asyncio.sleep(random.uniform(0.01, 0.1))
    if random.random() < 0.12:
        raise ConnectionError("smtp: connection reset")


@registry.handler("build_report")
async def build_report(ctx: JobContext, job: Job) -> None:
    """A slow job that rarely fails."""
    await asyncio.sleep(random.uniform(0.4, 1.6))
    if random.random() < 0.05:
        raise ValueError("report: missing data")


# -- running the workload -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _scrape(port: int) -> Samples:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("bananas_")
    }


def run_workload(seconds: float) -> list[tuple[float, Samples]]:
    """Run a worker under a changing load for ``seconds``; return its scrapes."""
    from bananas import Client

    folder = tempfile.mkdtemp(prefix="bananas-grafana-")
    url = f"sqlite:///{folder}/preview.db"
    bananas_cli = [sys.executable, "-c", "import sys; from bananas.cli import main; sys.exit(main())"]
    subprocess.run([*bananas_cli, "db", "upgrade", "--url", url], check=True, capture_output=True)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    worker = subprocess.Popen(
        [
            *(sys.executable, "-m", "bananas.worker", "render_preview:registry", "--url", url),
            *("--metrics-port", str(port), "--routing-keys", "images,emails,reports", "--concurrency", "8"),
            *("--scheduler-interval", "200ms"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    scrapes: list[tuple[float, Samples]] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _scrape(port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        started = time.monotonic()
        next_scrape = started
        with Client(url) as client:
            while (now := time.monotonic()) - started < seconds:
                phase = (now - started) / seconds
                burst = 1 + int(10 * (0.5 + 0.5 * math.sin(phase * 2 * math.pi * 1.5)))
                specs: list[dict[str, Any]] = []
                for _ in range(burst):
                    specs.append({"name": "resize_image", "routing_key": "images", "priority": "high"})
                    specs.append({"name": "send_email", "routing_key": "emails", "max_retries": 2})
                if random.random() < 0.35:
                    specs.append({"name": "build_report", "routing_key": "reports", "priority": "low"})
                client.submit_many(specs)
                if now >= next_scrape:
                    scrapes.append((now - started, _scrape(port)))
                    next_scrape += SCRAPE_EVERY
                time.sleep(0.5)
    finally:
        worker.send_signal(signal.SIGINT)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            worker.kill()
    return scrapes


# -- evaluating the panels' queries over the scrapes ----------------------------------------------

Series = list[tuple[str, list[tuple[float, float]]]]


def _values(samples: Samples, name: str, by: str | None = None) -> dict[str, float]:
    """``sum by (by)`` of metric ``name`` in one scrape."""
    out: dict[str, float] = defaultdict(float)
    for (sample, labels), value in samples.items():
        if sample == name:
            out[dict(labels).get(by, "") if by else ""] += value
    return out


def _windowed(scrapes: list[tuple[float, Samples]]) -> list[tuple[float, Samples, Samples]]:
    """``(t, scrape at t, scrape WINDOW seconds earlier)`` for every scrape that has one."""
    out = []
    for i, (t, now) in enumerate(scrapes):
        earlier = [s for u, s in scrapes[: i + 1] if u <= t - WINDOW]
        if earlier:
            out.append((t, now, earlier[-1]))
    return out


def rate(scrapes: list[tuple[float, Samples]], name: str, by: str | None, label: str, per: float = 1.0) -> Series:
    """``sum by (by) (rate(name[WINDOW]))`` (``per=WINDOW``: ``increase``)."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for t, now, before in _windowed(scrapes):
        a, b = _values(now, name, by), _values(before, name, by)
        for key, value in a.items():
            series[key].append((t, max(value - b.get(key, 0.0), 0.0) / WINDOW * per))
    return [(label.format(key) if by else label, points) for key, points in sorted(series.items())]


def _quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over cumulative ``(le, count)`` pairs."""
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    if total <= 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower
            return lower + (le - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = le, count
    return lower


def quantiles(scrapes: list[tuple[float, Samples]], name: str, by: str, qs: tuple[float, ...]) -> Series:
    """``histogram_quantile(q, sum by (le, by) (rate(name_bucket[WINDOW])))`` for each ``q``."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for t, now, before in _windowed(scrapes):
        grown: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
        for (sample, labels), value in now.items():
            if sample == f"{name}_bucket":
                fields = dict(labels)
                earlier = before.get((sample, labels), 0.0)
                grown[fields[by]][float(fields["le"])] += value - earlier
        for key, buckets in grown.items():
            for q in qs:
                value = _quantile(q, list(buckets.items()))
                if not math.isnan(value):
                    series[f"{key} p{int(q * 100)}"].append((t, value))
    return sorted(series.items())


def gauge(scrapes: list[tuple[float, Samples]], name: str, by: str | None, label: str) -> Series:
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for t, samples in scrapes:
        for key, value in _values(samples, name, by).items():
            series[key].append((t, value))
    return [(label.format(key) if by else label, points) for key, points in sorted(series.items())]


def last(series: Series) -> float:
    return sum(points[-1][1] for _, points in series if points)


def panels(scrapes: list[tuple[float, Samples]]) -> dict[str, tuple[str, Any]]:
    """Each panel title of bananas.json: ``(kind, data)`` as evaluated from ``scrapes``."""
    s = scrapes
    completed = rate(s, "bananas_jobs_completed_total", None, "completed")
    failed = rate(s, "bananas_jobs_failed_total", None, "failed")
    attempts = last(completed) + last(failed)
    by_queue: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for t, samples in s:  # max by (routing_key, priority) (bananas_queue_depth): one worker, one value each
        for (sample, labels), value in samples.items():
            if sample == "bananas_queue_depth":
                fields = dict(labels)
                by_queue[f"{fields['routing_key']} {fields['priority']}"].append((t, value))
    depth: Series = sorted((key, points) for key, points in by_queue.items() if any(v for _, v in points))
    return {
        "Completed / s": ("stat", (last(completed), "ops", completed)),
        "Error rate": ("stat", (last(failed) / attempts if attempts else 0.0, "percent", failed)),
        "Ready jobs": ("stat", (last(gauge(s, "bananas_queue_depth", None, "ready")), "", depth)),
        "Dead jobs": ("stat", (last(gauge(s, "bananas_dead_jobs", None, "dead")), "", [])),
        "Workers alive": ("stat", (last(gauge(s, "bananas_workers_alive", None, "workers")), "", [])),
        "Utilisation": (
            "gauge",
            last(gauge(s, "bananas_jobs_in_flight", None, "x"))
            / max(last(gauge(s, "bananas_worker_concurrency", None, "c")), 1),
        ),
        "Attempts per second by job": (
            "timeseries",
            (
                rate(s, "bananas_jobs_completed_total", "job", "{} completed")
                + rate(s, "bananas_jobs_failed_total", "job", "{} failed"),
                "/s",
            ),
        ),
        "Queue depth": (
            "timeseries",
            (
                depth
                + gauge(s, "bananas_scheduled_jobs", None, "scheduled / retrying")
                + gauge(s, "bananas_processing_jobs", None, "processing"),
                "",
            ),
        ),
        "Attempt duration (p50, p95)": (
            "timeseries",
            (quantiles(s, "bananas_job_duration_seconds", "job", (0.5, 0.95)), "s"),
        ),
        "Wait from ready to claimed (p50, p95)": (
            "timeseries",
            (quantiles(s, "bananas_job_wait_seconds", "routing_key", (0.5, 0.95)), "s"),
        ),
        "Retries and dead letters": (
            "timeseries",
            (
                rate(s, "bananas_jobs_retried_total", "job", "{} retried", per=WINDOW)
                + rate(s, "bananas_jobs_dead_total", "job", "{} dead", per=WINDOW),
                "",
            ),
        ),
        "Leases reaped and cron fires": (
            "timeseries",
            (rate(s, "bananas_leases_reaped_total", None, "leases reaped", per=WINDOW), ""),
        ),
        "Worker utilisation": ("timeseries", (gauge(s, "bananas_worker_utilisation", None, "127.0.0.1 worker"), "")),
    }


# -- drawing -----------------------------------------------------------------------------------

COLOURS = ["#73BF69", "#F2CC0C", "#8AB8FF", "#FF780A", "#F2495C", "#5794F2", "#B877D9", "#FADE2A", "#96D98D"]
ROW = 34  # pixels per Grafana grid row


def _fmt(value: float, unit: str) -> str:
    if unit == "percent":
        return f"{value * 100:.1f}%"
    if unit == "s":
        return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"
    if unit in ("ops", "/s"):
        return f"{value:.1f}/s"
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"


def _chart(series: Series, unit: str, width: int, height: int) -> str:
    points = [p for _, pts in series for p in pts]
    if not points:
        return '<div class="nodata">No data</div>'
    t0, t1 = min(t for t, _ in points), max(t for t, _ in points)
    top = max(v for _, v in points) or 1.0
    left, bottom = 56, 18
    w, h = width - left - 8, height - bottom - 6

    def xy(t: float, v: float) -> str:
        return f"{left + (t - t0) / max(t1 - t0, 1e-9) * w:.1f},{6 + h - v / top * h:.1f}"

    grid = "".join(
        f'<line x1="{left}" x2="{left + w}" y1="{6 + h - f * h:.1f}" y2="{6 + h - f * h:.1f}" class="grid"/>'
        f'<text x="{left - 6}" y="{10 + h - f * h:.1f}" class="axis" text-anchor="end">{_fmt(top * f, unit)}</text>'
        for f in (0, 0.25, 0.5, 0.75, 1)
    )
    lines = "".join(
        f'<polyline points="{" ".join(xy(t, v) for t, v in pts)}" stroke="{COLOURS[i % len(COLOURS)]}" '
        f'fill="none" stroke-width="1.6"/>'
        for i, (_, pts) in enumerate(series)
    )
    anchors = {0: "start", 1: "end"}
    ticks = "".join(
        f'<text x="{left + f * w:.1f}" y="{height - 3}" class="axis" text-anchor="{anchors.get(f, "middle")}">'
        f"{_clock(t0 + f * (t1 - t0))}</text>"
        for f in (0, 0.25, 0.5, 0.75, 1)
    )
    legend = "".join(
        f'<span><i style="background:{COLOURS[i % len(COLOURS)]}"></i>{html.escape(label)}</span>'
        for i, (label, _) in enumerate(series)
    )
    return f'<svg width="{width}" height="{height}">{grid}{lines}{ticks}</svg><div class="legend">{legend}</div>'


def _spark(series: Series, colour: str, width: int = 220, height: int = 28) -> str:
    """A stat panel's sparkline: the sum of ``series`` over time, as an area."""
    totals: dict[float, float] = defaultdict(float)
    for _, points in series:
        for t, v in points:
            totals[t] += v
    if len(totals) < 2:
        return ""
    ts = sorted(totals)
    top = max(totals.values()) or 1.0
    coords = " ".join(
        f"{(t - ts[0]) / (ts[-1] - ts[0]) * width:.1f},{height - totals[t] / top * (height - 2):.1f}" for t in ts
    )
    return (
        f'<svg class="spark" width="100%" height="{height}" viewBox="0 0 {width} {height}" preserveAspectRatio="none">'
        f'<polygon points="0,{height} {coords} {width},{height}" fill="{colour}" fill-opacity="0.15"/>'
        f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.2"/></svg>'
    )


START = time.time()


def _clock(offset: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(START + offset))


def render_html(dashboard: dict[str, Any], evaluated: dict[str, tuple[str, Any]], width: int = 1600) -> str:
    unit_w = width / 24
    body = []
    for panel in dashboard["panels"]:
        kind, data = evaluated[panel["title"]]
        pos = panel["gridPos"]
        x, y, w, h = pos["x"] * unit_w, pos["y"] * ROW, pos["w"] * unit_w - 8, pos["h"] * ROW - 8
        inner_w, inner_h = int(w - 16), int(h - 40)
        if kind == "stat":
            value, unit, spark = data
            colour = "#F2495C" if panel["title"] == "Dead jobs" and value else "#73BF69"
            if panel["title"] == "Error rate":
                colour = "#F2495C" if value >= 0.2 else "#FF9830" if value >= 0.05 else "#73BF69"
            content = f'<div class="stat" style="color:{colour}">{_fmt(value, unit)}</div>' + _spark(spark, colour)
        elif kind == "gauge":
            angle = math.pi * (1 - min(max(data, 0.0), 1.0))
            ex, ey = 60 + 48 * math.cos(angle), 58 - 48 * math.sin(angle)
            content = (
                f'<svg width="120" height="70" class="gauge"><path d="M12,58 A48,48 0 0 1 108,58" stroke="#2c3235" '
                f'stroke-width="10" fill="none"/><path d="M12,58 A48,48 0 0 1 {ex:.1f},{ey:.1f}" stroke="#73BF69" '
                f'stroke-width="10" fill="none"/><text x="60" y="56" text-anchor="middle">{data * 100:.0f}%</text>'
                "</svg>"
            )
        else:
            series, unit = data
            content = _chart(series, unit, inner_w, inner_h - 22)
        body.append(
            f'<div class="panel" style="left:{x:.0f}px;top:{y:.0f}px;width:{w:.0f}px;height:{h:.0f}px">'
            f'<div class="title">{html.escape(panel["title"])}</div>{content}</div>'
        )
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"]) * ROW + 60
    return f"""<!doctype html><html><head><meta charset="utf-8"><style>
body {{ margin: 0; background: #111217; color: #ccccdc; font: 13px Inter, "Helvetica Neue", Arial, sans-serif; }}
header {{ padding: 12px 16px; font-size: 17px; color: #d8d9da; }} header small {{ color: #8e8e8e; margin-left: 10px; }}
main {{ position: relative; margin: 0 8px; height: {height}px; }}
.panel {{ position: absolute; background: #181b1f; border: 1px solid #2c3235; border-radius: 2px; padding: 6px 8px; }}
.title {{ font-weight: 500; color: #d8d9da; margin-bottom: 4px; }}
.stat {{ font-size: 38px; font-weight: 500; text-align: center; margin-top: 6px; }}
.spark {{ display: block; margin-top: 2px; }}
.gauge {{ display: block; margin: 6px auto 0; }} .gauge text {{ fill: #d8d9da; font-size: 18px; }}
.grid {{ stroke: #2c3235; }} .axis {{ fill: #8e8e8e; font-size: 10px; }}
.legend {{ display: flex; flex-wrap: wrap; gap: 4px 12px; font-size: 11px; color: #ccccdc; }}
.legend i {{ display: inline-block; width: 12px; height: 3px; margin-right: 5px; vertical-align: middle; }}
.nodata {{ color: #8e8e8e; text-align: center; margin-top: 30px; }}
</style></head><body><header>Bananas <small>{html.escape(dashboard["description"])}</small></header>
<main>{"".join(body)}</main></body></html>"""


def screenshot(page_html: str, out: Path, chromium: str, width: int = 1600) -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.NamedTemporaryFile("w", suffix=".html", delete=False) as f:
        f.write(page_html)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": width + 16, "height": 900})
            page.goto(Path(f.name).as_uri())
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()
    os.unlink(f.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=150.0, help="how long the workload runs (default 150)")
    parser.add_argument("--out", type=Path, default=HERE.parents[1] / "docs" / "img" / "grafana-dashboard.png")
    parser.add_argument("--chromium", default=os.environ.get("BANANAS_TEST_CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("--keep-html", type=Path, default=None, help="also write the HTML page here")
    args = parser.parse_args(argv)
    dashboard = json.loads((HERE / "bananas.json").read_text())
    scrapes = run_workload(args.seconds)
    evaluated = panels(scrapes)
    missing = [p["title"] for p in dashboard["panels"] if p["title"] not in evaluated]
    if missing:
        raise SystemExit(f"render_preview: no evaluation for panel(s) {', '.join(missing)}")
    page_html = render_html(dashboard, evaluated)
    if args.keep_html:
        args.keep_html.write_text(page_html)
    screenshot(page_html, args.out, args.chromium)
    print(f"{len(scrapes)} scrapes over {args.seconds:g}s drawn to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

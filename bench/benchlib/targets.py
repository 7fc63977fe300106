"""The performance targets, checked against one run's results (a table for bench/README.md)."""

from __future__ import annotations

from typing import Any

PEERS_REDIS = ("rq", "arq", "saq", "celery", "dramatiq", "taskiq", "huey")


def _med(results: dict[str, Any], system: str, key: str) -> float | None:
    metric = results["systems"].get(system, {}).get("metrics", {}).get(key)
    return None if metric is None else float(metric["median"])


def _best(results: dict[str, Any], systems: tuple[str, ...], keys: tuple[str, ...]) -> tuple[float, str] | None:
    best: tuple[float, str] | None = None
    for s in systems:
        for k in keys:
            v = _med(results, s, k)
            if v is not None and (best is None or v > best[0]):
                best = (v, f"{s} {k}")
    return best


def _cpu_per_job(results: dict[str, Any], system: str) -> float | None:
    worker, server = _med(results, system, "W2 CPU ms/job"), _med(results, system, "W2 server CPU ms/job")
    return None if worker is None or server is None else worker + server


def _row(what: str, target: str, value: float | None, ok: bool | None, detail: str) -> str:
    shown = "n/a" if value is None else f"{value:,.2f}"
    verdict = "not measured" if ok is None else ("met" if ok else "**missed**")
    return f"| {what} | {target} | {shown} | {verdict} | {detail} |"


def _ratio(results: dict[str, Any], ours: str, key: str, ref: tuple[float, str] | None) -> tuple[float | None, str]:
    v = _med(results, ours, key)
    if v is None or ref is None:
        return None, "missing data"
    return v / ref[0], f"{v:,.0f} vs {ref[0]:,.0f} ({ref[1]})"


def check(results: dict[str, Any]) -> list[str]:
    """Markdown lines: one row per target, with the measured value and whether it was met."""
    rows = ["| target | wanted | measured | verdict | detail |", "|---|---|---|---|---|"]

    def ratio_row(what: str, ours: str, key: str, ref: tuple[float, str] | None, factor: float) -> None:
        r, detail = _ratio(results, ours, key, ref)
        rows.append(_row(what, f">= {factor}x", r, None if r is None else r >= factor, detail))

    def bound_row(what: str, ours: str, key: str, limit: float, upper: bool) -> None:
        v = _med(results, ours, key)
        ok = None if v is None else (v <= limit if upper else v >= limit)
        rows.append(_row(what, f"{'<=' if upper else '>='} {limit:,}", v, ok, key))

    configs = ("W2 drain/s", "W4 2 proc/s", "W4 4 proc/s")
    peers_w2 = _best(results, PEERS_REDIS, configs)
    ours_w2 = _best(results, ("bananas-redis",), configs)
    peers_w1 = _best(results, PEERS_REDIS, ("W1 submit/s",))
    r = None if ours_w2 is None or peers_w2 is None else ours_w2[0] / peers_w2[0]
    detail = "missing data" if r is None else f"{ours_w2[0]:,.0f} ({ours_w2[1]}) vs {peers_w2[0]:,.0f} ({peers_w2[1]})"
    rows.append(_row("Redis, best configurations (any process count) vs the best peer's", ">= 1.5x", r,
                     None if r is None else r >= 1.5, detail))  # fmt: skip
    cpu = {s: _cpu_per_job(results, s) for s in ("bananas-redis", *PEERS_REDIS)}
    peer_cpu = [(v, s) for s, v in cpu.items() if v is not None and s != "bananas-redis"]
    ours_cpu = cpu["bananas-redis"]
    what = "Redis W2 worker + server CPU per job vs the lowest peer's"
    if ours_cpu is None or not peer_cpu:
        rows.append(_row(what, "<= 0.33x", None, None, "missing data"))
    else:
        low = min(peer_cpu)
        share = ours_cpu / low[0]
        rows.append(_row(what, "<= 0.33x", share, share <= 1 / 3, f"{ours_cpu:.3f} vs {low[0]:.3f} ms ({low[1]})"))
    ratio_row("Redis W1 AsyncClient vs fastest peer", "bananas-redis", "W1 submit/s", peers_w1, 1.5)
    ratio_row("Redis W1 Client vs fastest peer", "bananas-redis", "W1 sync submit/s", peers_w1, 1.0)
    bound_row("Redis W1b bulk jobs/s", "bananas-redis", "W1b bulk/s", 100_000, upper=False)
    bound_row("Redis W3 p50 ms", "bananas-redis", "W3 p50 ms", 0.5, upper=True)
    bound_row("Redis W3 p99 ms", "bananas-redis", "W3 p99 ms", 2.0, upper=True)
    pgq = {k: _best(results, ("pgqueuer",), (k,)) for k in ("W2 drain/s", "W1 submit/s", "W1b bulk/s")}
    ratio_row("PostgreSQL W2 vs pgqueuer", "bananas-pg", "W2 drain/s", pgq["W2 drain/s"], 2.0)
    ratio_row("PostgreSQL W1 vs pgqueuer", "bananas-pg", "W1 submit/s", pgq["W1 submit/s"], 1.5)
    ratio_row("PostgreSQL W1b vs pgqueuer", "bananas-pg", "W1b bulk/s", pgq["W1b bulk/s"], 1.0)
    bound_row("PostgreSQL W3 p50 ms", "bananas-pg", "W3 p50 ms", 1.5, upper=True)
    bound_row("PostgreSQL W3 p99 ms", "bananas-pg", "W3 p99 ms", 5.0, upper=True)
    bound_row("SQLite W2 jobs/s", "bananas-sqlite", "W2 drain/s", 2_000, upper=False)
    bound_row("SQLite W3 p50 ms", "bananas-sqlite", "W3 p50 ms", 20.0, upper=True)
    for ours in ("bananas-redis", "bananas-pg", "bananas-sqlite"):
        ratio_row(f"W4 {ours}: 2 processes vs 1", ours, "W4 2 proc/s", _best(results, (ours,), ("W4 1 proc/s",)), 1.0)
    ratio_row("W7 bananas-redis: CPU-bound jobs, 2 processes vs 1", "bananas-redis", "W7 2 proc/s",
              _best(results, ("bananas-redis",), ("W7 1 proc/s",)), 1.8)  # fmt: skip
    for ours in ("bananas-redis", "bananas-pg", "bananas-sqlite"):
        for key, upper in (("W5 drain/s backlog / empty", False), ("W5 drain/s history / empty", False),
                           ("W5 claim ms backlog / empty", True), ("W5 claim ms history / empty", True),
                           ("W5h p50 ms / empty", True)):  # fmt: skip
            if _med(results, ours, key) is not None:
                bound_row(f"W5 {ours} {key}", ours, key, 1.2 if upper else 0.8, upper=upper)
    return rows

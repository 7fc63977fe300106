"""The report: machine description, the Markdown results table (also written into
bench/README.md between markers) and the PNG plot of W2 and W3 per system."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from benchlib import targets

START = "<!-- bench:results:start -->"
END = "<!-- bench:results:end -->"

# (metric key, column title, format) of the main table and of the backlog (W5) table
COLUMNS = [
    ("W1 submit/s", "W1 submit/s", "{:,.0f}"),
    ("W1 sync submit/s", "W1 sync/s", "{:,.0f}"),
    ("W1b bulk/s", "W1b bulk/s", "{:,.0f}"),
    ("W2 drain/s", "W2 drain/s", "{:,.0f}"),
    ("W2 CPU ms/job", "W2 worker CPU ms/job", "{:.3f}"),
    ("W2 server CPU ms/job", "W2 server CPU ms/job", "{:.3f}"),
    ("W2 Redis cmds/job", "W2 Redis cmds/job", "{:.1f}"),
    ("W2 PG commits/job", "W2 PG commits/job", "{:.1f}"),
    ("W3 p50 ms", "W3 p50 ms", "{:.2f}"),
    ("W3 p95 ms", "W3 p95 ms", "{:.2f}"),
    ("W3 p99 ms", "W3 p99 ms", "{:.2f}"),
    ("W4 1 proc/s", "W4 1p/s", "{:,.0f}"),
    ("W4 2 proc/s", "W4 2p/s", "{:,.0f}"),
    ("W4 4 proc/s", "W4 4p/s", "{:,.0f}"),
    ("worker RSS MB", "RSS MB", "{:.0f}"),
    ("redis bytes/job", "Redis B/job", "{:.0f}"),
]
W5_COLUMNS = [
    ("W5 backlog jobs", "backlog", "{:,.0f}"),
    ("W5 drain/s backlog", "drain/s backlog", "{:,.0f}"),
    ("W5 drain/s backlog / empty", "÷ W2", "{:.2f}"),
    ("W5 drain/s history", "drain/s history", "{:,.0f}"),
    ("W5 drain/s history / empty", "÷ W2", "{:.2f}"),
    ("W5h p50 ms", "pickup p50 ms history", "{:.2f}"),
    ("W5h p50 ms / empty", "÷ W3", "{:.2f}"),
    ("W5 claim ms empty", "claim ms empty", "{:.2f}"),
    ("W5 claim ms backlog", "claim ms backlog", "{:.2f}"),
    ("W5 claim ms backlog / empty", "÷ empty", "{:.2f}"),
    ("W5 claim ms history", "claim ms history", "{:.2f}"),
    ("W5 claim ms history / empty", "÷ empty", "{:.2f}"),
]
W6_COLUMNS = [
    ("W2 drain/s", "W2 drain/s", "{:,.0f}"),
    ("W6 drain/s", "W6 drain/s", "{:,.0f}"),
    ("W6 drain/s / empty", "÷ W2", "{:.2f}"),
    ("W2 CPU ms/job", "W2 worker CPU ms/job", "{:.3f}"),
    ("W6 CPU ms/job", "W6 worker CPU ms/job", "{:.3f}"),
    ("W2 server CPU ms/job", "W2 server CPU ms/job", "{:.3f}"),
    ("W6 server CPU ms/job", "W6 server CPU ms/job", "{:.3f}"),
]
W7_COLUMNS = [
    ("W7 1 proc/s", "W7 1p jobs/s", "{:,.0f}"),
    ("W7 2 proc/s", "W7 2p jobs/s", "{:,.0f}"),
    ("W7 2 proc/s / empty", "2p ÷ 1p", "{:.2f}"),
]


def _cmd(*args: str) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=20, check=False).stdout.strip()
    except OSError:
        return "?"


def machine_commit() -> str:
    """The checkout's commit, and whether Bananas' sources differ from it."""
    root = Path(__file__).resolve().parents[2]
    head = _cmd("git", "-C", str(root), "rev-parse", "--short", "HEAD")
    dirty = _cmd("git", "-C", str(root), "status", "--porcelain", "--", "bananas_core", "bananas_redis", "bananas_sql")
    return head + (" + uncommitted changes" if dirty else "")


def machine(servers: Any) -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(
            next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1]
        )
    except (OSError, StopIteration, ValueError):
        mem_kb = 0
    info: dict[str, Any] = {
        "nproc": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(), "python": platform.python_version(),
    }  # fmt: skip
    info["bananas"] = f"commit {machine_commit()}"
    if servers.redis is not None:
        info["redis"] = _cmd(servers.redis.binary, "--version").split(" sha=")[0]
    if servers.postgres is not None:
        info["postgresql"] = (
            _cmd(str(servers.postgres.bindir / "postgres"), "--version") + " (fsync on, synchronous_commit on)"
        )
    return info


def _cell(metric: dict[str, Any] | None, fmt: str) -> str:
    if not metric:
        return "n/a"
    med = fmt.format(metric["median"])
    if len(metric["runs"]) > 1:
        return f"{med} ({fmt.format(metric['min'])}-{fmt.format(metric['max'])})"
    return med


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    cfg = results["config"]
    parts = [f"Python {m['python']}", m.get("redis"), m.get("postgresql"), f"Bananas {m.get('bananas', '?')}"]
    lines = [
        f"Run {results['started']} on {m['nproc']} cores ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}; "
        + "; ".join(x for x in parts if x)
        + ".",
        "",
        f"{cfg['jobs']:,} jobs per W1/W1b/W2/W4 run"
        + (f" ({cfg['jobs_sql']:,} on PostgreSQL and SQLite)" if cfg.get("jobs_sql") else "")
        + f", {cfg['latency_jobs']} W3 jobs, median of {cfg['repeat']} runs "
        f"(min-max in brackets); W5: {cfg['backlog']:,} waiting jobs / {cfg['history']:,} finished rows, "
        f"{cfg['backlog_repeat']} run; bulk batches of {cfg['batch']}; concurrency {cfg['concurrency']} per worker "
        "process where the system has the knob. n/a = not measured or not offered.",
        "",
    ]
    lines += _table(results, COLUMNS)
    if any(k.startswith("W5") for s in results["systems"].values() for k in s.get("metrics", {})):
        lines += ["", "W5, backlog and history (claim = one claim of up to 10 jobs through the queue API):", ""]
        lines += _table(results, W5_COLUMNS)
    if any(k.startswith("W6") for s in results["systems"].values() for k in s.get("metrics", {})):
        lines += ["", "W6, the W2 jobs spread over 100 groups under a limit each (see below):", ""]
        lines += _table(results, W6_COLUMNS)
    if any(k.startswith("W7") for s in results["systems"].values() for k in s.get("metrics", {})):
        ms, n = cfg.get("cpu_ms", 5.0), cfg.get("cpu_jobs", 0)
        lines += ["", f"W7, {n:,} CPU-bound jobs (a {ms:g} ms pure-Python loop, then the count) per run, "
                  "drained by 1 and 2 worker processes:", ""]  # fmt: skip
        lines += _table(results, W7_COLUMNS)
    lines += ["", "Targets against this run (medians):", "", *targets.check(results)]
    lines += ["", "Configuration and versions per system:", ""]
    for name, s in results["systems"].items():
        info = s.get("info", {})
        versions = ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())
        notes = "; ".join([info.get("notes", ""), *s.get("notes", [])]).strip("; ")
        lines.append(f"- **{name}**: {notes}. {versions}.")
        for err in s.get("errors", []):
            first = err.strip().splitlines()
            lines.append(f"  - error: {' / '.join(x.strip() for x in first[:3])[:400]}")
    return "\n".join(lines) + "\n"


def _table(results: dict[str, Any], columns: list[tuple[str, str, str]]) -> list[str]:
    systems = results["systems"]
    shown = [c for c in columns if any(c[0] in s.get("metrics", {}) for s in systems.values())]
    rows = [n for n, s in systems.items() if any(c[0] in s.get("metrics", {}) for c in shown) or s.get("errors")]
    lines = ["| system | store | " + " | ".join(c[1] for c in shown) + " |", "|---|---|" + "---|" * len(shown)]
    for name in rows:
        s = systems[name]
        cells = [_cell(s.get("metrics", {}).get(key), fmt) for key, _, fmt in shown]
        lines.append(f"| {name} | {s.get('store', '?')} | " + " | ".join(cells) + " |")
    return lines


def write_readme(path: Path, table: str) -> None:
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    if START not in text:
        text += f"\n{START}\n{END}\n"
    text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: f"{START}\n{table}{END}", text, flags=re.S)
    path.write_text(text)


def plot(results: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: matplotlib not installed (bench/setup driver installs it): no plot")
        return
    systems = [n for n, s in results["systems"].items() if s.get("metrics")]
    if not systems:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 0.5 * len(systems) + 2.5))
    colors = ["#d4a017" if n.startswith("bananas") else "#7f8c8d" for n in systems]
    y = range(len(systems))

    def bars(ax: Any, key: str, offset: float, height: float, color: Any, label: str | None) -> None:
        vals, lo, hi = [], [], []
        for n in systems:
            met = results["systems"][n]["metrics"].get(key)
            v = met["median"] if met else 0.0
            vals.append(v)
            lo.append(v - met["min"] if met else 0.0)
            hi.append(met["max"] - v if met else 0.0)
        ax.barh([i + offset for i in y], vals, height=height, color=color, xerr=[lo, hi], capsize=2, label=label)

    bars(ax1, "W2 drain/s", 0, 0.7, colors, None)
    ax1.set_title("W2 drain, one worker process (jobs/s, higher is better)")
    bars(ax2, "W3 p50 ms", -0.2, 0.4, colors, "p50")
    bars(ax2, "W3 p99 ms", 0.2, 0.4, "#c0392b", "p99")
    ax2.set_xscale("log")
    ax2.set_title("W3 idle pickup latency (ms, log scale, lower is better)")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.set_yticks(list(y))
        ax.set_yticklabels(systems)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    m = results["machine"]
    fig.suptitle(f"Bananas vs peers, {m['nproc']} cores ({m['cpu']}), {results['started']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

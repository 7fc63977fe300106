"""Run the benchmark matrix: every system, every workload, side by side on one machine.

    python bench/run.py                      # everything (after bench/setup)
    python bench/run.py --quick              # ~10 s smoke run (CI): tiny counts, Bananas only, one line
    python bench/run.py --systems rq,bananas-redis --workloads W2,W3 --jobs 5000 --backlog 100000

Run it with the driver venv (bench/.venvs/driver/bin/python, made by bench/setup) or any Python
that has redis-py and psycopg (matplotlib for the plot). It starts its own redis-server and
PostgreSQL cluster on free loopback ports and stops them at the end. Results go to
bench/results/<timestamp>.json (and latest.json), the table into bench/README.md between
markers, the plot to bench/results/bench.png. See bench/README.md for what each workload measures.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time
import traceback
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adapters._common import calibrate
from benchlib import report
from benchlib.procs import AdapterError, WorkerGroup, run_role
from benchlib.stores import BENCH, ROOT, Servers, Store, claim_scratch

# name -> (venv under bench/.venvs, adapter module, store)
SYSTEMS: dict[str, tuple[str, str, str]] = {
    "bananas-redis": ("bananas", "bananas", "redis"),
    "bananas-pg": ("bananas", "bananas", "postgres"),
    "bananas-sqlite": ("bananas", "bananas", "sqlite"),
    "rq": ("rq", "rq", "redis"),
    "arq": ("arq", "arq", "redis"),
    "saq": ("saq", "saq", "redis"),
    "celery": ("celery", "celery", "redis"),
    "dramatiq": ("dramatiq", "dramatiq", "redis"),
    "taskiq": ("taskiq", "taskiq", "redis"),
    "huey": ("huey", "huey", "redis"),
    "procrastinate": ("procrastinate", "procrastinate", "postgres"),
    "pgqueuer": ("pgqueuer", "pgqueuer", "postgres"),
    "saq-pg": ("saq", "saq", "postgres"),
}
WORKLOADS = ("W1", "W1b", "W2", "W3", "W4", "W5", "W6", "W7")
CONFIG_KEYS = ("jobs", "jobs_sql", "repeat", "latency_jobs", "backlog", "history", "backlog_repeat", "fill_budget",
               "drain_limit", "batch", "concurrency", "scale", "cpu_jobs", "cpu_ms", "cpu_rounds", "cpu_scale",
               "workloads")  # fmt: skip
PROBE_CLAIMS = 200  # W5 claim probes (Bananas): claims of up to 10 jobs each
W6_GROUPS = 100  # W6: the jobs are spread over this many groups, each under a limit


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


class SystemBench:
    """Runs the selected workloads for one system and collects one value per metric per run."""

    def __init__(self, name: str, python: str, servers: Servers, args: argparse.Namespace) -> None:
        self.name = name
        self.python = python
        _, self.module, kind = SYSTEMS[name]
        self.args = args
        self.store = Store(kind, name, servers)
        if kind != "redis" and args.jobs_sql:
            self.args = args = argparse.Namespace(**{**vars(args), "jobs": args.jobs_sql})
        self.env = {**os.environ, "PYTHONPATH": str(BENCH), "PYTHONUNBUFFERED": "1", **self.store.env()}
        self.env.pop("BANANAS_URL", None)
        self.metrics: dict[str, list[float]] = defaultdict(list)
        self.notes: list[str] = []
        self.info: dict[str, Any] = {}
        self.t_start = time.monotonic()

    def role(self, role: str, *args: str, timeout: float = 600) -> dict[str, Any]:
        return run_role(self.python, self.module, self.env, role, *args, timeout=timeout)

    def fresh(self) -> None:
        self.store.fresh()
        if self.info.get("setup", True):
            self.role("setup", timeout=120)

    def log(self, text: str) -> None:
        print(f"  [{self.name} {time.monotonic() - self.t_start:5.1f}s] {text}", flush=True)

    # ---- workloads -------------------------------------------------------------------
    def w1(self) -> None:
        n = self.args.jobs
        self.fresh()
        mem0 = self.store.redis_used_memory()
        r = self.role("submit", str(n))
        self.metrics["W1 submit/s"].append(n / r["seconds"])
        mem1 = self.store.redis_used_memory()
        if mem0 is not None and mem1 is not None:
            self.metrics["redis bytes/job"].append((mem1 - mem0) / n)
        self.log(f"W1 {n / r['seconds']:.0f} jobs/s")
        if self.info.get("sync_client"):
            self.fresh()
            r = self.role("submit", str(n), "--sync")
            self.metrics["W1 sync submit/s"].append(n / r["seconds"])
            self.log(f"W1 sync {n / r['seconds']:.0f} jobs/s")

    def w1b(self) -> None:
        n = self.args.jobs
        self.fresh()
        r = self.role("bulk", str(n), "--batch", str(self.args.batch))
        if "unsupported" in r:
            self._note(f"W1b: {r['unsupported']}")
            return
        self.metrics["W1b bulk/s"].append(n / r["seconds"])
        self.log(f"W1b {n / r['seconds']:.0f} jobs/s")

    def drain(self, workers: int, n: int, tag: str, count_ops: bool = False) -> dict[str, float]:
        """Start `workers` processes on a queue holding at least n jobs; time the first n.
        With count_ops, also the store operations per job (see Store.operations)."""
        self.store.reset_counter()
        ops0 = self.store.operations() if count_ops else 0
        polls = 1  # counter reads by the driver, one each
        group = WorkerGroup(self.python, self.module, self.env, workers, self.args.concurrency, f"{self.name}-{tag}")
        try:
            deadline = time.monotonic() + 120
            c = self.store.counter()
            while c == 0:
                if not group.alive():
                    raise AdapterError(
                        f"a worker exited before doing any job (see bench/.scratch/logs/{self.name}-{tag}-*.log)"
                    )
                if time.monotonic() > deadline:
                    raise AdapterError("no job done within 120 s of starting the worker")
                time.sleep(0.002)
                c = self.store.counter()
                polls += 1
            t0, c0, cpu0, scpu0 = time.perf_counter(), c, group.cpu_seconds(), self.store.server_cpu_seconds()
            group.start_profilers()
            deadline = time.monotonic() + self.args.drain_limit
            while c < n:
                time.sleep(0.005)
                c = self.store.counter()
                polls += 1
                if not group.alive():
                    raise AdapterError(
                        f"a worker died at {c}/{n} jobs (see bench/.scratch/logs/{self.name}-{tag}-*.log)"
                    )
                if time.monotonic() > deadline:
                    if c - c0 < 100:
                        raise AdapterError(f"drain stalled at {c}/{n} jobs")
                    self._note(
                        f"{tag}: stopped after {self.args.drain_limit:.0f} s at {c:,}/{n:,} jobs (rate of those)"
                    )
                    break
            t1, cpu1, rss = time.perf_counter(), group.cpu_seconds(), group.rss_bytes()
            scpu1 = self.store.server_cpu_seconds()
        finally:
            group.stop()
        done = c - c0
        out = {
            "rate": done / (t1 - t0), "cpu": cpu1 - cpu0, "cpu_per_job_ms": (cpu1 - cpu0) / done * 1000, "rss": rss,
            "server_cpu_per_job_ms": (scpu1 - scpu0) / done * 1000,
        }  # fmt: skip
        if count_ops and self.store.kind != "sqlite":
            if self.store.kind == "postgres":
                time.sleep(1.1)  # PostgreSQL publishes a backend's statistics at most once a second
            # the driver's own counter reads (one per poll, plus the first-job wait) are not the system's
            out["ops_per_job"] = (self.store.operations() - ops0 - polls * (self.store.kind == "redis")) / c
        return out

    def fill(self, n: int, budget: float | None = None) -> int:
        extra = ["--budget", str(budget)] if budget else []
        r = self.role("fill", str(n), "--batch", str(self.args.batch), *extra, timeout=max(600.0, n / 200))
        return int(r["n"])

    def w2(self) -> None:
        n = self.args.jobs
        self.fresh()
        self.fill(n)
        d = self.drain(1, n, "w2", count_ops=True)
        self.metrics["W2 drain/s"].append(d["rate"])
        if "ops_per_job" in d:
            key = "W2 Redis cmds/job" if self.store.kind == "redis" else "W2 PG commits/job"
            self.metrics[key].append(d["ops_per_job"])
        self.metrics["W2 worker CPU s"].append(d["cpu"])
        self.metrics["W2 CPU ms/job"].append(d["cpu_per_job_ms"])
        if self.store.kind != "sqlite":
            self.metrics["W2 server CPU ms/job"].append(d["server_cpu_per_job_ms"])
        self.metrics["worker RSS MB"].append(d["rss"] / 2**20)
        self.log(f"W2 {d['rate']:.0f} jobs/s, CPU {d['cpu']:.2f} s, RSS {d['rss'] / 2**20:.0f} MB")

    def w6(self) -> None:
        """W2 with the jobs spread over W6_GROUPS groups, each limited (see the adapter's W6_LIMIT)."""
        if not self.info.get("groups"):
            self._note("W6: no groups with limits")
            return
        n = self.args.jobs
        self.fresh()
        r = self.role("groups", str(n), "--groups", str(W6_GROUPS), "--batch", str(self.args.batch),
                      timeout=max(600.0, n / 200))  # fmt: skip
        if "unsupported" in r:
            self._note(f"W6: {r['unsupported']}")
            return
        d = self.drain(1, n, "w6")
        self.metrics["W6 drain/s"].append(d["rate"])
        self.metrics["W6 CPU ms/job"].append(d["cpu_per_job_ms"])
        if self.store.kind != "sqlite":
            self.metrics["W6 server CPU ms/job"].append(d["server_cpu_per_job_ms"])
        self.log(f"W6 {d['rate']:.0f} jobs/s over {W6_GROUPS} limited groups, CPU {d['cpu']:.2f} s")

    def w4(self) -> None:
        n = self.args.jobs
        for k in self.args.scale:
            if k == 1 and "W2" in self.args.workloads and self.metrics.get("W2 drain/s"):
                self.metrics["W4 1 proc/s"].append(self.metrics["W2 drain/s"][-1])
                continue
            self.fresh()
            self.fill(n)
            d = self.drain(k, n, f"w4-{k}")
            self.metrics[f"W4 {k} proc/s"].append(d["rate"])
            self.log(f"W4 {k} processes: {d['rate']:.0f} jobs/s")

    def w7(self) -> None:
        """CPU-bound jobs: each body first computes ``--cpu-ms`` of pure Python (see
        ``_common.burn``), drained by 1 and 2 worker processes (``--cpu-scale``)."""
        n = self.args.cpu_jobs
        self.env["BENCH_BURN_ROUNDS"] = str(self.args.cpu_rounds)
        try:
            for k in self.args.cpu_scale:
                self.fresh()
                self.fill(n)
                d = self.drain(k, n, f"w7-{k}")
                self.metrics[f"W7 {k} proc/s"].append(d["rate"])
                self.log(f"W7 {k} processes: {d['rate']:.0f} CPU-bound jobs/s")
        finally:
            self.env.pop("BENCH_BURN_ROUNDS", None)

    def latency(self, key: str) -> None:
        group = WorkerGroup(self.python, self.module, self.env, 1, self.args.concurrency, f"{self.name}-{key}")
        try:
            r = self.role("latency", str(self.args.latency_jobs), timeout=300)
        finally:
            group.stop()
        lat = sorted(r["latencies_ms"])
        for q in (50, 95, 99):
            self.metrics[f"{key} p{q} ms"].append(_percentile(lat, q))
        self.log(f"{key} p50 {_percentile(lat, 50):.2f} ms, p99 {_percentile(lat, 99):.2f} ms")

    def w3(self) -> None:
        self.fresh()
        self.latency("W3")

    def w5(self) -> None:
        """Drain rate of the first `jobs` of a `backlog`-job queue; on PostgreSQL also the drain
        rate and pickup latency with `history` finished rows kept."""
        n, b = self.args.jobs, max(self.args.backlog, self.args.jobs)
        if self.info.get("claimprobe"):
            self.fresh()
            self.fill(PROBE_CLAIMS * 10 + 1000)
            self.claim_probe("W5 claim ms empty")
        self.fresh()
        started = time.perf_counter()
        b = self.fill(b, self.args.fill_budget)
        self.metrics["W5 backlog jobs"].append(b)
        if b < self.args.backlog:
            self._note(f"W5: backlog {b:,} (the {self.args.fill_budget:.0f} s fill budget ran out)")
        self.log(f"W5 backlog of {b} filled in {time.perf_counter() - started:.0f} s")
        self.store.settle()
        if self.info.get("claimprobe"):
            self.claim_probe("W5 claim ms backlog")
        d = self.drain(1, n, "w5")
        self.metrics["W5 drain/s backlog"].append(d["rate"])
        self.log(f"W5 with {b} waiting: {d['rate']:.0f} jobs/s")
        if self.store.kind != "postgres" or self.args.history <= 0:
            return
        self.fresh()
        r = self.role("history", str(self.args.history), timeout=1800)
        if "unsupported" in r:
            self._note(f"W5 history: {r['unsupported']}")
            return
        self.log(f"W5 {self.args.history} finished rows added in {r['seconds']:.0f} s")
        # The claim probe takes (and completes) PROBE_CLAIMS * 10 jobs: fill enough for the drain after it.
        probe = PROBE_CLAIMS * 10 if self.info.get("claimprobe") else 0
        self.fill(max(n, 1000) + probe)
        if self.info.get("claimprobe"):
            self.claim_probe("W5 claim ms history")
        d = self.drain(1, n, "w5h")
        self.metrics["W5 drain/s history"].append(d["rate"])
        self.log(f"W5 with {self.args.history} finished rows: {d['rate']:.0f} jobs/s")
        self.latency("W5h")

    def claim_probe(self, key: str) -> None:
        """Median time of one claim (up to 10 jobs) through the system's own queue API."""
        r = self.role("claimprobe", str(PROBE_CLAIMS), timeout=300)
        value = statistics.median(r["claims_ms"])
        self.metrics[key].append(value)
        self.log(f"{key}: {value:.2f} ms")

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    # ---- the whole system ------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        errors: list[str] = []
        try:
            self.info = run_role(self.python, self.module, self.env, "info", timeout=120)
        except AdapterError as exc:
            return {"store": self.store.kind, "errors": [str(exc)], "metrics": {}}
        steps = [("W1", self.w1), ("W1b", self.w1b), ("W2", self.w2), ("W6", self.w6), ("W4", self.w4), ("W3", self.w3),
                 ("W7", self.w7)]  # fmt: skip
        for rep in range(self.args.repeat):
            for key, step in steps:
                if key not in self.args.workloads:
                    continue
                try:
                    step()
                except AdapterError as exc:
                    errors.append(f"run {rep + 1} {key}: {exc}")
                    self.log(f"{key} FAILED: {exc}")
        if "W5" in self.args.workloads:
            for _ in range(self.args.backlog_repeat):
                try:
                    self.w5()
                except AdapterError as exc:
                    errors.append(f"W5: {exc}")
                    self.log(f"W5 FAILED: {exc}")
        try:
            self.store.cleanup()
        except Exception as exc:  # cleanup problems must not hide results
            errors.append(f"cleanup: {exc}")
        return {
            "store": self.store.kind, "info": self.info, "notes": self.notes, "errors": errors,
            "jobs": self.args.jobs, "metrics": with_ratios({k: summarize(v) for k, v in self.metrics.items()}),
        }  # fmt: skip


RATIOS = (
    ("W6 drain/s", "W2 drain/s"),
    ("W5 drain/s backlog", "W2 drain/s"),
    ("W5 drain/s history", "W2 drain/s"),
    ("W5h p50 ms", "W3 p50 ms"),
    ("W5 claim ms backlog", "W5 claim ms empty"),
    ("W5 claim ms history", "W5 claim ms empty"),
    ("W7 2 proc/s", "W7 1 proc/s"),
)
"""W5, W6 and W7 figures and the figures they are compared with (the plain empty queue; W7:
one process)."""


def with_ratios(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` (summarized) with each W5/W6 figure divided by its plain empty-queue median."""
    out = {k: v for k, v in metrics.items() if not k.endswith(" / empty")}
    for key, ref in RATIOS:
        if key in out and ref in out:
            out[f"{key} / empty"] = summarize([out[key]["median"] / out[ref]["median"]])
    return out


def summarize(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def venv_python(name: str, overrides: dict[str, str]) -> str:
    venv = overrides.get(name) or str(BENCH / ".venvs" / name)
    return str(Path(venv) / "bin" / "python")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: ~10 s, tiny counts, bananas-redis and -sqlite; prints one line unless it fails",
    )
    p.add_argument("--verbose", action="store_true", help="with --quick: print the progress and the table too")
    p.add_argument("--systems", help=f"comma-separated, default all: {','.join(SYSTEMS)}")
    p.add_argument("--workloads", help=f"comma-separated, default all: {','.join(WORKLOADS)}")
    p.add_argument("--jobs", type=int, help="jobs per W1/W1b/W2/W4 run (default 20000)")
    p.add_argument("--repeat", type=int, help="runs of each workload (default 3)")
    p.add_argument("--latency-jobs", type=int, help="W3 jobs in sequence (default 200)")
    p.add_argument("--backlog", type=int, help="W5 waiting jobs (default 1000000)")
    p.add_argument("--history", type=int, help="W5 finished rows on PostgreSQL (default = --backlog)")
    p.add_argument("--backlog-repeat", type=int, default=1, help="runs of W5 (default 1: it is long)")
    p.add_argument("--drain-limit", type=float, default=300.0, help="seconds before a drain is cut short (default 300)")
    p.add_argument(
        "--update",
        metavar="RESULTS.json",
        help="rerun --systems/--workloads and merge them into this earlier run's results (and README)",
    )
    p.add_argument("--fill-budget", type=float, help="W5: stop filling the backlog after this many seconds")
    p.add_argument("--jobs-sql", type=int, help="jobs per run for PostgreSQL/SQLite systems (default --jobs)")
    p.add_argument("--batch", type=int, default=1000, help="jobs per bulk call (default 1000)")
    p.add_argument("--concurrency", type=int, default=10, help="per worker process, where the system has the knob")
    p.add_argument("--scale", default="1,2,4", help="W4 worker process counts (default 1,2,4)")
    p.add_argument("--cpu-jobs", type=int, default=1000, help="W7 CPU-bound jobs per run (default 1000)")
    p.add_argument("--cpu-ms", type=float, default=5.0, help="W7: compute per job in milliseconds (default 5)")
    p.add_argument("--cpu-scale", default="1,2", help="W7 worker process counts (default 1,2)")
    p.add_argument("--venv", action="append", default=[], metavar="NAME=PATH", help="use another venv for NAME")
    p.add_argument("--out", help="results JSON (default bench/results/<UTC time>.json)")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite the table in bench/README.md")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--profile", metavar="DIR", help="sample every worker with py-spy (collapsed stacks in DIR)")
    p.add_argument(
        "--syscalls", metavar="DIR", help="count every worker's system calls and their wall time with strace (in DIR)"
    )
    args = p.parse_args(argv)
    quick = args.quick
    args.systems = args.systems.split(",") if args.systems else (
        ["bananas-redis", "bananas-sqlite"] if quick else list(SYSTEMS))  # fmt: skip
    args.workloads = args.workloads.split(",") if args.workloads else (
        ["W1", "W1b", "W2", "W3"] if quick else list(WORKLOADS))  # fmt: skip
    unknown = [s for s in args.systems if s not in SYSTEMS] + [w for w in args.workloads if w not in WORKLOADS]
    if unknown:
        p.error(f"unknown system/workload {unknown}; systems: {list(SYSTEMS)}, workloads: {list(WORKLOADS)}")
    args.jobs = args.jobs or (100 if quick else 20000)
    args.repeat = args.repeat or (1 if quick else 3)
    args.latency_jobs = args.latency_jobs or (10 if quick else 200)
    args.backlog = args.backlog or (1000 if quick else 1_000_000)
    args.history = args.backlog if args.history is None else args.history
    args.scale = [int(k) for k in args.scale.split(",")]
    args.cpu_scale = [int(k) for k in args.cpu_scale.split(",")]
    args.cpu_rounds = calibrate(args.cpu_ms) if "W7" in args.workloads else 0
    args.venvs = dict(v.split("=", 1) for v in args.venv)
    if quick:
        args.no_readme = True
    return args


def merge_rerun(earlier: dict[str, Any], measured: dict[str, Any], workloads: list[str]) -> dict[str, Any]:
    """``earlier`` results of a system with the metrics of ``measured`` (a rerun of ``workloads``)
    put in their place; the system's notes say what was rerun, when, and on which commit."""
    merged = dict(earlier)
    merged["metrics"] = with_ratios({**earlier.get("metrics", {}), **measured.get("metrics", {})})
    kept = [e for e in earlier.get("errors", []) if not any(w in e for w in workloads)]
    merged["errors"] = kept + measured.get("errors", [])
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    commit = report.machine_commit()
    note = f"{', '.join(workloads)} measured again {when}Z (commit {commit}) and merged into this run"
    kept_notes = [n for n in earlier.get("notes", []) if not any(w.lower() in n.lower() for w in workloads)]
    merged["notes"] = [*kept_notes, *measured.get("notes", []), note]
    return merged


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.quick or args.verbose:
        return run(args)
    # A smoke run says one line when it passes; its progress, table and errors only when it fails.
    started = time.monotonic()
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            code = run(args)
    except BaseException:
        print(captured.getvalue(), end="", flush=True)
        raise
    if code:
        print(captured.getvalue(), end="", flush=True)
        print(f"bench: FAILED ({', '.join(args.systems)})", flush=True)
    else:
        print(f"bench: ok ({', '.join(args.systems)}; {time.monotonic() - started:.0f} s)", flush=True)
    return code


def run(args: argparse.Namespace) -> int:
    """The whole run: every selected system and workload, the results file, table and plot."""
    scratch = claim_scratch()  # noqa: F841 -- held until the run ends
    if args.profile:
        WorkerGroup.profile_dir = Path(args.profile).resolve()
    if args.syscalls:
        WorkerGroup.syscalls_dir = Path(args.syscalls).resolve()
    kinds = {SYSTEMS[s][2] for s in args.systems}
    print(
        f"bench: systems {args.systems}, workloads {args.workloads}, {args.jobs} jobs x {args.repeat} runs", flush=True
    )
    started = time.time()
    servers = Servers(need_redis="redis" in kinds, need_postgres="postgres" in kinds)
    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": report.machine(servers),
        "config": {k: getattr(args, k) for k in CONFIG_KEYS},
        "systems": {},
    }  # fmt: skip
    if args.update:  # measure some systems/workloads again, into an earlier run's results
        results = json.loads(Path(args.update).read_text())
        args.out = args.out or args.update
    out = Path(args.out) if args.out else BENCH / "results" / time.strftime("%Y%m%dT%H%M%SZ.json", time.gmtime(started))
    out.parent.mkdir(parents=True, exist_ok=True)
    failed = False
    try:
        for name in args.systems:
            python = venv_python(SYSTEMS[name][0], args.venvs)
            if not Path(python).exists():
                results["systems"][name] = {
                    "store": SYSTEMS[name][2],
                    "errors": [f"no venv ({python}): run bench/setup"],
                    "metrics": {},
                }
                failed = True
                continue
            print(f"bench: {name}", flush=True)
            try:
                measured = SystemBench(name, python, servers, args).run()
            except Exception:
                measured = {"store": SYSTEMS[name][2], "errors": [traceback.format_exc()], "metrics": {}}
            earlier = results["systems"].get(name) if args.update else None
            results["systems"][name] = merge_rerun(earlier, measured, args.workloads) if earlier else measured
            if results["systems"][name]["errors"]:
                failed = True
            results["seconds"] = time.time() - started
            out.write_text(json.dumps(results, indent=1))
            if not args.no_readme:  # a run cut short still leaves its table
                report.write_readme(BENCH / "README.md", report.markdown(results))
    finally:
        servers.stop()
    if not args.quick and not args.out and not args.update:  # a run sent elsewhere is not "the latest full run"
        (BENCH / "results" / "latest.json").write_text(json.dumps(results, indent=1))
    table = report.markdown(results)
    print(table)
    if not args.no_readme:
        report.write_readme(BENCH / "README.md", table)
    if not args.no_plot:
        report.plot(results, BENCH / "results" / ("smoke.png" if args.quick else "bench.png"))
    print(f"bench: results in {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out} "
          f"({time.time() - started:.0f} s)", flush=True)  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

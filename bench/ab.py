"""A/B runs: the same workloads on several Bananas versions, interleaved, medians side by side.

    bench/.venvs/driver/bin/python bench/ab.py --config before=c39006c --config after=HEAD \
        --systems bananas-redis,bananas-pg --workloads W2,W3 --rounds 3

Each ``--config NAME=REV[+EXTRA][,VAR=VALUE...]`` is a git revision (built once into a worktree
and a venv under ``--cache``, editable installs of the three packages; ``+observability``
installs bananas-core with that extra) or ``.`` for this checkout
with its ``.venv``; the variables are set for that configuration's runs (for example
``BANANAS_LOG_LEVEL=WARNING``). Rounds run every configuration in turn, so a drift of the
machine hits them all alike; the table gives each metric's median over the rounds and its
change against the first configuration. Run it on a quiet machine: differences under the
run-to-run spread (the min-max it prints) are noise.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
METRICS = ("W2 drain/s", "W2 worker CPU s", "W3 p50 ms", "W3 p99 ms", "W6 drain/s", "W7 1 proc/s", "W7 2 proc/s")
PACKAGES = ("bananas_core", "bananas_redis[hiredis]", "bananas_sql[postgres]")


def venv_for(spec: str, cache: Path) -> Path:
    """The venv of ``spec``, a revision (``.``: this checkout's .venv) with optional
    ``+EXTRA`` of bananas-core (``HEAD+observability``), built on first use."""
    if spec == ".":
        return ROOT / ".venv"
    rev, _, core_extra = spec.partition("+")
    sha = subprocess.run(["git", "rev-parse", rev], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    sha = sha.strip()[:12]
    tree, venv = cache / f"tree-{sha}", cache / (f"venv-{sha}-{core_extra}" if core_extra else f"venv-{sha}")
    if not (venv / "ok").exists():
        if not tree.exists():
            subprocess.run(["git", "worktree", "add", "--detach", str(tree), sha], cwd=ROOT, check=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        packages = [f"bananas_core[{core_extra}]" if core_extra and p == "bananas_core" else p for p in PACKAGES]
        editable = [arg for pkg in packages for arg in ("-e", str(tree / pkg.split("[")[0]) + _extra(pkg))]
        pip = [str(venv / "bin" / "pip"), "install", "-q", *editable, "redis[hiredis]", "psycopg[binary]"]
        subprocess.run([*pip, "psycopg-pool", "uvloop"], check=True)  # uvloop: for BANANAS_LOOP=uvloop
        (venv / "ok").write_text(sha)
    return venv


def _extra(pkg: str) -> str:
    return pkg[pkg.index("[") :] if "[" in pkg else ""


def parse_config(text: str) -> tuple[str, str, dict[str, str]]:
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise SystemExit(f"ab: --config must look like NAME=REV[+EXTRA][,VAR=VALUE...], got {text!r}")
    rev, *pairs = rest.split(",")
    env = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
    return name, rev, env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", required=True, help="NAME=REV[,VAR=VALUE...] (twice or more)")
    parser.add_argument("--systems", default="bananas-redis,bananas-pg,bananas-sqlite")
    parser.add_argument("--workloads", default="W2,W3")
    parser.add_argument("--jobs", type=int, default=10000)
    parser.add_argument("--latency-jobs", type=int, default=200, help="W3 pickups per round (more: a steadier p99)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "bananas-ab")
    args = parser.parse_args()
    configs = [parse_config(c) for c in args.config]
    args.cache.mkdir(parents=True, exist_ok=True)
    venvs = {name: venv_for(rev, args.cache) for name, rev, _ in configs}
    runs: dict[tuple[str, str, str], list[float]] = {}
    for round_no in range(1, args.rounds + 1):
        for name, _rev, env in configs:
            out = args.cache / f"{name}-{round_no}.json"
            cmd = [sys.executable, str(BENCH / "run.py"), "--systems", args.systems, "--workloads", args.workloads,
                   "--jobs", str(args.jobs), "--latency-jobs", str(args.latency_jobs), "--repeat", "1",
                   "--no-readme", "--no-plot", "--venv", f"bananas={venvs[name]}", "--out", str(out)]  # fmt: skip
            print(f"ab: round {round_no}, {name}", flush=True)
            subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
            for system, data in json.loads(out.read_text())["systems"].items():
                for metric, values in data.get("metrics", {}).items():
                    if metric in METRICS:
                        runs.setdefault((system, metric, name), []).extend(values["runs"])
    names = [name for name, _, _ in configs]
    print("\n| system | metric | " + " | ".join(names) + " |")
    print("| --- | --- |" + " --- |" * len(names))
    for system in args.systems.split(","):
        for metric in METRICS:
            cells, base = [], None
            for name in names:
                values = runs.get((system, metric, name))
                if not values:
                    cells.append("n/a")
                    continue
                median = statistics.median(values)
                base = median if base is None else base
                change = "" if median is base else f" ({(median / base - 1) * 100:+.1f}%)"
                cells.append(f"{median:,.2f} [{min(values):,.2f}-{max(values):,.2f}]{change}")
            if any(cell != "n/a" for cell in cells):
                print(f"| {system} | {metric} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

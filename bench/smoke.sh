#!/usr/bin/env bash
# CI smoke run of the benchmark harness (about 10 s): tiny job counts, Bananas on Redis and
# SQLite, every workload but the long ones (W4, W5), through the same code as the full run.
# Uses the repository's .venv (scripts/bootstrap) for the driver and for Bananas, so it needs
# neither bench/setup nor the network. Exits non-zero if any adapter or workload fails.
# Extra arguments go to bench/run.py (e.g. --systems bananas-redis,bananas-pg).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${BENCH_PYTHON:-$(pwd)/.venv/bin/python}
out=$(mktemp -d)/bench-smoke.json
"$PY" bench/run.py --quick --no-plot --venv "bananas=$(dirname "$(dirname "$PY")")" --out "$out" "$@"
# the run must have measured something for every system it was asked about
"$PY" - "$out" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))
bad = [name for name, s in results["systems"].items() if s["errors"] or not s["metrics"]]
if bad:
    sys.exit(f"bench smoke: no complete result for {bad}")
print(f"bench smoke: ok ({', '.join(results['systems'])})")
PY

#!/usr/bin/env bash
# CI smoke run of the benchmark harness (about 10 s): tiny job counts, Bananas on Redis and
# SQLite, every workload but the long ones (W4, W5), through the same code as the full run.
# Uses the repository's .venv (scripts/bootstrap) for the driver and for Bananas, so it needs
# neither bench/setup nor the network. Prints one line when it passes; when any adapter or
# workload fails, prints the whole run's output and exits non-zero.
# Extra arguments go to bench/run.py (e.g. --systems bananas-redis,bananas-pg).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${BENCH_PYTHON:-$(pwd)/.venv/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out=$tmp/bench-smoke.json
log=$tmp/bench-smoke.log
started=$SECONDS
if ! "$PY" bench/run.py --quick --verbose --no-plot --venv "bananas=$(dirname "$(dirname "$PY")")" --out "$out" "$@" \
  >"$log" 2>&1; then
  cat "$log"
  echo "bench smoke: FAILED (the run's output is above)"
  exit 1
fi
# the run must have measured something for every system it was asked about
if ! systems=$("$PY" - "$out" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))
bad = [name for name, s in results["systems"].items() if s["errors"] or not s["metrics"]]
if bad:
    sys.exit(f"bench smoke: no complete result for {bad}")
print(", ".join(results["systems"]))
PY
); then
  cat "$log"
  exit 1
fi
echo "bench smoke: ok ($systems; $((SECONDS - started)) s)"

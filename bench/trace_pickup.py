"""Where W3's pickup latency goes on Redis: every command between a submit and the handler's
start, with the time Redis received it (MONITOR), for the last of a few sequential jobs.

    bench/.venvs/driver/bin/python bench/trace_pickup.py [--system bananas-redis] [--jobs 20]

Starts its own redis-server and one worker of the system (as run.py does), runs the W3
latency role with --jobs jobs, and prints the command timeline of the last job (ms after
the submit's first command). MONITOR slows Redis down a little; read the gaps, not the total.
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.procs import WorkerGroup, run_role
from benchlib.stores import BENCH, Servers, Store
from run import SYSTEMS, venv_python

WARMUP = 5  # adapters.__main__.WARMUP_JOBS


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--system", default="bananas-redis")
    p.add_argument("--jobs", type=int, default=20)
    p.add_argument("--venv", action="append", default=[], metavar="NAME=PATH")
    args = p.parse_args()
    venv, module, kind = SYSTEMS[args.system]
    if kind != "redis":
        raise SystemExit("trace_pickup works on Redis systems only")
    python = venv_python(venv, dict(v.split("=", 1) for v in args.venv))
    servers = Servers(need_redis=True, need_postgres=False)
    try:
        store = Store(kind, args.system, servers)
        store.fresh()
        env = {"PYTHONPATH": str(BENCH), "PATH": "/usr/bin:/bin", **store.env()}
        events: list[dict[str, Any]] = []
        conn = store.redis()

        def monitor() -> None:
            with conn.monitor() as m:
                for event in m.listen():
                    events.append(event)
                    if "STOP-TRACE" in event.get("command", ""):
                        return

        thread = threading.Thread(target=monitor, daemon=True)
        thread.start()
        group = WorkerGroup(python, module, env, 1, 10, f"trace-{args.system}")
        try:
            r = run_role(python, module, env, "latency", str(args.jobs), timeout=120)
        finally:
            group.stop()
        store.redis().echo("STOP-TRACE")
        thread.join(10)
    finally:
        servers.stop()
    lat = r["latencies_ms"]
    print(f"{args.system}: pickup latencies (ms) of the {len(lat)} jobs: {', '.join(f'{x:.2f}' for x in lat)}")
    ends = [i for i, e in enumerate(events) if e.get("command", "").startswith("RPUSH bench:latency")]
    if len(ends) < 2:
        print("fewer than two latency records in the MONITOR stream")
        return
    window = range(ends[-2] + 1, ends[-1])
    # the submit of the last job: the first command carrying its payload {"i": last, "t": ...}
    last = len(lat) + WARMUP - 1
    mark = re.compile(r'"i\\?":\s*' + str(last) + r"\b")
    starts = [i for i in window if mark.search(events[i].get("command", ""))]
    if not starts:
        print("no submit with a submit time found in the MONITOR stream")
        return
    first = starts[0]
    t0 = events[first]["time"]
    print("\ncommands from the last submit to its handler's latency record (client, ms after submit):")
    for e in events[first:]:
        cmd = e.get("command", "")
        print(f"{(e['time'] - t0) * 1000:8.3f}  {e.get('client_address', '?')}:{e.get('client_port', '')}  {cmd[:140]}")
        if cmd.startswith("RPUSH bench:latency"):
            break


if __name__ == "__main__":
    main()

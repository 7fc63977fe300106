"""W7, CPU-bound jobs: how much ``--processes 2`` buys over one process for plain-``def``
handlers that only compute (a pure-Python loop of about 5 ms), on Redis.

    .venv/bin/python bench/cpu_processes.py                      # 2,000 jobs, 3 runs per process count
    .venv/bin/python bench/cpu_processes.py --jobs 500 --repeat 1 --processes 1,2,4

Starts its own ``redis-server`` on a free loopback port (``tests/servers.py``). For each
process count, in a fresh namespace: submit the jobs, start ``python -m bananas.worker
cpu_processes:registry --processes K --concurrency 10``, and time the drain from the first
job done to the last (interpreter start-up excluded), as W2/W4 of ``bench/run.py`` do. The
loop size is calibrated once in this process so that one job computes for ``--job-ms``.
Prints one JSON object: jobs/s per process count (median, min, max) and the speed-up of each
count over one process. Peers are not run by this script.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from adapters._common import burn, calibrate
from bananas import Job, Registry
from bananas.worker import JobContext

HERE = Path(__file__).resolve().parent
COUNTER = "bench:cpu:done"

registry = Registry()


@registry.handler("burn")
def burn_job(ctx: JobContext, job: Job) -> None:
    """Compute ``payload["rounds"]`` rounds, then count the job done in Redis."""
    burn(int(job.payload["rounds"]))
    _redis().incr(COUNTER)


_client: Any = None


def _redis() -> Any:
    global _client
    if _client is None:
        import redis

        _client = redis.Redis.from_url(os.environ["BENCH_CPU_REDIS_URL"])
    return _client


def drain(redis_url: str, processes: int, jobs: int, rounds: int, concurrency: int) -> float:
    """Jobs per second of ``processes`` worker processes draining ``jobs`` waiting jobs."""
    import redis
    from bananas import Client

    url = f"{redis_url}?namespace=cpu{uuid.uuid4().hex[:8]}"
    counter = redis.Redis.from_url(redis_url)
    counter.delete(COUNTER)
    with Client(url) as client:
        client.submit_many([{"name": "burn", "payload": {"rounds": rounds}} for _ in range(jobs)])
    argv = [sys.executable, "-m", "bananas.worker", "cpu_processes:registry", "--url", url,
            "--processes", str(processes), "--concurrency", str(concurrency), "--log-level", "WARNING"]  # fmt: skip
    env = {**os.environ, "BENCH_CPU_REDIS_URL": redis_url}
    worker = subprocess.Popen(argv, cwd=HERE, env=env)
    try:
        deadline = time.monotonic() + 120
        while int(counter.get(COUNTER) or 0) == 0:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did no job (exit code {worker.poll()})")
            time.sleep(0.002)
        first, started = int(counter.get(COUNTER) or 0), time.perf_counter()
        done = first
        while done < jobs:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited at {done}/{jobs} jobs")
            time.sleep(0.005)
            done = int(counter.get(COUNTER) or 0)
        return (done - first) / (time.perf_counter() - started)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        counter.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per drain (default 2000)")
    parser.add_argument("--repeat", type=int, default=3, help="drains per process count (default 3)")
    parser.add_argument("--processes", default="1,2", help="process counts (default 1,2)")
    parser.add_argument("--job-ms", type=float, default=5.0, help="computation per job in ms (default 5)")
    parser.add_argument("--concurrency", type=int, default=10, help="--concurrency of each worker process")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent / "tests"))
    from servers import RedisServer

    rounds = calibrate(args.job_ms)
    counts = [int(k) for k in args.processes.split(",")]
    server = RedisServer().start()
    try:
        rates: dict[int, list[float]] = {k: [] for k in counts}
        for _ in range(args.repeat):
            for k in counts:  # interleaved, so a noisy machine hits every count alike
                rates[k].append(drain(server.url, k, args.jobs, rounds, args.concurrency))
                print(f"--processes {k}: {rates[k][-1]:.0f} jobs/s", file=sys.stderr)
    finally:
        server.stop()
    medians = {k: statistics.median(v) for k, v in rates.items()}
    report = {
        "workload": "W7 CPU-bound plain def",
        "cpus": os.cpu_count(),
        "job_ms": args.job_ms,
        "rounds": rounds,
        "jobs": args.jobs,
        "jobs_per_s": {str(k): {"median": medians[k], "min": min(v), "max": max(v)} for k, v in rates.items()},
        "speedup_over_1": {str(k): medians[k] / medians[1] for k in counts} if 1 in counts else {},
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

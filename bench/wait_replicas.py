"""What ``wait_replicas=1`` costs a producer: single submits per second with and without it.

Starts a master and one replica (``redis-server`` from PATH) on free loopback ports, submits
``--jobs`` jobs one at a time through the synchronous :class:`bananas.Client`, and prints the
rate and the median/p99 latency per submit for ``wait_replicas=0`` and ``1``. Stops both
servers on exit. Usage: ``.venv/bin/python bench/wait_replicas.py [--jobs 5000]``
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

import redis
from bananas import Client


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(port: int, *extra: str) -> tuple[subprocess.Popen[bytes], str]:
    directory = tempfile.mkdtemp(prefix="bananas-bench-")
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH")
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", directory, *extra]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis(port=port).ping()
            return proc, directory
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def measure(url: str, jobs: int) -> tuple[float, float, float]:
    """Submits per second, median and p99 latency (ms) of ``jobs`` single submits."""
    with Client(url) as client:
        for i in range(200):  # warm up: connections, script load
            client.submit_job("bench", {"i": i})
        took = []
        start = time.perf_counter()
        for i in range(jobs):
            t = time.perf_counter()
            client.submit_job("bench", {"i": i})
            took.append(time.perf_counter() - t)
        rate = jobs / (time.perf_counter() - start)
    took.sort()
    return rate, statistics.median(took) * 1000, took[int(len(took) * 0.99)] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    jobs = parser.parse_args().jobs
    master_port, replica_port = _port(), _port()
    started = []
    try:
        started.append(_start(master_port))
        started.append(_start(replica_port, "--replicaof", "127.0.0.1", str(master_port)))
        while redis.Redis(port=replica_port).info("replication")["master_link_status"] != "up":
            time.sleep(0.05)
        for n in (0, 1, 0, 1):
            url = f"redis://127.0.0.1:{master_port}/0?namespace=bench{n}&wait_replicas={n}"
            rate, p50, p99 = measure(url, jobs)
            print(f"wait_replicas={n}: {rate:8.0f} submits/s  p50 {p50:.3f} ms  p99 {p99:.3f} ms", flush=True)
    finally:
        for proc, directory in started:
            proc.terminate()
            proc.wait(10)
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()

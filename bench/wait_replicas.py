"""What ``wait_replicas=1`` costs: producer submits, and a worker's claims and completions.

Starts a master and one replica (``redis-server`` from PATH) on free loopback ports. Producer:
submits ``--jobs`` jobs one at a time through the synchronous :class:`bananas.Client` and
prints the rate and the median/p99 latency per submit. Worker: claims those jobs (up to
``--concurrency`` per claim, as a worker with that many slots does) and completes each with
its result (the worker's one-call completion), the completions of a claim concurrently, so
they go out as one batch; prints jobs per second and the median/p99 time from a claim's
start to its last completion. Both for ``wait_replicas=0`` and ``1``, alternating in
``--rounds`` rounds. Stops both servers on exit. Usage:
``.venv/bin/python bench/wait_replicas.py [--jobs 5000] [--rounds 10] [--concurrency 8]``
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any

import bananas.plugins
import redis
from bananas import Client
from bananas.job import JobResult, JobStatus


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


class Samples:
    """One mode's timings, summed over its rounds."""

    def __init__(self) -> None:
        self.submits: list[float] = []  # seconds per submit
        self.claims: list[float] = []  # seconds per claim-and-complete round
        self.drained = 0
        self.drain_time = 0.0

    def report(self, label: str, concurrency: int) -> str:
        def ms(values: list[float], q: float) -> float:
            ordered = sorted(values)
            return ordered[min(len(ordered) - 1, int(len(ordered) * q))] * 1000

        return (
            f"{label} submit: {len(self.submits) / sum(self.submits):6.0f} jobs/s  "
            f"p50 {ms(self.submits, 0.5):.3f} ms  p99 {ms(self.submits, 0.99):.3f} ms\n"
            f"{label} claim+complete ({concurrency} per claim): {self.drained / self.drain_time:6.0f} jobs/s  "
            f"p50 {ms(self.claims, 0.5):.3f} ms  p99 {ms(self.claims, 0.99):.3f} ms per claim"
        )


def submit(client: Client, jobs: int, out: Samples) -> None:
    """``jobs`` single submits, each timed."""
    for i in range(jobs):
        t = time.perf_counter()
        client.submit_job("bench", {"i": i})
        out.submits.append(time.perf_counter() - t)


async def drain(queue: Any, concurrency: int, out: Samples) -> None:
    """Claim up to ``concurrency`` jobs at a time and complete each with its result (together,
    as a worker's completions of the same moment go out), until none is left; each round timed."""

    async def finish(job: Any) -> None:
        await queue.complete_and_store(job, JobResult(job_id=job.id, status=JobStatus.COMPLETED, result=None))

    start = time.perf_counter()
    while True:
        t = time.perf_counter()
        claimed = await queue.claim(["default"], limit=concurrency, lease=60)
        if not claimed:
            break
        await asyncio.gather(*(finish(job) for job in claimed))
        out.claims.append(time.perf_counter() - t)
        out.drained += len(claimed)
    out.drain_time += time.perf_counter() - start


async def run(master_port: int, jobs: int, rounds: int, concurrency: int) -> dict[int, Samples]:
    """``rounds`` rounds of ``jobs / rounds`` submits then a drain, alternating ``wait_replicas=0``
    and ``1`` round by round (so a noisy moment on a shared machine hits both alike)."""
    samples: dict[int, Samples] = {}
    clients: dict[int, Client] = {}
    backends: dict[int, Any] = {}
    try:
        for n in (0, 1):
            url = f"redis://127.0.0.1:{master_port}/0?namespace=bench{n}&wait_replicas={n}"
            samples[n], clients[n], backends[n] = Samples(), Client(url), bananas.plugins.connect(url)
            submit(clients[n], 200, Samples())  # warm up: connections, script load
            await drain(backends[n].queue, concurrency, Samples())
        for _ in range(rounds):
            for n in (0, 1):
                await asyncio.to_thread(submit, clients[n], jobs // rounds, samples[n])
                await drain(backends[n].queue, concurrency, samples[n])
    finally:
        for n in clients:
            clients[n].close()
            await backends[n].close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    options = parser.parse_args()
    master_port, replica_port = _port(), _port()
    started = []
    try:
        started.append(_start(master_port))
        started.append(_start(replica_port, "--replicaof", "127.0.0.1", str(master_port)))
        while redis.Redis(port=replica_port).info("replication")["master_link_status"] != "up":
            time.sleep(0.05)
        samples = asyncio.run(run(master_port, options.jobs, options.rounds, options.concurrency))
        for n, found in samples.items():
            print(found.report(f"wait_replicas={n}", options.concurrency), flush=True)
    finally:
        for proc, directory in started:
            proc.terminate()
            proc.wait(10)
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()

"""A minimal worker for the fault tests: claims, "runs" and settles jobs through the Queue API.

Usage: python burst_worker.py URL NAMESPACE LEASE_SECONDS
Jobs whose payload has ``"fail": true`` always fail; the others complete. Each run is
logged (RPUSH ``{ns}:test:ran``) so tests can see re-runs. Stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from datetime import UTC, datetime, timedelta

import bananas.plugins
from bananas.job import JobResult, JobStatus


async def main(url: str, namespace: str, lease: float) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    backend = bananas.plugins.connect(url, namespace=namespace, retry_for=60)
    queue, results = backend.queue, backend.results
    log_client = queue.conn.client  # type: ignore[attr-defined]
    while not stop.is_set():
        await queue.move_scheduled()
        await queue.reap_expired()
        jobs = await queue.claim(["default"], limit=8, lease=lease)
        if not jobs:
            await queue.wait_for_work(["default"], 0.2)
            continue
        for job in jobs:
            started = time.monotonic()
            await asyncio.sleep(0.003)
            await queue.conn.run(lambda j=job: log_client.rpush(f"{namespace}:test:ran", j.id))  # type: ignore[attr-defined]
            took = timedelta(seconds=time.monotonic() - started)
            now = datetime.now(UTC)
            if isinstance(job.payload, dict) and job.payload.get("fail"):
                if job.attempts + 1 >= job.max_retries:
                    await results.store(JobResult(job_id=job.id, status=JobStatus.FAILED, error="boom",
                                                  completed_at=now, duration=took))  # fmt: skip
                await queue.fail(job, "boom")
            else:
                await results.store(JobResult(job_id=job.id, status=JobStatus.COMPLETED, result=job.payload,
                                              completed_at=now, duration=took))  # fmt: skip
                await queue.complete(job)
    await backend.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))

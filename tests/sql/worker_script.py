"""A tiny worker for the multi-process tests, using the Queue API directly.

Usage: python worker_script.py URL NAMESPACE OUT_FILE [LEASE] [WORK_SECONDS]
Appends each claimed job id to OUT_FILE (before completing it) and exits once nothing is
ready, scheduled or in flight anywhere.
"""

from __future__ import annotations

import asyncio
import sys

from bananas.errors import BackendUnavailable, LeaseLost
from bananas.plugins import connect


async def main(url: str, namespace: str, out_path: str, lease: float, work_seconds: float) -> None:
    backend = connect(url, namespace=namespace, retry_seconds=60)
    queue = backend.queue
    with open(out_path, "a") as out:  # noqa: ASYNC230 (a test helper: small, flushed writes)
        while True:
            try:
                jobs = await queue.claim(["default"], limit=10, lease=lease)
                if not jobs:
                    await queue.reap_expired()
                    depths = await queue.depths()
                    if depths.total_ready == 0 and depths.processing == 0 and depths.scheduled == 0:
                        break
                    await queue.wait_for_work(["default"], 0.2)
                    continue
                for job in jobs:
                    out.write(job.id + "\n")
                    out.flush()
                    if work_seconds:
                        await asyncio.sleep(work_seconds)
                    try:
                        await queue.complete(job)
                    except LeaseLost:  # its lease ran out meanwhile: another worker runs it
                        print(f"worker: lost the lease of {job.id}; report discarded", file=sys.stderr)
            except BackendUnavailable as exc:
                print(f"worker: {exc}; carrying on", file=sys.stderr)
                await asyncio.sleep(0.5)
    await backend.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(
        main(args[0], args[1], args[2], float(args[3]) if len(args) > 3 else 30.0,
             float(args[4]) if len(args) > 4 else 0.0)
    )  # fmt: skip

"""A process that submits one unique key from several threads at once (see test_unique_race.py)."""

from __future__ import annotations

import threading
from typing import Any

from bananas import Client


def race(url: str, namespace: str, key: str, threads: int, start: Any) -> list[tuple[str, bool]]:
    """Submit ``key`` from ``threads`` threads once ``start`` (a multiprocessing Event) is set;
    every answer as ``(id, duplicate)``."""
    answers: list[tuple[str, bool]] = []
    lock = threading.Lock()
    with Client(url, namespace=namespace) as client:
        client.submit_job("warm-up")  # connected before the start, so the submits really race

        def one() -> None:
            start.wait(30)
            job_id = client.submit_job("charge", {"order": 7}, unique_key=key, unique_for=60)
            with lock:
                answers.append((str(job_id), job_id.duplicate))

        workers = [threading.Thread(target=one) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
    return answers

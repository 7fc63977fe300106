"""Completed and failed attempts per minute, sampled from what workers publish in their heartbeats.

Every worker announces how many attempts it completed and failed since it started
(:attr:`WorkerInfo.completed <bananas.protocols.WorkerInfo.completed>` and ``failed``), through the
worker registry every backend has, so this works on every backend. The dashboard remembers
each worker's last counts and adds up what grew between two samples. A worker seen for the
first time counts from then on, unless it started after the previous sample (then all of its
work is new); a worker that stops takes its last few seconds with it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from bananas.cli.output import stamp
from bananas.protocols import WorkerInfo
from bananas.timefmt import from_timestamp

__all__ = ["MINUTES", "Throughput"]

MINUTES = 15
"""How many minutes the overview shows."""


class Throughput:
    """Attempts completed and failed over the last :data:`MINUTES` minutes, from heartbeats."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}
        self._last_at: float | None = None
        self._events: deque[tuple[float, int, int]] = deque()  # (when, completed, failed) growth per sample
        self.reporting = 0
        """Live workers that publish their counts (older workers do not)."""

    def add(self, workers: Sequence[WorkerInfo], now: float | None = None) -> None:
        """Take one sample of the live ``workers``."""
        now = time.time() if now is None else now
        seen: dict[str, tuple[int, int]] = {}
        grew_completed = grew_failed = 0
        for worker in workers:
            if worker.completed is None or worker.failed is None:
                continue
            counts = (worker.completed, worker.failed)
            before = self._last.get(worker.id)
            if before is None:  # new to us: a baseline, unless it started since the previous sample
                started_since = self._last_at is not None and worker.started_at >= self._last_at
                before = (0, 0) if started_since else counts
            grew_completed += max(counts[0] - before[0], 0)
            grew_failed += max(counts[1] - before[1], 0)
            seen[worker.id] = counts
        self._last, self._last_at, self.reporting = seen, now, len(seen)
        if grew_completed or grew_failed:
            self._events.append((now, grew_completed, grew_failed))
        horizon = now - MINUTES * 60
        while self._events and self._events[0][0] <= horizon:
            self._events.popleft()

    def summary(self, now: float | None = None) -> dict[str, Any]:
        """Per minute (oldest first, the current minute last) and over the last 60 seconds."""
        now = time.time() if now is None else now
        current = int(now // 60)
        minutes = [[0, 0] for _ in range(MINUTES)]
        last_minute = [0, 0]
        for at, completed, failed in self._events:
            index = MINUTES - 1 - (current - int(at // 60))
            if 0 <= index < MINUTES:
                minutes[index][0] += completed
                minutes[index][1] += failed
            if at > now - 60:
                last_minute[0] += completed
                last_minute[1] += failed
        return {
            "reporting": self.reporting,
            "last_minute": {"completed": last_minute[0], "failed": last_minute[1]},
            "minutes": [
                {"minute": stamp(from_timestamp((current - MINUTES + 1 + i) * 60.0)), "completed": c, "failed": f}
                for i, (c, f) in enumerate(minutes)
            ],
        }

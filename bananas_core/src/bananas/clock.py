"""Clocks. Every time-dependent backend operation reads its backend's clock, never the
server's, so that tests (and the conformance suite's state machine) can move time by hand."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime

from bananas.timefmt import from_timestamp

__all__ = ["Clock", "ManualClock", "system_clock"]

Clock = Callable[[], float]
"""A callable returning the current time as Unix seconds (like :func:`time.time`)."""

system_clock: Clock = time.time


class ManualClock:
    """A clock that moves only when told to: ``clock.advance(5)``."""

    def __init__(self, start: float | datetime = 1_750_000_000.0) -> None:
        self._now = start.timestamp() if isinstance(start, datetime) else float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def now(self) -> datetime:
        """The current time as an aware UTC datetime."""
        return from_timestamp(self._now)

    def advance(self, seconds: float) -> float:
        """Move time forward by ``seconds`` (never backward) and return the new time."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, when: float | datetime) -> None:
        """Jump to ``when`` (may not be earlier than now)."""
        target = when.timestamp() if isinstance(when, datetime) else float(when)
        self.advance(target - self._now)

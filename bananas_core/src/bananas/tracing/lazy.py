"""The tracing observer as registered: it imports the OpenTelemetry API on its first use."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from bananas.job import Job
from bananas.observe import Attempt, Observer

__all__ = ["LazyTracing"]

log = logging.getLogger("bananas.tracing")


class LazyTracing(Observer):
    """Forwards to :class:`bananas.tracing.spans.TracingObserver`, imported when first needed;
    if that import fails (a broken OpenTelemetry install), says so once and traces nothing."""

    def __init__(self) -> None:
        self._real: Observer | None = None
        self._broken = False

    def _load(self) -> Observer | None:
        real = self._real
        if real is None and not self._broken:
            try:
                from bananas.tracing.spans import TracingObserver
            except ImportError as exc:
                self._broken = True
                log.warning("tracing is off: the OpenTelemetry API could not be imported (%s)", exc)
                return None
            real = self._real = TracingObserver()
        return real

    def submitting(self, jobs: Sequence[Job]) -> AbstractContextManager[Sequence[Job] | None] | None:
        real = self._load()
        return None if real is None else real.submitting(jobs)

    def firing(self, schedule_id: str, tick: datetime, jobs: Sequence[Job]) -> AbstractContextManager[Any] | None:
        real = self._load()
        return None if real is None else real.firing(schedule_id, tick, jobs)

    def attempt(self, attempt: Attempt) -> AbstractContextManager[Any] | None:
        real = self._load()
        return None if real is None else real.attempt(attempt)

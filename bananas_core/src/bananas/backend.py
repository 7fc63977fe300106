"""A connected backend: the queue, results, cron storage and worker registry behind one URL."""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs

from bananas.capabilities import Capability, require
from bananas.clock import Clock, system_clock
from bananas.errors import ConfigError
from bananas.protocols import Queue, ResultBackend, Scheduler, WorkerRegistry

__all__ = ["Backend", "BackendOptions", "redact_url"]


def _positive(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{attr.name} must be a number of seconds > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class BackendOptions:
    """Settings every backend honours. Backend-specific settings arrive in ``extra``
    (from the URL's query string and from keyword arguments to :func:`bananas.connect`)."""

    clock: Clock = system_clock
    result_success_ttl: float = attrs.field(default=3600.0, validator=_positive)
    result_failure_ttl: float = attrs.field(default=86400.0, validator=_positive)
    completed_job_ttl: float = attrs.field(default=86400.0, validator=_positive)
    failed_job_ttl: float = attrs.field(default=7 * 86400.0, validator=_positive)
    extra: Mapping[str, Any] = attrs.field(factory=dict)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs and error messages)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class Backend:
    """What :func:`bananas.connect` returns: the storage parts behind one URL.

    ``queue``, ``results`` and ``workers`` always exist; ``scheduler`` only when the
    backend declares :attr:`Capability.CRON`. Close it (or use ``async with``) when done.
    """

    def __init__(
        self,
        *,
        name: str,
        url: str,
        queue: Queue,
        results: ResultBackend,
        workers: WorkerRegistry,
        scheduler: Scheduler | None = None,
        capabilities: frozenset[Capability] = frozenset(),
        options: BackendOptions | None = None,
    ) -> None:
        self.name = name
        self.url = redact_url(url)
        self.queue = queue
        self.results = results
        self.workers = workers
        self._scheduler = scheduler
        self.capabilities = frozenset(capabilities)
        self.options = options or BackendOptions()

    @property
    def clock(self) -> Clock:
        """The clock every time-dependent operation of this backend reads."""
        return self.options.clock

    @property
    def scheduler(self) -> Scheduler:
        """Cron storage; raises :class:`~bananas.errors.CapabilityNotSupported` without ``CRON``."""
        self.require(Capability.CRON, "cron schedules")
        assert self._scheduler is not None, f"{self.name} declares 'cron' but gave no scheduler"
        return self._scheduler

    def supports(self, capability: Capability) -> bool:
        """True if the backend declares ``capability``."""
        return capability in self.capabilities

    def require(self, capability: Capability, operation: str) -> None:
        """Raise :class:`~bananas.errors.CapabilityNotSupported` unless ``capability`` is declared."""
        require(self.capabilities, capability, backend=self.name, operation=operation)

    async def close(self) -> None:
        """Close every part once (parts may be one object). Idempotent."""
        seen: set[int] = set()
        for part in (self.queue, self.results, self.workers, self._scheduler):
            if part is not None and id(part) not in seen:
                seen.add(id(part))
                await part.close()

    async def __aenter__(self) -> Backend:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<Backend {self.name} {self.url}>"

"""The handler registry: which function runs a job of which name, and the app's cron schedules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar, overload

from bananas.errors import ConfigError
from bananas.job import JSON, Job, JobPriority

if TYPE_CHECKING:
    from bananas.scheduler import Schedule
    from bananas.worker.context import JobContext

__all__ = ["Handler", "Registry"]

Handler: TypeAlias = Callable[["JobContext", Job], Awaitable[JSON] | JSON]
"""``handler(ctx, job)``: ``async def`` or plain ``def``, returning a JSON value (the job's
result) or ``None``. Raising marks the attempt failed."""

H = TypeVar("H", bound=Handler)


class Registry:
    """Handlers by job name, plus the cron schedules a worker of this app fires.

    >>> registry = Registry()
    >>> @registry.handler("send_email")
    ... async def send_email(ctx, job): ...
    """

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self.schedules: list[Schedule] = []

    def register(self, name: str, handler: Handler) -> None:
        """Run ``handler`` for jobs named ``name``.

        Raises :class:`ConfigError` for an empty name, a handler that is not callable, or a
        name that already has a different handler.
        """
        if not isinstance(name, str) or not name.strip():
            raise ConfigError("a handler needs a non-empty job name")
        if not callable(handler):
            raise ConfigError(f"the handler for {name!r} must be callable, got {type(handler).__name__}")
        existing = self._handlers.get(name)
        if existing is not None and existing is not handler:
            raise ConfigError(f"job name {name!r} already has a handler ({_describe(existing)})")
        self._handlers[name] = handler

    @overload
    def handler(self, name: H, /) -> H: ...

    @overload
    def handler(self, name: str | None = None, /) -> Callable[[H], H]: ...

    def handler(self, name: str | H | None = None, /) -> H | Callable[[H], H]:
        """Decorator registering a handler: ``@registry.handler("name")``, or bare
        ``@registry.handler`` to use the function's name."""
        if callable(name):
            func = name
            self.register(getattr(func, "__name__", ""), func)
            return func

        def decorate(func: H) -> H:
            self.register(name if isinstance(name, str) else getattr(func, "__name__", ""), func)
            return func

        return decorate

    def get(self, name: str) -> Handler | None:
        """The handler for ``name``, or ``None``."""
        return self._handlers.get(name)

    def count(self) -> int:
        """How many job names have a handler."""
        return len(self._handlers)

    def names(self) -> list[str]:
        """The registered job names, sorted."""
        return sorted(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._handlers))

    # -- cron schedules ------------------------------------------------------------------

    def add_schedule(self, schedule: Schedule) -> Schedule:
        """Add a cron schedule; raises :class:`ConfigError` if its id is already used."""
        if any(s.id == schedule.id for s in self.schedules):
            raise ConfigError(f"a schedule with id {schedule.id!r} already exists")
        self.schedules.append(schedule)
        return schedule

    def schedule(
        self,
        id: str,
        cron: str,
        job: str,
        payload: JSON = None,
        *,
        priority: JobPriority | str = JobPriority.NORMAL,
        timezone: str | None = None,
        enabled: bool = True,
        description: str = "",
        **extra: Any,
    ) -> Schedule:
        """Create a :class:`~bananas.scheduler.Schedule` (validated there) and add it.

        ``timezone`` ``None`` means the cron scheduler's location (UTC unless set).
        """
        from bananas.scheduler import Schedule  # the scheduler module is optional until used

        return self.add_schedule(
            Schedule(
                id=id,
                cron=cron,
                job=job,
                payload=payload,
                priority=priority,
                timezone=timezone,
                enabled=enabled,
                description=description,
                **extra,
            )
        )

    def __repr__(self) -> str:
        return f"<Registry {len(self)} handler(s), {len(self.schedules)} schedule(s)>"


def _describe(handler: Any) -> str:
    module = getattr(handler, "__module__", "?")
    return f"{module}.{getattr(handler, '__qualname__', repr(handler))}"

"""The ``bananas`` entry point of bananas-redis. Imports nothing heavy: redis loads in the factory."""

from __future__ import annotations

from bananas.backend import Backend, BackendOptions
from bananas.capabilities import Capability
from bananas.plugins import BackendSpec, hookimpl

_CAPABILITIES: frozenset[Capability] = frozenset(
    {
        Capability.CRON,
        Capability.DEAD_LETTER_ADMIN,
        Capability.JOB_NAME_FILTER,
        Capability.PUSH_WAKEUP,
        Capability.RESULT_PUSH,
        Capability.RESULT_TTL,
    }
)
SCHEMES = ("redis", "rediss", "redis+sentinel", "redis+cluster")


def _factory(url: str, options: BackendOptions) -> Backend:
    from bananas_redis.backend import connect_redis

    return connect_redis(url, options)


@hookimpl
def bananas_backends() -> list[BackendSpec]:
    """The Redis backend, for redis://, rediss://, redis+sentinel:// and redis+cluster:// URLs."""
    return [
        BackendSpec(
            name="redis",
            schemes=SCHEMES,
            factory=_factory,
            capabilities=_CAPABILITIES,  # type: ignore[arg-type]  # attrs converter typing
            description="Redis (wire-compatible with the original Bananas)",
        )
    ]

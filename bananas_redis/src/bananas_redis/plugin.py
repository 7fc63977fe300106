"""The ``bananas`` entry point of bananas-redis. Imports nothing heavy: redis loads in the factory."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs
from bananas.backend import Backend, BackendOptions, seconds_option
from bananas.capabilities import Capability
from bananas.plugins import BackendSpec, hookimpl

CAPABILITIES: frozenset[Capability] = frozenset(
    {
        Capability.CRON,
        Capability.DEAD_LETTER_ADMIN,
        Capability.JOB_NAME_FILTER,
        Capability.PUSH_WAKEUP,
        Capability.RESULT_PUSH,
        Capability.RESULT_TTL,
        Capability.HAND_OFF,
        Capability.COMPLETE_AND_STORE,
        Capability.UNIQUE_JOBS,
        Capability.WORKFLOWS,
        Capability.CHECKPOINTS,
        Capability.CANCEL,
        Capability.GROUPS,
    }
)
"""What the Redis backend offers: declared here once, for the spec and the Backend alike."""
SCHEMES = ("redis", "rediss", "redis+sentinel", "redis+cluster")
OPTIONS = ("namespace", "retry_for", "connect_timeout", "wait_replicas", "wait_timeout")
"""What the backend reads from ``BackendOptions.extra``: the key namespace, how long a lost
connection is retried (seconds, default 30), ``connect_timeout``, and how many replicas a
submit waits for (``wait_replicas``, default 0) and how long (``wait_timeout``, default 1 s)."""


def connect_timeout_of(options: BackendOptions) -> float | None:
    """The ``connect_timeout`` option in seconds (``None`` when not given); ``ConfigError`` if not > 0."""
    return seconds_option(options.extra, "connect_timeout")


def with_connect_timeout(url: str, options: BackendOptions) -> tuple[str, BackendOptions]:
    """``connect_timeout`` applied: the socket connect timeout in the URL (``socket_connect_timeout``,
    unless the URL sets it) and the retry budget (``retry_for``, unless given), so an
    unreachable server is reported after about ``connect_timeout`` seconds instead of 30."""
    timeout = connect_timeout_of(options)
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if timeout is None and not any(k == "connect_timeout" for k, _ in query):
        return url, options
    query = [(k, v) for k, v in query if k != "connect_timeout"]  # redis-py does not know it
    if timeout is not None:
        if not any(k == "socket_connect_timeout" for k, _ in query):
            query.append(("socket_connect_timeout", f"{timeout:g}"))
        if "retry_for" not in options.extra:
            options = attrs.evolve(options, extra={**options.extra, "retry_for": timeout})
    return urlunsplit(parts._replace(query=urlencode(query))), options


def _factory(url: str, options: BackendOptions) -> Backend:
    from bananas_redis.backend import connect_redis

    url, options = with_connect_timeout(url, options)
    return connect_redis(url, options)


@hookimpl
def bananas_backends() -> list[BackendSpec]:
    """The Redis backend, for redis://, rediss://, redis+sentinel:// and redis+cluster:// URLs."""
    return [
        BackendSpec(
            name="redis",
            schemes=SCHEMES,
            factory=_factory,
            capabilities=CAPABILITIES,
            description="Redis (wire-compatible with the original Bananas)",
            options=OPTIONS,
        )
    ]

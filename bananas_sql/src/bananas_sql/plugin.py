"""The ``bananas`` plugin of this distribution: PostgreSQL and SQLite backends.

Imports nothing heavy: SQLAlchemy and the drivers are loaded by the factories.
"""

from __future__ import annotations

import math
from urllib.parse import parse_qsl, urlencode, urlsplit

import attrs
from bananas.backend import Backend, BackendOptions, seconds_option
from bananas.capabilities import Capability
from bananas.plugins import BackendSpec, hookimpl

from bananas_sql.urls import unsplit

POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
SQLITE_SCHEMES = ("sqlite",)

_COMMON: frozenset[Capability] = frozenset(
    {
        Capability.CRON,
        Capability.DEAD_LETTER_ADMIN,
        Capability.JOB_NAME_FILTER,
        Capability.RESULT_TTL,
        Capability.COMPLETE_AND_STORE,
        Capability.UNIQUE_JOBS,
        Capability.WORKFLOWS,
        Capability.CHECKPOINTS,
        Capability.CANCEL,
        Capability.GROUPS,
    }
)
POSTGRES_CAPABILITIES: frozenset[Capability] = _COMMON | {
    Capability.PUSH_WAKEUP,
    Capability.RESULT_PUSH,
    Capability.TRANSACTIONAL_ENQUEUE,
    Capability.HAND_OFF,
}
SQLITE_CAPABILITIES: frozenset[Capability] = _COMMON

_SHARED_OPTIONS = ("namespace", "table_prefix", "schema", "retry_seconds")
POSTGRES_OPTIONS = (*_SHARED_OPTIONS, "pool_size", "pool_pre_ping", "claim_sync_commit", "connect_timeout")
"""What the PostgreSQL backend reads from ``BackendOptions.extra`` (other URL query
parameters, such as ``sslmode``, go to libpq). ``pool_pre_ping`` is still accepted and has
no effect: a statement on a lost connection is always run again on a fresh one."""
SQLITE_OPTIONS = (*_SHARED_OPTIONS, "busy_timeout", "poll_interval", "write_gap")
"""What the SQLite backend reads from ``BackendOptions.extra``."""


def with_connect_timeout(url: str, options: BackendOptions) -> tuple[str, BackendOptions]:
    """A ``connect_timeout`` keyword option applied to a PostgreSQL URL: libpq's own
    ``connect_timeout`` (whole seconds, unless the URL sets it) and the retry budget
    (``retry_seconds``, unless given), so an unreachable server is reported after about
    ``connect_timeout`` seconds instead of 15."""
    timeout = seconds_option(options.extra, "connect_timeout")
    if timeout is None:
        return url, options
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(k == "connect_timeout" for k, _ in query):
        query.append(("connect_timeout", str(max(1, math.ceil(timeout)))))
        url = unsplit(parts._replace(query=urlencode(query)))
    if "retry_seconds" not in options.extra:
        options = attrs.evolve(options, extra={**options.extra, "retry_seconds": timeout})
    return url, options


def _postgres(url: str, options: BackendOptions) -> Backend:
    from bananas_sql.pg import connect_postgres

    url, options = with_connect_timeout(url, options)
    return connect_postgres(url, options, POSTGRES_CAPABILITIES)


def _sqlite(url: str, options: BackendOptions) -> Backend:
    from bananas_sql.sqlite import connect_sqlite

    return connect_sqlite(url, options, SQLITE_CAPABILITIES)


async def _migrate(url: str, options: BackendOptions) -> str:
    from bananas_sql.migrate import upgrade_with_options

    return await upgrade_with_options(url, options)


@hookimpl
def bananas_backends() -> list[BackendSpec]:
    """PostgreSQL and SQLite, each with ``bananas db upgrade`` support."""
    return [
        BackendSpec(
            name="postgresql",
            schemes=POSTGRES_SCHEMES,
            factory=_postgres,
            capabilities=POSTGRES_CAPABILITIES,
            description="PostgreSQL: SKIP LOCKED claims, LISTEN/NOTIFY wake-ups, transactional enqueue",
            migrate=_migrate,
            options=POSTGRES_OPTIONS,
        ),
        BackendSpec(
            name="sqlite",
            schemes=SQLITE_SCHEMES,
            factory=_sqlite,
            capabilities=SQLITE_CAPABILITIES,
            description="SQLite: one file, no server (the embedded default)",
            migrate=_migrate,
            options=SQLITE_OPTIONS,
        ),
    ]

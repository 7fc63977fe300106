"""The ``bananas`` plugin of this distribution: PostgreSQL and SQLite backends.

Imports nothing heavy: SQLAlchemy and the drivers are loaded by the factories.
"""

from __future__ import annotations

from bananas.backend import Backend, BackendOptions
from bananas.capabilities import Capability
from bananas.plugins import BackendSpec, hookimpl

POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
SQLITE_SCHEMES = ("sqlite",)

_COMMON: frozenset[Capability] = frozenset(
    {Capability.CRON, Capability.DEAD_LETTER_ADMIN, Capability.JOB_NAME_FILTER, Capability.RESULT_TTL}
)
POSTGRES_CAPABILITIES: frozenset[Capability] = _COMMON | {
    Capability.PUSH_WAKEUP,
    Capability.RESULT_PUSH,
    Capability.TRANSACTIONAL_ENQUEUE,
}
SQLITE_CAPABILITIES: frozenset[Capability] = _COMMON


def _postgres(url: str, options: BackendOptions) -> Backend:
    from bananas_sql.postgres import connect_postgres

    return connect_postgres(url, options)


def _sqlite(url: str, options: BackendOptions) -> Backend:
    from bananas_sql.sqlite import connect_sqlite

    return connect_sqlite(url, options)


async def _migrate(url: str, options: BackendOptions) -> None:
    from bananas_sql.migrate import upgrade_with_options

    await upgrade_with_options(url, options)


@hookimpl
def bananas_backends() -> list[BackendSpec]:
    """PostgreSQL and SQLite, each with ``bananas db upgrade`` support."""
    return [
        BackendSpec(
            name="postgresql",
            schemes=POSTGRES_SCHEMES,
            factory=_postgres,
            capabilities=POSTGRES_CAPABILITIES,  # type: ignore[arg-type]  # attrs converter typing
            description="PostgreSQL: SKIP LOCKED claims, LISTEN/NOTIFY wake-ups, transactional enqueue",
            migrate=_migrate,
        ),
        BackendSpec(
            name="sqlite",
            schemes=SQLITE_SCHEMES,
            factory=_sqlite,
            capabilities=SQLITE_CAPABILITIES,  # type: ignore[arg-type]
            description="SQLite: one file, no server (the embedded default)",
            migrate=_migrate,
        ),
    ]

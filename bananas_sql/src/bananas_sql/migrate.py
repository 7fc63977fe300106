"""Create or upgrade the schema: ``bananas db upgrade --url ...`` and :func:`upgrade`.

The schema has a version (:data:`~bananas_sql.tables.SCHEMA_VERSION`), kept in the
``schema_version`` table. A new database is created at the current version in one go; an
older one is brought up by :data:`STEPS`, each numbered step applied in order in the same
transaction, and the version written once at the end. A step is any code (a change that is
not purely additive can be written: copy, rewrite, drop). To change the schema, bump
``SCHEMA_VERSION``, change :func:`~bananas_sql.schema.metadata` (what a new database gets)
and append the step that brings a database of the previous version to the same place.

Idempotent and safe to run from several processes at once (PostgreSQL serialises it with
an advisory lock, SQLite with ``BEGIN IMMEDIATE``). Never run implicitly by a backend.
SQLAlchemy is used here (and for the table definitions) only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import attrs
import sqlalchemy as sa
from bananas.backend import BackendOptions
from bananas.errors import SchemaError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bananas_sql.schema import HANDOFF_DATA_MAX, PG_GROUP_TRIGGERS, PG_TRIGGERS, metadata
from bananas_sql.tables import SCHEMA_VERSION, Names
from bananas_sql.urls import postgres_sqlalchemy_url, sqlite_sqlalchemy_url
from bananas_sql.workflow_schema import WORKFLOW_TABLES, workflow_expiry

STARTING_UP_WAIT = 30.0
"""How long an upgrade waits for a PostgreSQL server that is starting up."""


@attrs.frozen
class Step:
    """What brings a database from ``version - 1`` to ``version``: ``apply(connection, names,
    dialect)`` inside the upgrade's transaction."""

    version: int
    description: str
    apply: Callable[[sa.Connection, Names, str], None]


def _create_index(name: str) -> Callable[[sa.Connection, Names, str], None]:
    def apply(conn: sa.Connection, names: Names, dialect: str) -> None:
        md = metadata(names, dialect)
        for table in md.sorted_tables:
            for index in table.indexes:
                if index.name == names.prefix + name:
                    index.create(conn, checkfirst=True)

    return apply


def _create_table(name: str) -> Callable[[sa.Connection, Names, str], None]:
    def apply(conn: sa.Connection, names: Names, dialect: str) -> None:
        metadata(names, dialect).tables[(names.schema + "." if names.schema else "") + names.prefix + name].create(
            conn, checkfirst=True
        )

    return apply


def _handoff(conn: sa.Connection, names: Names, dialect: str) -> None:
    """PostgreSQL: the waiters table, and the triggers that hand new jobs to idle workers."""
    if dialect == "postgresql":
        for ddl in PG_TRIGGERS:
            conn.execute(sa.text(ddl.format(**names.as_mapping(), handoff_data_max=HANDOFF_DATA_MAX)))


def _lease_token(conn: sa.Connection, names: Names, dialect: str) -> None:
    """``jobs.lease_token``, the claim that holds a processing row (every settle is fenced
    with it). Rows claimed before the upgrade have none (NULL): they are reaped as usual
    when their lease runs out, and no settle of a fenced worker matches them. On PostgreSQL
    also the waiters' ``fenced`` flag and the triggers that hand over lease tokens."""
    columns = {c["name"] for c in sa.inspect(conn).get_columns(names.prefix + "jobs", schema=names.schema)}
    if "lease_token" not in columns:
        conn.execute(sa.text(f"ALTER TABLE {names.jobs} ADD COLUMN lease_token VARCHAR(64)"))
    _handoff(conn, names, dialect)


def _group_triggers(conn: sa.Connection, names: Names, dialect: str) -> None:
    if dialect == "postgresql":
        for ddl in PG_GROUP_TRIGGERS:
            conn.execute(sa.text(ddl.format(**names.as_mapping())))


def _groups(conn: sa.Connection, names: Names, dialect: str) -> None:
    """``jobs.group_name`` (NULL: the jobs submitted before have no group), the claim index
    rebuilt without grouped rows and ``jobs_grouped`` for them, the group tables, and on
    PostgreSQL the hand-off that leaves grouped jobs to claims and the trigger that announces
    a freed slot."""
    columns = {c["name"] for c in sa.inspect(conn).get_columns(names.prefix + "jobs", schema=names.schema)}
    if "group_name" not in columns:
        conn.execute(sa.text(f"ALTER TABLE {names.jobs} ADD COLUMN group_name VARCHAR(128)"))
    conn.execute(sa.text(f"DROP INDEX IF EXISTS {names.table('jobs_claim')}"))  # now without grouped rows
    for index in ("jobs_claim", "jobs_grouped"):
        _create_index(index)(conn, names, dialect)
    for table in ("group_limits", "group_state", "group_starts"):
        _create_table(table)(conn, names, dialect)
    _handoff(conn, names, dialect)
    _group_triggers(conn, names, dialect)


def _workflow_tables(conn: sa.Connection, names: Names, dialect: str) -> None:
    for name in WORKFLOW_TABLES:
        _create_table(name)(conn, names, dialect)


STEPS: tuple[Step, ...] = (
    Step(2, "the index jobs_due (scheduled jobs by due time)", _create_index("jobs_due")),
    Step(3, "the waiters table and the hand-off to idle workers (PostgreSQL)", _handoff),
    Step(4, "the column jobs.lease_token (fenced settles)", _lease_token),
    Step(5, "the unique_keys table (unique jobs)", _create_table("unique_keys")),
    Step(6, "the workflow tables (chains, groups and chords)", _workflow_tables),
    Step(7, "the checkpoints table (long jobs' progress)", _create_table("checkpoints")),
    Step(8, "the cancel_requests table (cancelling running jobs)", _create_table("cancel_requests")),
    Step(9, "workflows.open_steps and workflows.expires_at (finished workflows expire)", workflow_expiry),
    Step(10, "the column jobs.group_name and the group tables (groups with limits)", _groups),
)
"""The steps from version 1 (the first schema) to :data:`~bananas_sql.tables.SCHEMA_VERSION`."""


def _engine(url: str) -> AsyncEngine:
    if url.split("://", 1)[0].lower() != "sqlite":
        return create_async_engine(postgres_sqlalchemy_url(url), poolclass=sa.NullPool)
    engine = create_async_engine(sqlite_sqlalchemy_url(url), connect_args={"timeout": 30.0}, poolclass=sa.NullPool)

    @sa.event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves

    @sa.event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # one upgrade at a time

    return engine


def _current_version(conn: sa.Connection, names: Names) -> int | None:
    if not sa.inspect(conn).has_table(names.prefix + "schema_version", schema=names.schema):
        return None
    return conn.execute(sa.text(f"SELECT version FROM {names.version} WHERE id = 1")).scalar()


def _upgrade(conn: sa.Connection, names: Names) -> str:
    """Bring the schema of ``names`` to :data:`SCHEMA_VERSION`; what was done, in one line."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        if names.schema:
            conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {names.schema}"))
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": names.jobs})
    version = _current_version(conn, names)
    md = metadata(names, dialect)
    table = md.tables[(names.schema + "." if names.schema else "") + names.prefix + "schema_version"]
    if version is None:
        md.create_all(conn)
        _handoff(conn, names, dialect)
        _group_triggers(conn, names, dialect)
        conn.execute(table.insert().values(id=1, version=SCHEMA_VERSION))
        return f"created at version {SCHEMA_VERSION}"
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"the schema is at version {version}, newer than this bananas-sql ({SCHEMA_VERSION}); "
            "upgrade the bananas-sql package instead"
        )
    if version == SCHEMA_VERSION:
        return f"already at version {SCHEMA_VERSION}"
    done = []
    for step in STEPS:
        if step.version > version:
            step.apply(conn, names, dialect)
            done.append(f"applied {step.version - 1} -> {step.version}: {step.description}")
    conn.execute(table.update().where(table.c.id == 1).values(version=SCHEMA_VERSION))
    return "; ".join(done)


async def upgrade_with_options(url: str, options: BackendOptions) -> str:
    """Create or upgrade the schema of ``url`` for the namespace in ``options.extra``; what was
    done, in one line (``created at version 4``, ``applied 3 -> 4: ...``,
    ``already at version 4``)."""
    names = Names.from_extra(options.extra)
    engine = _engine(url)
    deadline = time.monotonic() + STARTING_UP_WAIT
    try:
        while True:
            try:
                async with engine.begin() as conn:
                    return await conn.run_sync(_upgrade, names)
            except sa.exc.OperationalError as exc:
                # SQLSTATE 57P03: a server starting up (or recovering) accepts connections but
                # refuses them for now; an upgrade run as it starts waits for it.
                if getattr(exc.orig, "sqlstate", None) != "57P03" or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.1)
    finally:
        await engine.dispose()


async def upgrade(url: str, **options: Any) -> str:
    """Create or upgrade the Bananas tables at ``url``; keyword arguments as for :func:`bananas.connect`
    (``namespace=``, ``table_prefix=``, ``schema=``). Idempotent. Returns what was done, in one line."""
    from urllib.parse import parse_qsl, urlsplit

    known = {f.name for f in attrs.fields(BackendOptions)} - {"extra"}
    extra: dict[str, Any] = dict(parse_qsl(urlsplit(url).query))
    extra.update({k: v for k, v in options.items() if k not in known})
    backend_options = BackendOptions(**{k: v for k, v in options.items() if k in known}, extra=extra)
    return await upgrade_with_options(url, backend_options)

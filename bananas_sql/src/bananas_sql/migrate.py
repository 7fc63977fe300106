"""Create or upgrade the schema: ``bananas db upgrade --url ...`` and :func:`upgrade`.

Idempotent and safe to run from several processes at once (PostgreSQL serialises it with
an advisory lock, SQLite with ``BEGIN IMMEDIATE``). Never run implicitly by a backend.
"""

from __future__ import annotations

from typing import Any

import attrs
import sqlalchemy as sa
from bananas.backend import BackendOptions
from bananas.errors import SchemaError
from sqlalchemy.ext.asyncio import AsyncConnection

from bananas_sql.database import Database
from bananas_sql.tables import SCHEMA_VERSION, Names, metadata

_PG_TRIGGERS = (
    """CREATE OR REPLACE FUNCTION {schema_prefix}{prefix}notify_work() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{work_channel}', '');
    RETURN NULL;
END $$""",
    "DROP TRIGGER IF EXISTS {prefix}jobs_notify ON {jobs}",
    # Fires for new ready jobs and for jobs made ready again (released, reaped, moved, requeued).
    "CREATE TRIGGER {prefix}jobs_notify AFTER INSERT OR UPDATE OF state ON {jobs} "
    "FOR EACH ROW WHEN (NEW.state = 'ready') EXECUTE FUNCTION {schema_prefix}{prefix}notify_work()",
    """CREATE OR REPLACE FUNCTION {schema_prefix}{prefix}notify_result() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{result_channel}', NEW.job_id);
    RETURN NULL;
END $$""",
    "DROP TRIGGER IF EXISTS {prefix}results_notify ON {results}",
    "CREATE TRIGGER {prefix}results_notify AFTER INSERT OR UPDATE ON {results} "
    "FOR EACH ROW EXECUTE FUNCTION {schema_prefix}{prefix}notify_result()",
)


def _database(url: str, options: BackendOptions) -> Database:
    scheme = url.split("://", 1)[0].lower()
    if scheme == "sqlite":
        from bananas_sql.sqlite import SqliteDatabase

        return SqliteDatabase(url, options)
    from bananas_sql.postgres import PostgresDatabase

    return PostgresDatabase(url, options)


async def _current_version(conn: AsyncConnection, names: Names) -> int | None:
    def has_table(sync_conn: sa.Connection) -> bool:
        return sa.inspect(sync_conn).has_table(names.prefix + "schema_version", schema=names.schema)

    if not await conn.run_sync(has_table):
        return None
    return (await conn.execute(sa.text(f"SELECT version FROM {names.version} WHERE id = 1"))).scalar()


def _create_missing_indexes(sync_conn: sa.Connection, md: sa.MetaData) -> None:
    for table in md.sorted_tables:
        for index in table.indexes:
            index.create(sync_conn, checkfirst=True)


async def _upgrade(conn: AsyncConnection, db: Database) -> None:
    names = db.names
    if db.dialect == "postgresql":
        if names.schema:
            await conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {names.schema}"))
        await conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": names.jobs})
    version = await _current_version(conn, names)
    if version is not None and version > SCHEMA_VERSION:
        raise SchemaError(
            f"the schema is at version {version}, newer than this bananas-sql ({SCHEMA_VERSION}); "
            "upgrade the bananas-sql package instead"
        )
    # Version 1 is the whole schema. Version 2 adds the index jobs_due. create_all makes
    # missing tables with their indexes; an index added to an existing table since is made here.
    md = metadata(names, db.dialect)
    await conn.run_sync(md.create_all)
    await conn.run_sync(_create_missing_indexes, md)
    if db.dialect == "postgresql":
        for ddl in _PG_TRIGGERS:
            await conn.execute(sa.text(ddl.format(**names.as_mapping())))
    table = md.tables[(names.schema + "." if names.schema else "") + names.prefix + "schema_version"]
    if version is None:
        await conn.execute(table.insert().values(id=1, version=SCHEMA_VERSION))
    else:
        await conn.execute(table.update().where(table.c.id == 1).values(version=SCHEMA_VERSION))


async def upgrade_with_options(url: str, options: BackendOptions) -> None:
    """Create or upgrade the schema of ``url`` for the namespace in ``options.extra``."""
    db = _database(url, options)
    try:
        async with db.engine.begin() as conn:
            await _upgrade(conn, db)
    finally:
        await db.close()


async def upgrade(url: str, **options: Any) -> None:
    """Create or upgrade the Bananas tables at ``url``; keyword arguments as for :func:`bananas.connect`
    (``namespace=``, ``table_prefix=``, ``schema=``). Idempotent."""
    from urllib.parse import parse_qsl, urlsplit

    known = {f.name for f in attrs.fields(BackendOptions)} - {"extra"}
    extra: dict[str, Any] = dict(parse_qsl(urlsplit(url).query))
    extra.update({k: v for k, v in options.items() if k not in known})
    await upgrade_with_options(url, BackendOptions(**{k: v for k, v in options.items() if k in known}, extra=extra))

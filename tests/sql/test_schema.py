"""Schema creation, versions and namespaces."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from bananas.errors import ConfigError, SchemaError
from bananas.job import Job
from bananas.plugins import connect, resolve
from bananas_sql.migrate import STEPS
from bananas_sql.tables import SCHEMA_VERSION
from bananas_sql.urls import postgres_sqlalchemy_url, sqlite_sqlalchemy_url
from sqlalchemy.ext.asyncio import create_async_engine

import bananas_sql

pytestmark = pytest.mark.anyio


def test_migration_steps_are_numbered_up_to_the_schema_version() -> None:
    assert [step.version for step in STEPS] == list(range(2, SCHEMA_VERSION + 1))
    assert all(step.description for step in STEPS)


async def test_missing_schema_names_the_command(db_url: str, namespace: str) -> None:
    backend = connect(db_url, namespace=namespace)
    try:
        with pytest.raises(SchemaError, match=rf"bananas db upgrade --url '.*[?&]namespace={namespace}'"):
            await backend.queue.enqueue(Job.create("x"))
    finally:
        await backend.close()


async def test_upgrade_is_idempotent_and_via_backend_spec(db_url: str, namespace: str) -> None:
    assert await bananas_sql.upgrade(db_url, namespace=namespace) == f"created at version {SCHEMA_VERSION}"
    assert await bananas_sql.upgrade(db_url, namespace=namespace) == f"already at version {SCHEMA_VERSION}"
    spec = resolve(db_url)
    assert spec.migrate is not None
    from bananas.backend import BackendOptions

    done = await spec.migrate(db_url, BackendOptions(extra={"namespace": namespace}))
    assert done == f"already at version {SCHEMA_VERSION}"
    async with connect(db_url, namespace=namespace) as backend:
        await backend.queue.enqueue(Job.create("x"))
        assert (await backend.queue.depths()).total_ready == 1


async def test_outdated_and_newer_schema_versions(db_url: str, namespace: str) -> None:
    await bananas_sql.upgrade(db_url, namespace=namespace)
    sa_url = sqlite_sqlalchemy_url(db_url) if db_url.startswith("sqlite") else postgres_sqlalchemy_url(db_url)
    engine = create_async_engine(sa_url)
    try:
        for version, message in ((0, "upgrade them with: bananas db upgrade"), (99, "upgrade the bananas-sql package")):
            async with engine.begin() as conn:
                await conn.execute(sa.text(f"UPDATE {namespace}_schema_version SET version = {version}"))
            async with connect(db_url, namespace=namespace) as backend:
                with pytest.raises(SchemaError, match=message):
                    await backend.queue.depths()
    finally:
        await engine.dispose()


async def test_namespaces_are_isolated(db_url: str, namespace: str) -> None:
    other = namespace + "_b"
    for ns in (namespace, other):
        await bananas_sql.upgrade(db_url, namespace=ns)
    async with connect(db_url, namespace=namespace) as a, connect(db_url, namespace=other) as b:
        await a.queue.enqueue(Job.create("only-in-a"))
        assert await b.queue.claim(["default"]) == []
        assert [j.name for j in await a.queue.claim(["default"])] == ["only-in-a"]


async def test_postgres_schema_option(postgres_url: str, namespace: str) -> None:
    await bananas_sql.upgrade(postgres_url, schema=namespace)
    async with connect(postgres_url + f"?schema={namespace}") as backend:
        await backend.queue.enqueue(Job.create("in-schema"))
        [job] = await backend.queue.claim(["default"])
        assert job.name == "in-schema"


def test_bad_options_are_clear() -> None:
    with pytest.raises(ConfigError, match="table_prefix"):
        connect("sqlite:///x.db", table_prefix="Bad-Prefix")
    with pytest.raises(ConfigError, match="needs a file"):
        connect("sqlite://")
    with pytest.raises(ConfigError, match="busy_timeout"):
        connect("sqlite:///x.db?busy_timeout=nope")


def test_url_translation() -> None:
    assert postgres_sqlalchemy_url("postgres://u@h:5/db?namespace=x&sslmode=disable") == (
        "postgresql+psycopg://u@h:5/db?sslmode=disable"
    )
    assert sqlite_sqlalchemy_url("sqlite:///rel.db") == "sqlite+aiosqlite:///rel.db"
    assert sqlite_sqlalchemy_url("sqlite:////abs/p.db?namespace=x") == "sqlite+aiosqlite:////abs/p.db"

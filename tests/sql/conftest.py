"""Fixtures for the SQL backend tests: a fresh namespace per test on the session's real
PostgreSQL server, and a fresh SQLite file per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.plugins import connect
from bananas_sql.urls import postgres_sqlalchemy_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import bananas_sql


@pytest.fixture
def namespace() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    return f"sqlite:///{tmp_path}/jobs.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: object) -> str:
    """A URL of each SQL backend (the PostgreSQL one is the shared test server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/jobs.db"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def backend(db_url: str, namespace: str, clock: ManualClock) -> AsyncIterator[Backend]:
    """A connected backend with its schema created, on a clock that moves only when told."""
    await bananas_sql.upgrade(db_url, namespace=namespace)
    b = connect(db_url, namespace=namespace, clock=clock)
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def pg(postgres_url: str, namespace: str, clock: ManualClock) -> AsyncIterator[Backend]:
    """A PostgreSQL backend on a fresh namespace (schema created), reading the test's clock."""
    await bananas_sql.upgrade(postgres_url, namespace=namespace)
    async with connect(postgres_url, namespace=namespace, clock=clock) as backend:
        yield backend


@pytest.fixture
async def engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    """A SQLAlchemy engine on the session's PostgreSQL, for looking at rows directly."""
    engine = create_async_engine(postgres_sqlalchemy_url(postgres_url))
    yield engine
    await engine.dispose()

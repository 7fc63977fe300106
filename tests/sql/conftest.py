"""Fixtures for the SQL backend tests: a fresh namespace per test on the session's real
PostgreSQL server, and a fresh SQLite file per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.plugins import connect

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

"""Shared fixtures: real servers on free loopback ports, started once per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from servers import postgres_server, redis_server


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio."""
    return "asyncio"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a throwaway redis-server (or ``BANANAS_TEST_REDIS_URL``) shared by the session."""
    with redis_server() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a throwaway PostgreSQL cluster (or ``BANANAS_TEST_POSTGRES_URL``) shared by the session."""
    with postgres_server() as url:
        yield url

"""Fixtures for the Redis backend tests: a fresh namespace per test on the session server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import bananas.plugins
import pytest
import redis.asyncio as aioredis
from bananas.backend import Backend
from bananas.clock import ManualClock


@pytest.fixture
def namespace() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def backend(redis_url: str, namespace: str, clock: ManualClock) -> AsyncIterator[Backend]:
    b = bananas.plugins.connect(redis_url, namespace=namespace, clock=clock)
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client that speaks raw commands, decoding replies to str."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()

"""Fixtures for the Redis backend tests: a fresh namespace per test on the session server, and a
master with its replica for the tests of ``wait_replicas``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import bananas.plugins
import pytest
import redis
import redis.asyncio as aioredis
from bananas.backend import Backend
from bananas.clock import ManualClock
from ha_servers import pause, wait_until
from servers import RedisServer


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


@pytest.fixture
def replicated() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A master and its synced replica (ours), the replica resumed if a test paused it."""
    master = RedisServer(extra=["--repl-diskless-sync-delay", "0"])
    replica = RedisServer(extra=["--replicaof", "127.0.0.1", str(master.port)])
    try:
        master.start()
        replica.start()
        with redis.Redis(port=replica.port, decode_responses=True) as r:
            wait_until(lambda: r.info("replication")["master_link_status"] == "up", 20, "the replica to sync")
        yield master, replica
    finally:
        pause(replica, False)
        replica.stop()
        master.stop()

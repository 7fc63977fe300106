"""Failover plumbing without a failover: the log line when no sentinel names a master, and
the wait_replicas option (validated; on a lone master, whose WAIT no replica answers, the
submit raises instead of returning; with a replica that stops answering, a worker's settle
waits for it and a claim it has not confirmed is not run)."""

from __future__ import annotations

import asyncio
import logging

import bananas.plugins
import pytest
import redis
from bananas.errors import BackendUnavailable, ConfigError
from bananas.job import Job
from bananas_redis.connection import describe, is_failover_reply
from ha_servers import pause, wait_until
from redis.exceptions import ReadOnlyError, ResponseError
from servers import RedisServer, free_port

pytestmark = [pytest.mark.anyio]


async def test_no_master_log_line_names_redacted_url_and_error(caplog: pytest.LogCaptureFixture) -> None:
    ports = [free_port(), free_port()]  # nothing listens: no sentinel can name a master
    url = f"redis+sentinel://:s3cret@127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/mymaster/0"
    caplog.set_level(logging.WARNING, logger="bananas.redis")
    async with bananas.plugins.connect(url, retry_for=0.3) as backend:
        with pytest.raises(BackendUnavailable) as raised:
            await backend.queue.ping()
    lines = [r.getMessage() for r in caplog.records if r.name == "bananas.redis"]
    assert lines, "no retry was logged"
    for text in [*lines, str(raised.value)]:
        assert "\n" not in text
        assert "<redis" not in text and "object at 0x" not in text and "Redis(" not in text, text
        assert "s3cret" not in text and ":***@127.0.0.1" in text, text
        assert "No master found for 'mymaster'" in text, text
        assert f"127.0.0.1:{ports[0]}" in text.split("during")[0] or "gave up" in text, text


def test_describe_replaces_nested_client_reprs() -> None:
    text = (
        "No master found for 'm' : <redis.asyncio.client.Redis(<redis.asyncio.connection.ConnectionPool("
        "<redis.asyncio.connection.Connection(host=10.0.0.1,port=26379,db=0)>)>)> - ConnectionError('refused')"
    )
    assert describe(ResponseError(text)) == "No master found for 'm' : 10.0.0.1:26379 - ConnectionError('refused')"
    assert describe(ResponseError("a\nb")) == "a b"


def test_failover_replies() -> None:
    assert is_failover_reply(ReadOnlyError("You can't write against a read only replica."))
    assert is_failover_reply(ResponseError("NOREPLICAS Not enough good replicas to write. script: x"))
    assert is_failover_reply(ResponseError("UNBLOCKED force unblock from blocking operation"))
    assert not is_failover_reply(ResponseError("ERR wrong number of arguments"))
    assert not is_failover_reply(ConnectionError("READONLY"))


@pytest.mark.parametrize("value", ["-1", "1.5", "x", True, -2])
def test_wait_replicas_must_be_a_whole_number(redis_url: str, value: object) -> None:
    with pytest.raises(ConfigError, match="wait_replicas"):
        bananas.plugins.connect(redis_url, wait_replicas=value)


def test_wait_timeout_must_be_positive(redis_url: str) -> None:
    with pytest.raises(ConfigError, match="wait_timeout"):
        bananas.plugins.connect(redis_url + "?wait_replicas=1&wait_timeout=0")


async def test_wait_replicas_unconfirmed_raises(redis_url: str, namespace: str) -> None:
    url = f"{redis_url}?wait_replicas=1&wait_timeout=0.05"
    async with bananas.plugins.connect(url, namespace=namespace) as backend:
        job = Job.create("t", {})
        with pytest.raises(BackendUnavailable, match="0 of 1 replicas"):
            await backend.queue.enqueue(job)
        with pytest.raises(BackendUnavailable, match="0 of 1 replicas"):
            backend.queue.enqueue_many_blocking([Job.create("t", {})])  # type: ignore[attr-defined]
    async with bananas.plugins.connect(redis_url, namespace=namespace, wait_replicas=0) as backend:
        await backend.queue.enqueue(Job.create("t", {}))  # 0: no WAIT at all


async def test_settle_returns_only_once_the_replica_has_it(
    replicated: tuple[RedisServer, RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    master, replica = replicated
    url = f"{master.url}?wait_replicas=1"
    caplog.set_level(logging.WARNING, logger="bananas.redis")
    async with (
        bananas.plugins.connect(url, namespace="settle", wait_timeout=5) as steady,  # while the replica answers
        bananas.plugins.connect(url, namespace="settle", wait_timeout=0.1, retry_for=1) as brief,
        bananas.plugins.connect(url, namespace="settle", wait_timeout=0.1, retry_for=60) as patient,
    ):
        await steady.queue.enqueue_many([Job.create("t", {}, job_id="a"), Job.create("t", {}, job_id="b")])
        first, second = await steady.queue.claim(["default"], limit=2)
        pause(replica, True)
        with pytest.raises(BackendUnavailable, match="0 of 1 replicas"):
            await brief.queue.complete(first)  # written on the master, never confirmed: the worker must not move on
        assert (await brief.queue.get_job("a")).status.value == "completed"
        done = asyncio.ensure_future(patient.queue.complete(second))
        await asyncio.sleep(0.5)
        assert not done.done(), "the completion returned while the replica was paused"
        pause(replica, False)
        assert (await done).status.value == "completed"  # retried until the replica confirmed it
    with redis.Redis(port=replica.port) as r:
        wait_until(lambda: r.get("settle:job:b"), 5, "the completion on the replica")
        assert b'"completed"' in r.get("settle:job:b")
    assert any("replicas confirmed it" in r.getMessage() for r in caplog.records)


async def test_a_claim_the_replica_did_not_confirm_is_not_run(
    replicated: tuple[RedisServer, RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    master, replica = replicated
    url = f"{master.url}?wait_replicas=1"
    caplog.set_level(logging.WARNING, logger="bananas.redis")
    async with (
        bananas.plugins.connect(url, namespace="claim", wait_timeout=5) as steady,  # while the replica answers
        bananas.plugins.connect(url, namespace="claim", wait_timeout=0.1, retry_for=1) as brief,
    ):
        queue = steady.queue
        await queue.enqueue(Job.create("t", {}, job_id="a"))
        pause(replica, True)
        try:
            assert await brief.queue.claim(["default"], lease=0.2) == []  # a failover could undo it: not run
        finally:
            pause(replica, False)
        assert (await queue.get_job("a")).status.value == "processing"  # left to its lease
        assert any("claimed job(s) not run" in r.getMessage() for r in caplog.records)
        await asyncio.sleep(0.3)
        assert await queue.reap_expired() == 1
        (job,) = await queue.claim(["default"])
        assert job.id == "a"

"""The synchronous Client on Redis submits from the caller's thread (BlockingEnqueue), with
the same rules as the asyncio path: validation first, duplicates refused, retries on
connection loss, its own connections after fork."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta

import pytest
import redis
from bananas import Client, DuplicateJob, Job, JobStatus, PayloadError
from bananas.errors import BackendUnavailable
from bananas_redis.connection import make_client
from servers import RedisServer


@pytest.fixture
def client(redis_url: str, namespace: str) -> Iterator[Client]:
    with Client(redis_url, namespace=namespace) as c:
        yield c


def _record_threads(c: Client) -> list[int]:
    """Wrap the queue's blocking enqueue so the test sees which threads called it."""
    queue = c.backend.queue
    seen: list[int] = []
    blocking = queue.enqueue_many_blocking  # type: ignore[attr-defined]

    def recording(jobs: Sequence[Job]) -> None:
        seen.append(threading.get_ident())
        blocking(jobs)

    queue.enqueue_many_blocking = recording  # type: ignore[attr-defined]
    return seen


def test_submits_go_from_the_calling_thread(client: Client, namespace: str, redis_url: str) -> None:
    first = client.submit_job("warm-up")  # the first call prepares the client on its loop
    seen = _record_threads(client)
    job_id = client.submit_job("x", {"a": 1}, "low", "desc")
    routed = client.submit_job_with_route("x", None, "high", "gpu")
    later = client.submit_job_scheduled("x", None, "normal", timedelta(hours=1))
    many = client.submit_many([{"name": "y"}, {"name": "z"}, {"name": "w"}], batch_size=2)
    assert seen == [threading.get_ident()] * 5  # three single submits, two batches
    assert client.get_job(job_id).payload == {"a": 1}
    assert client.get_job(routed).routing_key == "gpu"
    assert client.get_job(later).status is JobStatus.SCHEDULED
    assert [client.get_job(i).name for i in many] == ["y", "z", "w"]
    raw = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert raw.lrange(f"{namespace}:queue:normal", 0, -1)[::-1] == [first, *many]  # LPUSH, claimed from the right
        assert raw.lrange(f"{namespace}:route:gpu:queue:high", 0, -1) == [routed]
    finally:
        raw.close()


def test_bad_and_duplicate_submits_write_nothing(client: Client) -> None:
    client.submit_job("warm-up")
    taken = client.submit_job("x", "first", job_id="fixed-id")
    with pytest.raises(DuplicateJob, match="fixed-id"):
        client.submit_job("x", "second", job_id="fixed-id")
    with pytest.raises(PayloadError):
        client.submit_job("x", {1})
    with pytest.raises(DuplicateJob):
        client.submit_many([{"name": "a", "job_id": "fresh"}, {"name": "b", "job_id": "fixed-id"}])
    assert client.get_job(taken).payload == "first"
    depths = client._call(lambda c: c.backend.queue.depths())
    assert depths.total_ready == 2


def test_many_threads_share_one_client(client: Client) -> None:
    client.submit_job("warm-up")
    ids: list[str] = []
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            ids.extend(client.submit_job("t", {"n": n}) for n in range(25))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(ids)) == 200
    assert client._call(lambda c: c.backend.queue.depths()).total_ready == 201
    own = client.backend.queue.conn._idle  # type: ignore[attr-defined]
    assert 1 <= len(own) <= 8  # at most one connection per thread that called at once


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_the_child_of_a_fork_uses_its_own_connections(client: Client) -> None:
    parent_job = client.submit_job("before-fork")
    client.submit_job("twice, so the blocking path is in use")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if client.get_job(client.submit_job("in-child")).name == "in-child" else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert client.get_job(parent_job).name == "before-fork"
    assert client.get_job(client.submit_job("after")).name == "after"


def test_a_submit_waits_out_a_redis_restart() -> None:
    server = RedisServer().start()
    try:
        with Client(server.url, retry_for=20) as c:
            c.submit_job("warm-up")
            server.kill()
            restart = threading.Timer(0.5, server.start)
            restart.start()
            try:
                job_id = c.submit_job("during-outage")
            finally:
                restart.join()
            assert c.get_job(job_id).name == "during-outage"
    finally:
        server.stop()


def test_a_submit_gives_up_after_retry_for() -> None:
    server = RedisServer().start()
    try:
        with Client(server.url, retry_for=0.3) as c:
            c.submit_job("warm-up")
            server.kill()
            started = time.monotonic()
            with pytest.raises(BackendUnavailable, match="unreachable"):
                c.submit_job("lost")
            assert time.monotonic() - started < 10
    finally:
        server.stop()


def test_blocking_clients_follow_the_url() -> None:
    from redis.connection import SSLConnection

    tls = make_client("rediss://:pw@example.com:6380/1?namespace=x", blocking=True)
    assert isinstance(tls, redis.Redis) and tls.connection_pool.connection_class is SSLConnection
    assert tls.connection_pool.connection_kwargs["db"] == 1
    sentinel = make_client("redis+sentinel://:s3cret@h1:26380,h2/mymaster/2", blocking=True)
    pool = sentinel.connection_pool
    assert pool.service_name == "mymaster" and pool.connection_kwargs["db"] == 2
    assert [c.connection_pool.connection_kwargs["port"] for c in pool.sentinel_manager.sentinels] == [26380, 26379]


def test_a_flushed_script_cache_is_loaded_again(client: Client, redis_url: str) -> None:
    client.submit_job("warm-up")
    raw = redis.Redis.from_url(redis_url)
    try:
        raw.script_flush()
    finally:
        raw.close()
    job_id = client.submit_job("after-flush")  # EVALSHA says NOSCRIPT: loaded, then run
    assert client.get_job(job_id).name == "after-flush"


def test_an_error_reply_or_a_killed_connection_leaves_the_next_call_working(client: Client, redis_url: str) -> None:
    client.submit_job("warm-up")
    conn = client.backend.queue.conn  # type: ignore[attr-defined]
    with pytest.raises(redis.ResponseError, match="unknown command"):
        conn.blocking_command("NO-SUCH-COMMAND")
    assert conn.blocking_command("PING") in (b"PONG", True)
    raw = redis.Redis.from_url(redis_url)
    try:
        own_id = conn.blocking_command("CLIENT", "ID")  # the connection the next submit uses
        assert raw.client_kill_filter(_id=own_id) == 1
        job_id = client.submit_job("after-kill")  # the dead socket fails, the retry reconnects
        assert client.get_job(job_id).name == "after-kill"
        assert client._call(lambda c: c.backend.queue.depths()).total_ready == 2  # enqueued once
    finally:
        raw.close()

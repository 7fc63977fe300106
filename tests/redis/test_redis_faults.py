"""Fault injection: killed workers, a Redis restart (AOF), dropped connections. No job is lost."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import bananas.plugins
import pytest
import redis.asyncio as aioredis
from bananas.job import Job
from servers import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

WORKER = Path(__file__).with_name("burst_worker.py")


class Workers:
    def __init__(self, url: str, namespace: str, lease: float) -> None:
        self.args = [sys.executable, str(WORKER), url, namespace, str(lease)]
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, n: int = 1) -> None:
        for _ in range(n):
            self.procs.append(subprocess.Popen(self.args, env={**os.environ, "PYTHONUNBUFFERED": "1"}))

    def kill_one(self) -> None:
        proc = next(p for p in self.procs if p.poll() is None)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> list[int | None]:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = []
        for p in self.procs:
            try:
                codes.append(p.wait(15))
            except subprocess.TimeoutExpired:
                p.kill()
                codes.append(p.wait(5))
        return codes


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer(appendonly=True).start()
    try:
        yield server
    finally:
        server.stop()


def jobs(n: int, failing: int = 0) -> list[Job]:
    made = [Job.create("t", {"i": i}, max_retries=2) for i in range(n)]
    made += [Job.create("t", {"fail": True}, max_retries=2) for _ in range(failing)]
    return made


async def wait_settled(raw: aioredis.Redis, ns: str, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            busy = sum(
                [await raw.llen(f"{ns}:queue:{p}") for p in ("high", "normal", "low")]
                + [await raw.llen(f"{ns}:queue:processing"), await raw.zcard(f"{ns}:queue:scheduled")]
            )
            if busy == 0:
                return
        except (aioredis.ConnectionError, OSError):
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("jobs did not settle in time")


async def check_each_job_settled_once(raw: aioredis.Redis, ns: str, made: list[Job]) -> None:
    dead = await raw.lrange(f"{ns}:queue:dead", 0, -1)
    assert len(dead) == len(set(dead)), "a job is in the dead letter queue twice"
    assert await raw.llen(f"{ns}:queue:processing") == 0
    assert await raw.zcard(f"{ns}:queue:leases") == 0
    for job in made:
        stored = json.loads(await raw.get(f"{ns}:job:{job.id}"))
        result = await raw.hgetall(f"{ns}:result:{job.id}")
        if isinstance(job.payload, dict) and job.payload.get("fail"):
            assert stored["status"] == "failed" and job.id in dead, job.id
            assert result["status"] == "failed"
        else:
            assert stored["status"] == "completed" and job.id not in dead, (job.id, stored)
            assert result["status"] == "completed"
    ran = await raw.lrange(f"{ns}:test:ran", 0, -1)
    assert set(ran) == {j.id for j in made}


async def test_kill_9_worker_mid_burst(redis_url: str) -> None:
    ns = f"f{uuid.uuid4().hex[:10]}"
    made = jobs(300, failing=5)
    workers = Workers(redis_url, ns, lease=1.0)
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    async with bananas.plugins.connect(redis_url, namespace=ns) as b:
        await b.queue.enqueue_many(made)
    try:
        workers.start(3)
        while await raw.llen(f"{ns}:test:ran") < 60:  # noqa: ASYNC110 (polling Redis)
            await asyncio.sleep(0.01)
        workers.kill_one()
        workers.kill_one()
        workers.start(1)
        await wait_settled(raw, ns, 60)
        assert workers.stop()[2:] == [0, 0]  # the survivor and the replacement stop cleanly
        await check_each_job_settled_once(raw, ns, made)
    finally:
        workers.stop()
        await raw.aclose()


async def test_redis_restart_mid_burst_with_aof(own_redis: RedisServer) -> None:
    ns = "bananas"
    url = own_redis.url
    workers = Workers(url, ns, lease=1.0)
    raw = aioredis.Redis.from_url(url, decode_responses=True)
    made = jobs(200, failing=3)
    acknowledged: list[Job] = []
    try:
        workers.start(2)
        async with bananas.plugins.connect(url, namespace=ns, retry_for=30) as producer:
            for i, job in enumerate(made):
                if i == 100:
                    own_redis.restart()
                await producer.queue.enqueue(job)
                acknowledged.append(job)
        await wait_settled(raw, ns, 60)
        assert workers.stop() == [0, 0]  # no worker crashed
        await check_each_job_settled_once(raw, ns, acknowledged)
    finally:
        workers.stop()
        await raw.aclose()


async def test_dropped_connections_mid_burst(redis_url: str) -> None:
    ns = f"c{uuid.uuid4().hex[:10]}"
    made = jobs(300, failing=3)
    workers = Workers(redis_url, ns, lease=1.0)
    raw = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        workers.start(3)
        async with bananas.plugins.connect(redis_url, namespace=ns) as producer:
            for i, job in enumerate(made):
                await producer.queue.enqueue(job)
                if i % 30 == 0:
                    await raw.client_kill_filter(_type="normal", skipme=True)
                    await raw.client_kill_filter(_type="pubsub", skipme=True)
        await wait_settled(raw, ns, 60)
        assert workers.stop() == [0, 0, 0]
        await check_each_job_settled_once(raw, ns, made)
    finally:
        workers.stop()
        await raw.aclose()

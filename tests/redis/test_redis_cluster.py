"""Redis Cluster: three local nodes, a hash-tagged namespace, the whole backend in one slot."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import bananas.plugins
import pytest
from bananas.backend import Backend
from bananas.clock import Clock, ManualClock
from bananas.job import Job, JobResult, JobStatus
from bananas.protocols import WorkerInfo
from bananas.testing.plugin import BackendFactory
from bananas.testing.suite import BackendConformance
from servers import RedisServer, cluster_port

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    extra = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    nodes = [RedisServer(port=cluster_port(), extra=extra) for _ in range(3)]
    try:
        for node in nodes:
            node.start()
        addrs = [f"127.0.0.1:{n.port}" for n in nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addrs, "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        for node in nodes:
            cmd = ["redis-cli", "-p", str(node.port), "cluster", "info"]
            while "cluster_state:ok" not in subprocess.run(cmd, capture_output=True, text=True).stdout:
                assert time.monotonic() < deadline, "the test cluster did not become ready"
                time.sleep(0.1)
        yield "redis+cluster://" + ",".join(addrs)
    finally:
        for node in nodes:
            node.stop()


async def test_backend_on_cluster(cluster_url: str) -> None:
    clock = ManualClock()
    async with bananas.plugins.connect(cluster_url, namespace="{bananas}", clock=clock) as b:
        q = b.queue
        await q.ping()
        jobs = [Job.create("t", {"i": i}, now=clock.now()) for i in range(5)]
        jobs.append(Job.create("t", routing_key="gpu", priority="high", now=clock.now()))
        await q.enqueue_many(jobs)
        waiter = asyncio.create_task(b.results.wait(jobs[0].id, 10))
        claimed = await q.claim(["gpu", "default"], limit=3, lease=5)
        assert [j.id for j in claimed] == [jobs[5].id, jobs[0].id, jobs[1].id]
        await q.complete(claimed[1])
        await b.results.store(JobResult(job_id=jobs[0].id, status=JobStatus.COMPLETED, result="ok"))
        assert (await waiter).result == "ok"
        retried = await q.fail(claimed[2], "again")
        assert retried.status is JobStatus.PENDING
        clock.advance(6)
        assert await q.reap_expired() == 1
        assert await q.move_scheduled() == 1
        depths = await q.depths()
        assert depths.ready_for("default") == 4 and depths.ready_for("gpu") == 1 and depths.processing == 0

        woke = asyncio.create_task(q.wait_for_work(["default"], 10))
        await asyncio.sleep(0.2)
        await q.enqueue(Job.create("t", now=clock.now()))
        started = time.monotonic()
        await woke
        assert time.monotonic() - started < 5

        tick = clock.now()
        assert await b.scheduler.fire("c", tick, Job.create("cron", now=tick), tick + timedelta(minutes=1))
        assert [s.schedule_id for s in await b.scheduler.states()] == ["c"]
        info = WorkerInfo(id="w", host="h", pid=1, routing_keys=["default"], priorities=["high"], concurrency=1)
        await b.workers.heartbeat(info, 10)
        assert [w.id for w in await b.workers.workers()] == ["w"]


@pytest.mark.slow
class TestConformanceOnCluster(BackendConformance):
    """The whole conformance suite on the cluster, each test in its own hash-tagged namespace."""

    @pytest.fixture
    def bananas_backend_factory(self, cluster_url: str) -> BackendFactory:
        """A fresh hash-tagged namespace per backend; a namespace the suite names gets a hash tag
        around it, since on Cluster every key of a namespace must hash to one slot."""

        def factory(clock: Clock, /, **options: Any) -> Backend:
            namespace = options.pop("namespace", None)
            if namespace is None:
                namespace = "{t" + uuid.uuid4().hex + "}"
            elif "{" not in namespace:
                namespace = "{" + namespace + "}"
            return bananas.plugins.connect(cluster_url, clock=clock, namespace=namespace, **options)

        return factory

    def test_valid_namespace_forms_work(self) -> None:  # type: ignore[override]
        pytest.skip("the namespace rule is the core's, run on standalone Redis; Cluster namespaces need a hash tag")

    def test_invalid_namespace_is_refused(self) -> None:  # type: ignore[override]
        pytest.skip("the namespace rule is the core's, run on standalone Redis; Cluster namespaces need a hash tag")

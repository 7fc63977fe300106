"""memory:// beyond the shared contract: discovery, store sharing by name, threads and loops.

The contract itself is tested by the conformance suite (tests/conformance/test_memory.py).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any, TypeVar

import bananas
import pytest
from bananas import Capability, Job, JobNotFound, JobResult, JobStatus, ManualClock
from bananas.backends import memory
from bananas.errors import DuplicateJob, InvalidJob
from bananas.plugins import resolve

T = TypeVar("T")
pytestmark = pytest.mark.anyio


def fresh_url() -> str:
    return f"memory://{uuid.uuid4().hex}"


class LoopThread:
    """An event loop in a background thread, as the synchronous Client runs one."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def other_loop() -> Any:
    lt = LoopThread()
    yield lt
    lt.close()


def test_registered_through_entry_point() -> None:
    spec = resolve("memory://")
    assert spec.factory is memory.connect_memory
    assert spec.capabilities == frozenset(Capability) - {Capability.TRANSACTIONAL_ENQUEUE}
    backend = bananas.connect("memory://")
    assert backend.name == "memory" and backend.capabilities == spec.capabilities


async def test_same_name_shares_one_store() -> None:
    url = fresh_url()
    client, worker = bananas.connect(url), bananas.connect(url)
    job = Job.create("task", {"x": 1})
    await client.queue.enqueue(job)
    [claimed] = await worker.queue.claim(["default"])
    assert claimed.id == job.id
    await worker.results.store(JobResult(job_id=job.id, status=JobStatus.COMPLETED, result=2))
    result = await client.results.get(job.id)
    assert result is not None and result.result == 2


async def test_names_and_namespaces_are_isolated() -> None:
    url = fresh_url()
    job = Job.create("task")
    await bananas.connect(url).queue.enqueue(job)
    others = [bananas.connect(fresh_url()), bananas.connect(url, namespace="n2"), bananas.connect(url + "?namespace=a")]
    for other in others:
        with pytest.raises(JobNotFound):
            await other.queue.get_job(job.id)
    assert (await bananas.connect(url).queue.get_job(job.id)).id == job.id


async def test_returned_jobs_are_copies() -> None:
    backend = bananas.connect(fresh_url())
    job = Job.create("task", {"items": [1]})
    await backend.queue.enqueue(job)
    (await backend.queue.get_job(job.id)).payload["items"].append(2)
    assert (await backend.queue.get_job(job.id)).payload == {"items": [1]}


async def test_result_wait_woken_from_another_thread_and_loop(other_loop: LoopThread) -> None:
    url = fresh_url()
    waiter_side, storer_side = bananas.connect(url), bananas.connect(url)
    result = JobResult(job_id="j1", status=JobStatus.COMPLETED, result="hi")

    async def store_later() -> None:
        await asyncio.sleep(0.1)
        await storer_side.results.store(result)

    waiting = asyncio.ensure_future(waiter_side.results.wait("j1", timeout=10))
    await asyncio.sleep(0.02)
    await asyncio.to_thread(other_loop.run, store_later())
    assert (await waiting) == result


async def test_wait_for_work_woken_from_another_thread_and_loop(other_loop: LoopThread) -> None:
    url = fresh_url()
    worker, client = bananas.connect(url), bananas.connect(url)
    waiting = asyncio.ensure_future(worker.queue.wait_for_work(["default"], timeout=30))
    await asyncio.sleep(0.02)
    assert not waiting.done()
    await asyncio.to_thread(other_loop.run, client.queue.enqueue(Job.create("task")))
    await asyncio.wait_for(waiting, timeout=10)


def test_sync_client_thread_and_worker_loop_share_jobs(other_loop: LoopThread) -> None:
    url = fresh_url()
    job = Job.create("task", [1, 2])
    other_loop.run(bananas.connect(url).queue.enqueue(job))

    async def work() -> list[str]:
        return [j.id for j in await bananas.connect(url).queue.claim(["default"])]

    assert asyncio.run(work()) == [job.id]


async def test_wait_for_work_returns_at_once_when_work_is_ready() -> None:
    backend = bananas.connect(fresh_url())
    await backend.queue.enqueue(Job.create("task", routing_key="gpu"))
    await asyncio.wait_for(backend.queue.wait_for_work(["cpu", "gpu"], timeout=30), timeout=5)


async def test_ttls_follow_the_backend_clock() -> None:
    clock = ManualClock()
    backend = bananas.connect(fresh_url(), clock=clock, completed_job_ttl=100, result_success_ttl=50)
    job = Job.create("task")
    await backend.queue.enqueue(job)
    [claimed] = await backend.queue.claim(["default"])
    await backend.queue.complete(claimed)
    await backend.results.store(JobResult(job_id=job.id, status=JobStatus.COMPLETED))
    clock.advance(49)
    assert await backend.results.get(job.id) is not None
    clock.advance(2)
    assert await backend.results.get(job.id) is None
    assert (await backend.queue.get_job(job.id)).status is JobStatus.COMPLETED
    clock.advance(50)
    with pytest.raises(JobNotFound):
        await backend.queue.get_job(job.id)


async def test_dead_jobs_stay_until_purged() -> None:
    clock = ManualClock()
    backend = bananas.connect(fresh_url(), clock=clock, failed_job_ttl=10)
    job = Job.create("task", max_retries=0)
    await backend.queue.enqueue(job)
    [claimed] = await backend.queue.claim(["default"])
    await backend.queue.fail(claimed, "fatal")
    clock.advance(timedelta(days=30).total_seconds())
    assert [j.id for j in await backend.queue.dead_letters()] == [job.id]


async def test_scheduled_job_needs_a_time() -> None:
    backend = bananas.connect(fresh_url())
    with pytest.raises(InvalidJob, match="scheduled_for"):
        await backend.queue.enqueue(Job(name="task", status=JobStatus.SCHEDULED))


async def test_claim_rejects_a_single_string_of_keys() -> None:
    backend = bananas.connect(fresh_url())
    with pytest.raises(TypeError, match="sequence of routing keys"):
        await backend.queue.claim("default")  # type: ignore[arg-type]


async def test_cron_fire_with_existing_job_id_changes_nothing() -> None:
    backend = bananas.connect(fresh_url())
    job = Job.create("task")
    await backend.queue.enqueue(job)
    tick = bananas.ManualClock().now()
    with pytest.raises(DuplicateJob):
        await backend.scheduler.fire("s", tick, job, tick + timedelta(minutes=1))
    assert await backend.scheduler.state("s") is None
    assert await backend.scheduler.fire("s", tick, Job.create("task"), tick + timedelta(minutes=1))


async def test_without_declared_capabilities_operations_raise() -> None:
    store = memory.MemoryStore()
    backend = memory.memory_backend(store, bananas.BackendOptions(), capabilities=frozenset())
    with pytest.raises(bananas.CapabilityNotSupported, match="job_name_filter"):
        await backend.queue.claim(["default"], job_names={"a"})
    with pytest.raises(bananas.CapabilityNotSupported, match="dead_letter_admin"):
        await backend.queue.purge_dead()
    with pytest.raises(bananas.CapabilityNotSupported, match="cron"):
        _ = backend.scheduler


def test_claims_from_many_threads_never_double_claim() -> None:
    url = fresh_url()
    jobs = [Job.create("task", i) for i in range(300)]
    asyncio.run(bananas.connect(url).queue.enqueue_many(jobs))
    claimed: list[list[str]] = []

    def worker() -> None:
        async def loop() -> list[str]:
            backend, mine = bananas.connect(url), []
            while batch := await backend.queue.claim(["default"], limit=3):
                mine.extend(j.id for j in batch)
                await asyncio.sleep(0)
            return mine

        claimed.append(asyncio.run(loop()))

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    every = [job_id for ids in claimed for job_id in ids]
    assert len(claimed) == 6
    assert sorted(every) == sorted(j.id for j in jobs)

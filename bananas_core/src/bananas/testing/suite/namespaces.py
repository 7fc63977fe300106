"""Conformance tests: namespaces are isolated keyspaces, and every backend accepts the same names.

These tests call ``bananas_backend_factory(clock, namespace=NAME)``: a factory must let the
``namespace`` option override the fresh namespace it picks by default, and two calls with
the same ``namespace`` must reach the same storage (as two processes connecting to one URL
would). The names are made unique per test run, so tests may share one server.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.errors import ConfigError, JobNotFound
from bananas.job import JobPriority, JobStatus
from bananas.testing.plugin import BackendFactory
from bananas.testing.suite._helpers import new_job

__all__ = ["INVALID_NAMESPACES", "NamespaceTests", "look_alike_namespaces"]

INVALID_NAMESPACES = ("team a", "a*b", "x?", "", "n" * 65, "a[b]", "a:b", "tab\there", "nul\x00", "é")
"""Names every backend refuses with ConfigError (see :func:`bananas.backend.validate_namespace`)."""


def look_alike_namespaces() -> list[str]:
    """Four namespaces, unique to this call, differing only in punctuation or case."""
    tag = uuid.uuid4().hex[:12]
    return [f"team-a{tag}", f"team_a{tag}", f"Team.A{tag}", f"team.a{tag}"]


@asynccontextmanager
async def _backends(factory: BackendFactory, clock: ManualClock, names: Sequence[str]) -> AsyncIterator[list[Backend]]:
    async with AsyncExitStack() as stack:
        backends = []
        for name in names:
            backend = factory(clock, namespace=name)
            stack.push_async_callback(backend.close)
            backends.append(backend)
        yield backends


class NamespaceTests:
    """The ``namespace`` option: isolation, a shared store per name, and one validation rule."""

    async def test_look_alike_namespaces_are_isolated(
        self, bananas_backend_factory: BackendFactory, bananas_clock: ManualClock
    ) -> None:
        """Jobs of ``team-a`` are never claimed, counted or read through ``team_a``, ``Team.A``
        or ``team.a`` (and so on for every pair)."""
        names = look_alike_namespaces()
        async with _backends(bananas_backend_factory, bananas_clock, names) as backends:
            owned: list[set[str]] = []
            for i, backend in enumerate(backends):
                ready = [new_job(bananas_clock, payload=i) for _ in range(i + 1)]
                routed = new_job(bananas_clock, payload=i, routing_key="gpu", priority=JobPriority.HIGH)
                later = new_job(bananas_clock, payload=i, delay=3600)
                await backend.queue.enqueue_many([*ready, routed, later])
                owned.append({j.id for j in [*ready, routed]})
                await backend.queue.enqueue(new_job(bananas_clock, payload=i))  # one more, left ready below
            for i, (name, backend) in enumerate(zip(names, backends, strict=True)):
                depths = await backend.queue.depths()
                assert depths.ready_for("default") == i + 2, (name, depths)
                assert depths.ready_for("gpu") == 1, (name, depths)
                assert depths.scheduled == 1 and depths.processing == 0 and depths.dead == 0, (name, depths)
            for i, (name, backend) in enumerate(zip(names, backends, strict=True)):
                claimed = await backend.queue.claim(["gpu", "default"], limit=len(owned[i]))
                assert {j.id for j in claimed} == owned[i], f"{name} claimed another namespace's jobs"
                assert (await backend.queue.depths()).processing == len(owned[i]), name
            for i, backend in enumerate(backends):
                for j, other in enumerate(owned):
                    if j != i:
                        with pytest.raises(JobNotFound):
                            await backend.queue.get_job(next(iter(other)))
                left = await backend.queue.claim(["default"], limit=10)
                assert [job.payload for job in left] == [i], f"{names[i]} left {left}"

    async def test_look_alike_namespaces_keep_their_own_results(
        self, bananas_backend_factory: BackendFactory, bananas_clock: ManualClock
    ) -> None:
        """A result stored in one namespace is not readable through a look-alike one."""
        from bananas.testing.suite.results import success

        names = look_alike_namespaces()
        async with _backends(bananas_backend_factory, bananas_clock, names) as backends:
            for i, backend in enumerate(backends):
                await backend.results.store(success("same-id", i))
            for i, backend in enumerate(backends):
                result = await backend.results.get("same-id")
                assert result is not None and result.result == i, (names[i], result)
            await backends[0].results.delete("same-id")
            assert await backends[0].results.get("same-id") is None
            for name, backend in zip(names[1:], backends[1:], strict=True):
                assert await backend.results.get("same-id") is not None, f"deleting in {names[0]} deleted in {name}"

    async def test_same_namespace_shares_storage(
        self, bananas_backend_factory: BackendFactory, bananas_clock: ManualClock
    ) -> None:
        """Two backends opened on one namespace see the same jobs (so isolation above is real)."""
        name = look_alike_namespaces()[2]
        async with _backends(bananas_backend_factory, bananas_clock, [name, name]) as (first, second):
            job = new_job(bananas_clock)
            await first.queue.enqueue(job)
            assert (await second.queue.get_job(job.id)).status is JobStatus.PENDING
            assert (await second.queue.depths()).total_ready == 1
            assert [j.id for j in await second.queue.claim(["default"])] == [job.id]
            assert (await first.queue.depths()).processing == 1

    @pytest.mark.parametrize("name", ["{bananas%s}", "%s" + "n" * 52, "A-b_c.D%s", "%s{x}.y-z_"])
    async def test_valid_namespace_forms_work(
        self, bananas_backend_factory: BackendFactory, bananas_clock: ManualClock, name: str
    ) -> None:
        """Braces (Redis Cluster hash tags), 64 characters, mixed case and punctuation are accepted."""
        namespace = name % uuid.uuid4().hex[:12]
        assert len(namespace) <= 64
        async with _backends(bananas_backend_factory, bananas_clock, [namespace]) as (backend,):
            job = new_job(bananas_clock)
            await backend.queue.enqueue(job)
            assert [j.id for j in await backend.queue.claim(["default"])] == [job.id]

    @pytest.mark.parametrize("name", INVALID_NAMESPACES, ids=repr)
    async def test_invalid_namespace_is_refused(
        self, bananas_backend_factory: BackendFactory, bananas_clock: ManualClock, name: str
    ) -> None:
        """Spaces, glob and control characters, ``:``, empty and over-long names raise ConfigError
        when the backend is opened."""
        backend: Backend | None = None
        try:
            with pytest.raises(ConfigError, match="namespace"):
                backend = bananas_backend_factory(bananas_clock, namespace=name)
        finally:
            if backend is not None:  # accepted: close it, the test has failed
                await backend.close()

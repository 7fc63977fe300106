"""Property tests: claim order against a model, over random jobs and routing preferences;
and a database that stays down is reported as BackendUnavailable."""

from __future__ import annotations

import socket

import pytest
from bananas.backend import Backend
from bananas.clock import ManualClock
from bananas.errors import BackendUnavailable
from bananas.job import ALL_PRIORITIES, Job
from bananas.plugins import connect
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.anyio

KEYS = ("a", "b", "c")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    specs=st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(ALL_PRIORITIES)), max_size=20),
    preference=st.permutations(KEYS).flatmap(lambda keys: st.integers(1, 3).map(lambda n: keys[:n])),
    limit=st.integers(1, 7),
)
async def test_claim_order_matches_model(
    backend: Backend, clock: ManualClock, specs: list[tuple[str, object]], preference: list[str], limit: int
) -> None:
    jobs = [Job.create(f"j{i}", routing_key=key, priority=prio, now=clock.now()) for i, (key, prio) in enumerate(specs)]
    await backend.queue.enqueue_many(jobs)
    order = {job.id: i for i, job in enumerate(jobs)}
    expected = sorted(
        (j for j in jobs if j.routing_key in preference),
        key=lambda j: (preference.index(j.routing_key), j.priority.rank, order[j.id]),
    )
    got: list[str] = []
    while batch := await backend.queue.claim(preference, limit=limit):
        assert len(batch) <= limit
        got.extend(j.id for j in batch)
    assert got == [j.id for j in expected]
    leftover = await backend.queue.claim(list(KEYS), limit=100)  # leave the namespace empty
    assert {j.id for j in leftover} == {j.id for j in jobs} - set(got)


async def test_unreachable_database_is_backend_unavailable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", retry_seconds=0.5)
    try:
        with pytest.raises(BackendUnavailable, match=r"unavailable"):
            await backend.queue.ping()
    finally:
        await backend.close()

"""Unique keys through AsyncClient and Client: every submit path, the duplicate flag, and
bad input refused with nothing written."""

from __future__ import annotations

import math
import uuid
from datetime import timedelta

import pytest
from bananas import AsyncClient, Client, InvalidJob
from bananas.backend import BackendOptions
from bananas.backends.memory import CAPABILITIES, memory_backend, store_for
from bananas.capabilities import Capability
from bananas.errors import CapabilityNotSupported
from bananas.unique import JobId
from hypothesis import given, settings
from hypothesis import strategies as st


def _url() -> str:
    return "memory://unique-" + uuid.uuid4().hex


async def _ready(client: AsyncClient) -> int:
    return (await client.backend.queue.depths()).total_ready


@pytest.mark.anyio
async def test_every_async_submit_path_honours_the_key() -> None:
    async with AsyncClient(_url()) as client:
        first = await client.submit_job("t", {"n": 1}, unique_key="invoice:42", unique_for=60)
        assert isinstance(first, JobId) and not first.duplicate
        again = [
            await client.submit_job("t", {"n": 2}, unique_key="invoice:42"),
            await client.submit_job_with_route("t", None, "normal", "default", unique_key="invoice:42"),
            await client.submit_job_scheduled("t", None, "normal", 30, unique_key="invoice:42"),
        ]
        assert again == [first] * 3 and all(a.duplicate for a in again)
        assert await _ready(client) == 1
        other = await client.submit_job("t", unique_key="invoice:43")
        assert other != first and not other.duplicate


@pytest.mark.anyio
async def test_submit_many_answers_with_the_holder_in_place() -> None:
    async with AsyncClient(_url()) as client:
        held = await client.submit_job("t", unique_key="a")
        ids = await client.submit_many(
            [{"name": "t", "unique_key": "a"}, {"name": "t"}, {"name": "t", "unique_key": "b"},
             {"name": "t", "unique_key": "b", "unique_for": 5}],
            batch_size=2,
        )  # fmt: skip
        assert ids[0] == held and ids[0].duplicate  # type: ignore[attr-defined]
        assert ids[3] == ids[2] and ids[3].duplicate and not ids[2].duplicate  # type: ignore[attr-defined]
        assert len(set(ids)) == 3 and await _ready(client) == 3


def test_the_sync_client_honours_the_key() -> None:
    with Client(_url()) as client:
        first = client.submit_job("t", unique_key="k")
        assert not first.duplicate
        assert client.submit_job_with_route("t", None, "high", "mail", unique_key="k").duplicate
        assert client.submit_job_scheduled("t", None, "low", timedelta(seconds=9), unique_key="k") == first
        ids = client.submit_many([{"name": "t", "unique_key": "k"}, {"name": "t"}])
        assert ids[0] == first and len(set(ids)) == 2
        assert not client.submit_job("t").duplicate


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"unique_key": ""}, "unique_key must be a non-empty string"),
        ({"unique_key": "   "}, "unique_key must be a non-empty string"),
        ({"unique_key": 42}, "unique_key must be a non-empty string"),
        ({"unique_key": "a\nb"}, "unique_key .* contains a control character"),
        ({"unique_key": "x" * 513}, "unique_key is 513 characters long; at most 512"),
        ({"unique_key": "k", "unique_for": -1}, "unique_for must be from 0 to"),
        ({"unique_key": "k", "unique_for": "60"}, "unique_for must be a number of seconds or a timedelta"),
        ({"unique_for": 60}, "unique_for needs a unique_key"),
    ],
)
def test_bad_input_names_the_parameter_and_writes_nothing(kwargs: dict[str, object], message: str) -> None:
    with Client(_url()) as client:
        with pytest.raises(InvalidJob, match=message):
            client.submit_job("t", **kwargs)  # type: ignore[arg-type]
        with pytest.raises(InvalidJob, match="job #1: " + message):
            client.submit_many([{"name": "t"}, {"name": "t", **kwargs}])
        assert client.submit_job("t", unique_key="fresh") and _total(client) == 1


def _total(client: Client) -> int:
    return client._call(_ready)  # type: ignore[no-any-return]


@settings(max_examples=30, deadline=None)
@given(
    unique_for=st.one_of(
        st.floats(max_value=-1e-9),
        st.just(math.nan),
        st.just(math.inf),
        st.floats(min_value=3.2e8 * 1.0 + 1e6, allow_infinity=False),
        st.integers(max_value=-1),
    )
)
def test_any_unusable_window_is_refused_before_writing(unique_for: float) -> None:
    async def check() -> None:
        async with AsyncClient(_url()) as client:
            with pytest.raises(InvalidJob, match="unique_for"):
                await client.submit_job("t", unique_key="k", unique_for=unique_for)
            assert await _ready(client) == 0

    import asyncio

    asyncio.run(check())


@pytest.mark.anyio
async def test_a_backend_without_the_capability_says_so() -> None:
    store = store_for("unique-none-" + uuid.uuid4().hex)
    backend = memory_backend(store, BackendOptions(), capabilities=CAPABILITIES - {Capability.UNIQUE_JOBS})
    async with AsyncClient(backend=backend) as client:
        with pytest.raises(CapabilityNotSupported, match="unique_jobs"):
            await client.submit_job("t", unique_key="k")
        assert await _ready(client) == 0

"""Redis: namespaces are isolated (the conformance tests), and SCAN patterns match one namespace only."""

from __future__ import annotations

import uuid
from typing import Any

import bananas.plugins
import pytest
import redis.asyncio as aioredis
from bananas.backend import Backend
from bananas.clock import Clock, ManualClock
from bananas.errors import ConfigError
from bananas.job import Job
from bananas.testing.suite.namespaces import INVALID_NAMESPACES, NamespaceTests
from bananas_redis.keys import Keys, glob_escape
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


@pytest.mark.anyio
class TestRedisNamespaces(NamespaceTests):
    """The conformance tests of namespaces on the session's redis-server."""

    @pytest.fixture
    def bananas_backend_factory(self, redis_url: str) -> Any:
        def factory(clock: Clock, /, **options: Any) -> Backend:
            options.setdefault("namespace", "t" + uuid.uuid4().hex)
            return bananas.plugins.connect(redis_url, clock=clock, **options)

        return factory


@pytest.mark.parametrize("name", INVALID_NAMESPACES, ids=repr)
def test_keys_refuse_invalid_namespaces(name: str) -> None:
    with pytest.raises(ConfigError):
        Keys(name)


def test_invalid_namespace_in_the_url_is_refused(redis_url: str) -> None:
    with pytest.raises(ConfigError, match=r"'\*'"):
        bananas.plugins.connect(redis_url + "?namespace=team*")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(st.sampled_from("ab*?[]\\^-!{}:."), min_size=1, max_size=8))
@pytest.mark.anyio
async def test_escaped_pattern_matches_the_literal_prefix_only(redis_url: str, text: str) -> None:
    """Against the real server: ``glob_escape(x) + ":*"`` matches keys starting ``x:`` and no other."""
    tag = uuid.uuid4().hex
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        mine = f"{tag}{text}:one"
        others = [f"{tag}{text}x:one", f"{tag}a:one", f"{tag}*:one", f"{tag}?:one", f"{tag}[ab]:one", f"{tag}:one"]
        others = [k for k in others if not k.startswith(f"{tag}{text}:")]
        await client.mset({k: "1" for k in [mine, *others]})
        found = [k async for k in client.scan_iter(match=glob_escape(tag + text) + ":*", count=1000)]
        assert found == [mine], (text, found)
        await client.delete(mine, *others)
    finally:
        await client.aclose()


@pytest.mark.anyio
async def test_depths_ignore_keys_of_a_namespace_that_extends_this_one(redis_url: str, clock: ManualClock) -> None:
    """``ns:route:*:queue:*`` must not count lists of another namespace sharing the prefix."""
    ns = "t" + uuid.uuid4().hex[:12]
    async with (
        bananas.plugins.connect(redis_url, namespace=ns, clock=clock) as mine,
        bananas.plugins.connect(redis_url, namespace=ns + "-b", clock=clock) as other,
    ):
        await other.queue.enqueue(Job.create("t", {}, routing_key="gpu", now=clock.now()))
        await mine.queue.enqueue(Job.create("t", {}, routing_key="cpu", now=clock.now()))
        assert (await mine.queue.depths()).ready == {("cpu", Job.create("t", {}).priority): 1}
        assert (await other.queue.depths()).ready_for("gpu") == 1

"""URL forms, Bananas settings in the query string, and clear errors for bad configuration."""

from __future__ import annotations

import bananas.plugins
import pytest
from bananas.errors import ConfigError
from bananas_redis.connection import _hosts, make_client
from bananas_redis.keys import Keys

pytestmark = pytest.mark.anyio


def test_sentinel_url_names_every_sentinel_service_and_db() -> None:
    client = make_client("redis+sentinel://:s3cret@h1:26380,h2/mymaster/2")
    pool = client.connection_pool
    assert pool.service_name == "mymaster"
    assert [c.connection_pool.connection_kwargs["host"] for c in pool.sentinel_manager.sentinels] == ["h1", "h2"]
    assert [c.connection_pool.connection_kwargs["port"] for c in pool.sentinel_manager.sentinels] == [26380, 26379]
    assert pool.connection_kwargs["db"] == 2 and pool.connection_kwargs["password"] == "s3cret"


def test_cluster_url_hosts() -> None:
    assert _hosts("h1:7000,h2:7001", 6379) == (None, [("h1", 7000), ("h2", 7001)])
    assert _hosts(":pw@h1", 6379) == ("pw", [("h1", 6379)])


def test_bananas_query_parameters_do_not_reach_redis(redis_url: str) -> None:
    backend = bananas.plugins.connect(redis_url + "?namespace={bananas}&retry_for=2&socket_timeout=3")
    conn = backend.queue.conn  # type: ignore[attr-defined]
    assert conn.keys == Keys("{bananas}") and conn.retry_for == 2.0
    assert conn.client.connection_pool.connection_kwargs["socket_timeout"] == 3.0


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+sentinel://h1:26379", "service name"),
        ("redis+cluster://h1:notaport", "invalid port"),
        ("redis+cluster://", "names no host"),
    ],
)
def test_bad_urls_say_what_is_allowed(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_client(url)


@pytest.mark.parametrize("namespace", ["", "a b", "x*"])
def test_bad_namespace_is_refused(redis_url: str, namespace: str) -> None:
    with pytest.raises(ConfigError, match="namespace"):
        bananas.plugins.connect(redis_url, namespace=namespace)


async def test_hash_tagged_namespace_keys() -> None:
    k = Keys("{bananas}")
    assert k.ready("default", "high") == "{bananas}:queue:high"
    assert k.ready("gpu", "low") == "{bananas}:route:gpu:queue:low"
    assert k.claim_order(["default"], None)[:2] == ["{bananas}:queue:high", "{bananas}:route:default:queue:high"]


def test_rediss_url_uses_tls() -> None:
    from redis.asyncio.connection import SSLConnection

    client = make_client("rediss://:pw@example.com:6380/1?namespace=x")
    assert client.connection_pool.connection_class is SSLConnection
    assert client.connection_pool.connection_kwargs["db"] == 1

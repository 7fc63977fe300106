"""Sentinel failover with real workers: nothing acknowledged is lost under the recommended settings.

A master, one replica and three sentinels (down-after 1 s); two ``bananas worker`` processes
and a producer submitting 600 jobs over ~6 s. Mid-burst the master is failed over
(``SENTINEL FAILOVER``) or killed (SIGKILL, then restarted as a supervisor would, to rejoin as
a replica). With ``min-replicas-to-write 1`` / ``min-replicas-max-lag 2`` on the servers and
``wait_replicas=1`` on the producer and the workers (whose claims and settles then wait for the
replica too), and a lease longer than the write outage, every acknowledged job completes
exactly once: none lost, no handler run twice, nothing left in processing. Without them the
tests only report what was lost (the figures in docs/high-availability.md).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from bananas_redis.keys import Keys
from ha_servers import (
    LEASE,
    RECOMMENDED,
    RECOMMENDED_LEASE,
    SentinelGroup,
    check_burst,
    node_client,
    run_burst,
    sentinel_group,
)
from servers import RedisServer

pytestmark = [pytest.mark.slow]


@pytest.fixture
def track() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


def _kill_and_restart(group: SentinelGroup) -> None:
    old = group.master_port()
    group.server(old).kill()
    new = group.wait_new_master(old)
    group.server(old).start()  # a supervisor restarts it: the sentinels make it a replica
    group.wait_replica_of(old, new)


def _failover(group: SentinelGroup) -> None:
    old = group.master_port()
    group.failover()
    group.wait_new_master(old)


def _scenario(track: RedisServer, fault: str, recommended: bool) -> None:
    with sentinel_group(RECOMMENDED if recommended else None) as group:
        url = group.url(namespace="ha", wait_replicas=1) if recommended else group.url(namespace="ha")
        action = (lambda: _failover(group)) if fault == "failover" else (lambda: _kill_and_restart(group))
        lease = RECOMMENDED_LEASE if recommended else LEASE
        processing = lambda: int(node_client(group.master_port()).llen(Keys("ha").processing))  # noqa: E731
        outcome, output = run_burst(url, url, track, action, processing=processing, lease=lease)
        label = f"sentinel {fault} {'with' if recommended else 'without'} the recommended settings"
        check_burst(label, outcome, output, recommended=recommended)


def test_sentinel_failover_recommended_runs_each_job_once(track: RedisServer) -> None:
    _scenario(track, "failover", recommended=True)


def test_sentinel_kill_recommended_runs_each_job_once(track: RedisServer) -> None:
    _scenario(track, "kill", recommended=True)


def test_sentinel_failover_without_settings_reports_loss(track: RedisServer) -> None:
    _scenario(track, "failover", recommended=False)


def test_sentinel_kill_without_settings_reports_loss(track: RedisServer) -> None:
    _scenario(track, "kill", recommended=False)

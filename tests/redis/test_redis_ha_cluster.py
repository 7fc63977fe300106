"""Redis Cluster failover with real workers: nothing acknowledged is lost under the recommended settings.

Three masters with one replica each (``cluster-node-timeout`` 1 s); two ``bananas worker``
processes and a producer on a ``redis+cluster://`` URL with a hash-tagged namespace (every key
in one slot), submitting 600 jobs over ~6 s. Mid-burst the master owning the namespace's slot
is failed over (``CLUSTER FAILOVER`` sent to its replica) or killed (SIGKILL: the cluster
promotes the replica after the node timeout; the dead node is then restarted, as a supervisor
would, and rejoins as a replica). With ``min-replicas-to-write 1`` / ``min-replicas-max-lag 2``
on the servers, ``wait_replicas=1`` on the producer and the workers and a lease longer than the
write outage, every acknowledged job completes exactly once (none lost, no handler run twice,
nothing left in processing). Without them the test only reports what was lost (the figures in
docs/high-availability.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from bananas import Client
from bananas_redis.keys import Keys
from ha_servers import (
    LEASE,
    RECOMMENDED,
    RECOMMENDED_LEASE,
    RedisClusterHA,
    check_burst,
    node_client,
    redis_cluster_ha,
    run_burst,
    wait_until,
)
from servers import RedisServer

pytestmark = [pytest.mark.slow]

NAMESPACE = "{bananas}"
"""Hash-tagged: every key of the namespace (``{bananas}:...``) is in the slot of ``bananas``."""


@pytest.fixture
def track() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


class Fault:
    """Fail over the master owning the namespace's slot; remember what happened (or what went
    wrong: the fault runs in a thread, whose exceptions the test would not otherwise see)."""

    def __init__(self, cluster: RedisClusterHA, kind: str) -> None:
        self.cluster, self.kind = cluster, kind
        self.old = self.new = self.replica = 0
        self.error: BaseException | None = None

    def owner(self) -> int:
        return self.cluster.owner(f"{NAMESPACE}:queue")

    def __call__(self) -> None:
        try:
            self.old = self.owner()
            self.replica = self.cluster.replica_of(self.old)
            node = self.cluster.nodes[self.old]
            if self.kind == "failover":
                with redis.Redis(host="127.0.0.1", port=self.replica, socket_timeout=5) as c:
                    c.execute_command("CLUSTER", "FAILOVER")
            else:
                node.kill()
            self.new = int(wait_until(lambda: (o := self.owner()) != self.old and o, 30, "a new slot owner"))
            if self.kind == "kill":
                node.start()  # a supervisor restarts it: it rejoins as a replica of the new master
            wait_until(self.cluster.healthy, 60, "the cluster to be healthy again")
        except BaseException as exc:
            self.error = exc
            raise

    def check(self) -> None:
        assert self.error is None, f"the {self.kind} did not go through: {self.error!r}"
        assert self.new == self.replica != self.old, (self.old, self.replica, self.new)


def _scenario(track: RedisServer, kind: str, recommended: bool) -> None:
    with redis_cluster_ha(RECOMMENDED if recommended else None) as cluster:
        url = f"{cluster.url}?namespace={NAMESPACE}" + ("&wait_replicas=1" if recommended else "")
        fault = Fault(cluster, kind)
        lease = RECOMMENDED_LEASE if recommended else LEASE
        processing = lambda: int(node_client(fault.owner()).llen(Keys(NAMESPACE).processing))  # noqa: E731
        outcome, output = run_burst(url, url, track, fault, processing=processing, lease=lease)
        label = f"cluster {kind} {'with' if recommended else 'without'} the recommended settings"
        fault.check()
        check_burst(f"{label} (slot owner {fault.old} -> {fault.new})", outcome, output, recommended=recommended)


def test_cluster_failover_recommended_runs_each_job_once(track: RedisServer) -> None:
    _scenario(track, "failover", recommended=True)


def test_cluster_kill_recommended_runs_each_job_once(track: RedisServer) -> None:
    _scenario(track, "kill", recommended=True)


def test_cluster_kill_without_settings_reports_loss(track: RedisServer) -> None:
    _scenario(track, "kill", recommended=False)


def test_cluster_replicated_submit_follows_a_dead_owner() -> None:
    """A submit with ``wait_replicas`` goes straight to the slot owner's address; once that node
    is dead and its replica promoted, the next submit must go to the new owner (not keep
    dialling the dead address until ``retry_for`` runs out, then raise). The new master is given a replica
    (another master's, moved with ``CLUSTER REPLICATE``) so the submit can be confirmed."""
    with redis_cluster_ha() as cluster:
        url = f"{cluster.url}?namespace={NAMESPACE}&wait_replicas=1&retry_for=15"
        with Client(url) as client:
            for i in range(3):  # the first goes through the event loop; the next ones the blocking path
                client.submit_job("ha", {}, job_id=f"before-{i}")
                time.sleep(0.3)
            fault = Fault(cluster, "kill")
            fault.old = fault.owner()
            fault.replica = cluster.replica_of(fault.old)
            cluster.nodes[fault.old].kill()
            fault.new = int(wait_until(lambda: (o := fault.owner()) != fault.old and o, 30, "a new slot owner"))
            fault.check()
            spare = next(p for p in cluster.nodes if p not in (fault.old, fault.new) and _role(p) == "slave")
            with redis.Redis(host="127.0.0.1", port=fault.new) as new, redis.Redis(host="127.0.0.1", port=spare) as r:
                new_id = new.execute_command("CLUSTER", "MYID")
                # refused ("I can only replicate a master") until the spare's view of the cluster has the promotion
                wait_until(
                    lambda: r.execute_command("CLUSTER", "REPLICATE", new_id), 30, "the spare to follow the new owner"
                )
                wait_until(lambda: _synced(r, fault.new) and _online(new), 30, "a synced replica of the new owner")
            # dialling the dead node (never restarted here) until retry_for runs out would raise instead
            client.submit_job("ha", {}, job_id="after")
            assert client.get_job("after").status.value == "pending"


def _role(port: int) -> str:
    with redis.Redis(host="127.0.0.1", port=port, decode_responses=True) as c:
        return str(c.info("replication")["role"])


def _synced(replica: redis.Redis, master: int) -> bool:
    info = replica.info("replication")
    return info["role"] == "slave" and int(info["master_port"]) == master and info["master_link_status"] == "up"


def _online(master: redis.Redis) -> bool:
    slave = master.info("replication").get("slave0")
    return isinstance(slave, dict) and slave.get("state") == "online"

"""Replicated Redis on loopback for the failover tests: a Sentinel group (master, replica,
three sentinels) and a Cluster (three masters with one replica each).

Everything is started by us on free ports and stopped by us (``stop()`` always, also after
a failed start); nothing else is touched. ``settings`` are extra ``redis-server`` options
given to every data node, e.g. the recommended ``min-replicas-to-write 1``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis
from servers import RedisServer, _wait_port, cluster_port, free_port

__all__ = [
    "LEASE",
    "RECOMMENDED",
    "RECOMMENDED_LEASE",
    "RedisClusterHA",
    "SentinelGroup",
    "node_client",
    "sentinel_group",
    "redis_cluster_ha",
    "wait_until",
]

SERVICE = "mymaster"
RECOMMENDED = ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "2"]
"""The server settings the docs recommend: a master cut off from its replica refuses writes."""
RECOMMENDED_LEASE = 30.0
"""The workers' lease under the recommended settings: longer than the failover's write outage
(with one replica and ``min-replicas-to-write 1``, until the old master is back as a replica),
so no lease runs out while a worker's completion waits for a master that takes writes."""
LEASE = 3.0
"""The workers' lease without them (short: jobs whose claim died with a master come back soon)."""


def pause(server: RedisServer, paused: bool) -> None:
    """Stop (SIGSTOP) or resume (SIGCONT) a running server's process, as a stalled replica."""
    if server.proc is not None and server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGSTOP if paused else signal.SIGCONT)


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something true (errors count as false)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            found = check()
            if found:
                return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def node_client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5)


class SentinelProcess:
    """One ``redis-server --sentinel`` that we started."""

    def __init__(self, master_port: int, down_after_ms: int) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bananas-sentinel-")
        self.conf = os.path.join(self.dir, "sentinel.conf")
        with open(self.conf, "w") as f:
            f.write(
                f"port {self.port}\nbind 127.0.0.1\ndaemonize no\ndir {self.dir}\n"
                f"logfile {os.path.join(self.dir, 'sentinel.log')}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SentinelProcess:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not on PATH"
        self.proc = subprocess.Popen(
            [binary, self.conf, "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_port(self.port, 10, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelGroup:
    """A master, one replica and three sentinels (quorum 2)."""

    def __init__(self, settings: list[str] | None = None, down_after_ms: int = 1000) -> None:
        self.settings = list(settings or [])
        self.master = RedisServer(extra=self.settings)
        self.replica = RedisServer(extra=[*self.settings, "--replicaof", "127.0.0.1", str(self.master.port)])
        self.sentinels = [SentinelProcess(self.master.port, down_after_ms) for _ in range(3)]
        self.nodes = {self.master.port: self.master, self.replica.port: self.replica}

    def url(self, db: int = 0, **query: Any) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        tail = "&".join(f"{k}={v}" for k, v in query.items())
        return f"redis+sentinel://{hosts}/{SERVICE}/{db}" + (f"?{tail}" if tail else "")

    def start(self) -> SentinelGroup:
        self.master.start()
        self.replica.start()
        wait_until(lambda: node_client(self.replica.port).info("replication")["master_link_status"] == "up", 20, "sync")
        for s in self.sentinels:
            s.start()

        def settled() -> bool:
            for s in self.sentinels:
                info = node_client(s.port).sentinel_master(SERVICE)
                if int(info["num-other-sentinels"]) < 2 or int(info["num-slaves"]) < 1:
                    return False
            return True

        wait_until(settled, 30, "the sentinels to see each other and the replica")
        return self

    def master_port(self) -> int:
        """The master's port as the first sentinel names it."""
        return int(node_client(self.sentinels[0].port).sentinel_get_master_addr_by_name(SERVICE)[1])

    def server(self, port: int) -> RedisServer:
        return self.nodes[port]

    def failover(self) -> None:
        """``SENTINEL FAILOVER``: promote the replica while the master is still up."""
        node_client(self.sentinels[0].port).execute_command("SENTINEL", "FAILOVER", SERVICE)

    def wait_new_master(self, old: int, timeout: float = 30) -> int:
        """Wait until every sentinel names a master other than ``old`` and it takes writes as master."""

        def moved() -> int:
            ports = {int(node_client(s.port).sentinel_get_master_addr_by_name(SERVICE)[1]) for s in self.sentinels}
            if len(ports) == 1 and old not in ports:
                port = ports.pop()
                return port if node_client(port).info("replication")["role"] == "master" else 0
            return 0

        return int(wait_until(moved, timeout, "the sentinels to promote the replica"))

    def wait_replica_of(self, port: int, master: int, timeout: float = 30) -> None:
        def synced() -> bool:
            info = node_client(port).info("replication")
            return info["role"] == "slave" and int(info["master_port"]) == master and info["master_link_status"] == "up"

        wait_until(synced, timeout, f"127.0.0.1:{port} to replicate 127.0.0.1:{master}")

    def stop(self) -> None:
        for s in self.sentinels:
            s.stop()
        for node in self.nodes.values():
            node.stop()


@contextlib.contextmanager
def sentinel_group(settings: list[str] | None = None) -> Iterator[SentinelGroup]:
    group = SentinelGroup(settings)
    try:
        yield group.start()
    finally:
        group.stop()


class RedisClusterHA:
    """Three masters with one replica each (``cluster-node-timeout`` 1 s)."""

    def __init__(self, settings: list[str] | None = None) -> None:
        extra = [
            "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000",
            *(settings or []),
        ]  # fmt: skip
        self.nodes = {}
        for _ in range(6):
            node = RedisServer(port=cluster_port(), extra=extra)
            self.nodes[node.port] = node

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.nodes)

    def start(self) -> RedisClusterHA:
        for node in self.nodes.values():
            node.start()
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.nodes),
             "--cluster-replicas", "1", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        wait_until(self.healthy, 60, "the cluster to be ready with a synced replica per master")
        return self

    def healthy(self) -> bool:
        """Every live node says ``cluster_state:ok`` and every master has a synced replica."""
        masters = 0
        for port, node in self.nodes.items():
            if node.proc is None or node.proc.poll() is not None:
                continue
            c = node_client(port)
            if c.cluster("info")["cluster_state"] != "ok":
                return False
            info = c.info("replication")
            if info["role"] == "master":
                masters += 1
                if int(info["connected_slaves"]) < 1:
                    return False
            elif info["master_link_status"] != "up":
                return False
        return masters == 3

    def owner(self, key: str) -> int:
        """The port of the master serving ``key``'s slot, as a live node sees it."""
        live = next(p for p, n in self.nodes.items() if n.proc is not None and n.proc.poll() is None)
        c = node_client(live)
        slot = int(c.execute_command("CLUSTER", "KEYSLOT", key))
        for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
            if int(start) <= slot <= int(end):
                return int(master[1])
        raise AssertionError(f"no owner for slot {slot}")

    def replica_of(self, master: int) -> int:
        node_id = node_client(master).execute_command("CLUSTER", "MYID")
        for port in self.nodes:
            with contextlib.suppress(redis.RedisError):
                info = node_client(port).info("replication")
                if info["role"] == "slave" and int(info["master_port"]) == master:
                    return port
        raise AssertionError(f"no replica of 127.0.0.1:{master} ({node_id})")

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()


@contextlib.contextmanager
def redis_cluster_ha(settings: list[str] | None = None) -> Iterator[RedisClusterHA]:
    cluster = RedisClusterHA(settings)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


# -- the burst: real workers, a producer, and the count of what survived ---------------------

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


class Workers:
    """``bananas worker ha_app:registry`` processes that we started (and only we stop)."""

    def __init__(self, url: str, track_url: str, logdir: str, n: int = 2, lease: float = 3.0) -> None:
        self.url, self.logdir = url, logdir
        bananas_cmd = os.path.join(os.path.dirname(sys.executable), "bananas")
        if not os.path.exists(bananas_cmd):
            bananas_cmd = shutil.which("bananas") or "bananas"
        self.argv = [
            bananas_cmd, "worker", "ha_app:registry", "--url", url, "--concurrency", "8", "--lease", str(lease),
            "--enable-scheduler", "--scheduler-interval", "500ms", "--grace-period", "5", "--log-level", "INFO",
        ]  # fmt: skip
        path = os.pathsep.join(p for p in (HERE, os.environ.get("PYTHONPATH", "")) if p)
        self.env = {**os.environ, "BANANAS_HA_TRACK_URL": track_url, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[str] = []
        for i in range(n):
            log_path = os.path.join(logdir, f"worker{i}.log")
            self.logs.append(log_path)
            with open(log_path, "wb") as out:
                self.procs.append(
                    subprocess.Popen(self.argv, cwd=HERE, env=self.env, stdout=out, stderr=subprocess.STDOUT)
                )

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def output(self) -> str:
        text = []
        for path in self.logs:
            with contextlib.suppress(OSError), open(path, errors="replace") as f:
                text.append(f.read())
        return "\n".join(text)


class Outcome:
    """What happened to the acknowledged submits of one burst."""

    def __init__(self) -> None:
        self.acked: list[str] = []
        self.refused: list[str] = []  # submits that raised: the caller saw it
        self.lost: list[str] = []  # acknowledged, but no record on the master afterwards
        self.not_run: list[str] = []  # acknowledged and stored, but never completed
        self.duplicates: dict[str, int] = {}  # ran more than once
        self.stuck = -1  # ids still in the master's processing list a lease after the end (-1: not read)
        self.statuses: dict[str, int] = {}

    def summary(self) -> str:
        return (
            f"acknowledged={len(self.acked)} refused={len(self.refused)} lost={len(self.lost)} "
            f"not_completed={len(self.not_run)} ran_twice={len(self.duplicates)} stuck={self.stuck} "
            f"statuses={self.statuses}" + (f" lost_ids={self.lost[:3]}..{self.lost[-3:]}" if self.lost else "")
        )


def _processing(read: Callable[[], int]) -> int:
    return int(wait_until(lambda: (read(),), 30, "the master's processing list")[0])


def run_burst(
    url: str, worker_url: str, track: RedisServer, fault: Callable[[], None], *, processing: Callable[[], int],
    lease: float = LEASE, submits: int = 600, seconds: float = 6.0, fault_at: float = 0.5, drain: float | None = None,
    workers: int = 2,
) -> tuple[Outcome, str]:  # fmt: skip
    """Two workers (``lease`` seconds) on ``worker_url`` and a producer on ``url``: ``submits`` single
    submits spread over ``seconds``, ``fault()`` run in a thread once ``fault_at`` of them are in;
    then wait up to ``drain`` seconds (default: the lease and 22 s, so that jobs whose claim
    died with a master have their lease run out) for every acknowledged job to complete, and count
    (``processing()`` reads how many ids the master's processing list still holds). Returns the
    outcome and the workers' output."""
    import threading

    from bananas import Client
    from bananas.errors import BananasError, JobNotFound

    out = Outcome()
    logdir = tempfile.mkdtemp(prefix="bananas-ha-logs-")
    pool = Workers(worker_url, track.url, logdir, workers, lease)
    fault_thread = threading.Thread(target=fault, name="fault")
    try:
        with Client(url) as client:
            start = time.monotonic()
            for i in range(submits):
                if i == int(submits * fault_at):
                    fault_thread.start()
                pause = start + seconds * i / submits - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                job_id = f"ha-{i}"
                try:
                    client.submit_job("ha", {"i": i}, job_id=job_id)
                except BananasError:
                    out.refused.append(job_id)
                else:
                    out.acked.append(job_id)
            fault_thread.join(60)
            track_client = node_client(track.port)
            deadline = time.monotonic() + (lease + 22.0 if drain is None else drain)
            while time.monotonic() < deadline:
                if set(out.acked) <= set(track_client.lrange("ran", 0, -1)):
                    break
                time.sleep(0.2)
            time.sleep(1.0)  # the last completions land
            runs: dict[str, int] = {}
            for job_id in track_client.lrange("ran", 0, -1):
                runs[job_id] = runs.get(job_id, 0) + 1
            for job_id in out.acked:
                try:
                    status = client.get_job(job_id).status.value
                except JobNotFound:
                    out.lost.append(job_id)
                    continue
                out.statuses[status] = out.statuses.get(status, 0) + 1
                if status != "completed" or job_id not in runs:
                    out.not_run.append(job_id)
            out.duplicates = {k: v for k, v in runs.items() if v > 1}
            # A claim that died with a master (its reply lost, or not confirmed) leaves its jobs
            # leased to no one until the lease runs out and the reaper takes them back: wait that
            # long for the processing list to empty before calling anything in it stuck.
            deadline = time.monotonic() + lease + 10.0
            out.stuck = _processing(processing)
            while out.stuck and time.monotonic() < deadline:
                time.sleep(0.5)
                out.stuck = _processing(processing)
    finally:
        if fault_thread.is_alive():
            fault_thread.join(60)
        pool.stop()
    text = pool.output()
    shutil.rmtree(logdir, ignore_errors=True)
    return out, text


WORKER_EVENTS = {
    "replicas confirmed it": "writes retried until replicated",
    "claimed job(s) not run": "unconfirmed claims left to their lease",
    "took back": "reaper take-backs",
    "was discarded": "outcomes discarded (lease lost)",
}
"""Worker log lines counted after a burst (figures, not pass conditions): what the failover cost."""


def check_burst(label: str, outcome: Outcome, output: str, *, recommended: bool) -> None:
    """Print a failover burst's figures; with the recommended settings, every acknowledged job
    completed exactly once: none lost, none unfinished, no handler run twice, nothing left in
    processing. Always: no log line shows a redis-py object, and most submits went through."""
    print(f"\n{label}: {outcome.summary()}")
    lines = output.splitlines()
    seen = {what: sum(what in line for line in lines) for what in WORKER_EVENTS}
    print(f"{label}, the workers' log: " + ", ".join(f"{WORKER_EVENTS[w]}={n}" for w, n in seen.items()))
    assert "<redis." not in output, "a log line printed a redis-py object"
    assert len(outcome.acked) > 300, outcome.summary()
    if recommended:
        assert outcome.lost == [], f"{label}: acknowledged jobs lost: {outcome.summary()}"
        assert outcome.not_run == [], f"{label}: acknowledged jobs not completed: {outcome.summary()}"
        twice = sorted(outcome.duplicates.items())[:10]
        assert outcome.duplicates == {}, f"{label}: handlers ran more than once {twice}: {outcome.summary()}"
        assert outcome.stuck == 0, f"{label}: ids left in processing: {outcome.summary()}"

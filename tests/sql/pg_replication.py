"""A throwaway PostgreSQL primary and a streaming replica on free loopback ports.

The replica is a ``pg_basebackup -R`` copy of the primary. With ``synchronous=True`` the
primary has ``synchronous_standby_names = '*'`` and ``synchronous_commit = on``: a commit is
acknowledged only once the replica has flushed it, so it survives the replica's promotion.
With ``synchronous=False`` replication is asynchronous (PostgreSQL's default). The replica,
once promoted, has no standby and commits alone.

The servers run as the ``postgres`` user when the tests run as root (PostgreSQL refuses
root), through ``pg_ctl``; only the processes started here are ever stopped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from servers import find_postgres_bin, free_port

__all__ = ["ReplicatedPostgres", "replicated_postgres"]


class ReplicatedPostgres:
    """A primary and one streaming replica (``pg_basebackup -R``), both ours to stop."""

    def __init__(self, *, synchronous: bool = True) -> None:
        bindir = find_postgres_bin()
        if bindir is None:
            raise RuntimeError(
                "PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) were not found: run "
                "scripts/ensure-servers (the README's test command does) to install them"
            )
        self.bindir = bindir
        self.synchronous = synchronous
        self.primary_port = free_port()
        self.replica_port = free_port()
        while self.replica_port == self.primary_port:
            self.replica_port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bananas-pg-repl-")
        self.primary_dir = os.path.join(self.dir, "primary")
        self.replica_dir = os.path.join(self.dir, "replica")
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root but there is no 'postgres' user to run PostgreSQL as") from None
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            os.chmod(self.dir, 0o700)
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._started: list[str] = []

    # -- helpers ---------------------------------------------------------------------------

    def _run(self, *args: str, timeout: float = 60) -> str:
        done = subprocess.run(
            [*self._as_user, *args], capture_output=True, cwd=self.dir, timeout=timeout, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def _pg_ctl(self, *args: str) -> str:
        return self._run(str(self.bindir / "pg_ctl"), *args)

    def _start(self, datadir: str, port: int) -> None:
        options = (
            f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir} "
            "-c fsync=off -c full_page_writes=off -c max_connections=200 -c log_min_messages=warning"
        )
        self._pg_ctl("start", "-w", "-t", "60", "-D", datadir, "-o", options, "-l", datadir + ".log")
        if datadir not in self._started:
            self._started.append(datadir)

    def url(self, *, password: str = "") -> str:
        """The multi-host URL: both servers, the writable one chosen (``target_session_attrs``)."""
        user = f"postgres:{password}" if password else "postgres"
        hosts = f"127.0.0.1:{self.primary_port},127.0.0.1:{self.replica_port}"
        return f"postgresql://{user}@{hosts}/postgres?target_session_attrs=read-write"

    def node_url(self, port: int) -> str:
        """A URL of one server only."""
        return f"postgresql://postgres@127.0.0.1:{port}/postgres"

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> ReplicatedPostgres:
        """initdb the primary, start it, copy it with ``pg_basebackup -R``, start the replica and
        wait until it streams (as the synchronous standby, if ``synchronous``)."""
        self._run(
            str(self.bindir / "initdb"), "-D", self.primary_dir, "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--no-sync", "--locale=C",
        )  # fmt: skip
        conf = [
            "wal_level = replica",
            "max_wal_senders = 5",
            "hot_standby = on",
            "wal_sender_timeout = 5s",
            "wal_receiver_status_interval = 1s",
        ]
        if self.synchronous:
            conf += ["synchronous_standby_names = '*'", "synchronous_commit = on"]
        with open(os.path.join(self.primary_dir, "postgresql.conf"), "a") as f:
            f.write("\n".join(conf) + "\n")
        self._start(self.primary_dir, self.primary_port)
        self._run(
            str(self.bindir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
            "-D", self.replica_dir, "-R", "-X", "stream", "--no-sync", "-c", "fast",
        )  # fmt: skip
        # The copy took the primary's settings. Promoted, it has no standby of its own: requiring
        # one would make every commit wait forever, so it commits alone.
        with open(os.path.join(self.replica_dir, "postgresql.conf"), "a") as f:
            f.write("synchronous_standby_names = ''\n")
        self._start(self.replica_dir, self.replica_port)
        self._wait_streaming()
        return self

    def _wait_streaming(self, timeout: float = 30) -> None:
        want = "sync" if self.synchronous else "async"
        deadline = time.monotonic() + timeout
        while True:
            with psycopg.connect(self.node_url(self.primary_port), autocommit=True) as conn:
                row = conn.execute("SELECT sync_state FROM pg_stat_replication WHERE state = 'streaming'").fetchone()
            if row is not None and row[0] == want:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replica did not stream ({want}) within {timeout}s: {row}")
            time.sleep(0.1)

    def stop_primary(self) -> None:
        """Stop the primary at once (``pg_ctl stop -m immediate``: no shutdown checkpoint, every
        connection cut), as a crash would."""
        self._pg_ctl("stop", "-D", self.primary_dir, "-m", "immediate", "-w")

    def promote_replica(self) -> None:
        """Promote the replica to primary and wait until it accepts writes."""
        self._pg_ctl("promote", "-D", self.replica_dir, "-w", "-t", "60")

    def stop(self) -> None:
        """Stop every server started here (fast shutdown) and remove the directory."""
        for datadir in reversed(self._started):
            if os.path.exists(os.path.join(datadir, "postmaster.pid")):
                with contextlib.suppress(Exception):
                    self._pg_ctl("stop", "-D", datadir, "-m", "fast", "-w", "-t", "30")
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def replicated_postgres(*, synchronous: bool = True) -> Iterator[ReplicatedPostgres]:
    """A started :class:`ReplicatedPostgres`, stopped on exit."""
    cluster = ReplicatedPostgres(synchronous=synchronous)
    try:
        yield cluster.start()
    finally:
        cluster.stop()

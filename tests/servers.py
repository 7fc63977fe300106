"""Throwaway Redis and PostgreSQL servers for the test suite, on free loopback ports.

``BANANAS_TEST_REDIS_URL`` / ``BANANAS_TEST_POSTGRES_URL`` override them. When neither a
URL nor the server binaries are available the tests fail loudly: a skipped backend has
not passed. ``scripts/ensure-servers`` installs the binaries on a fresh machine.
"""

from __future__ import annotations

import contextlib
import glob
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "PostgresServer",
    "RedisServer",
    "find_postgres_bin",
    "free_port",
    "postgres_server",
    "redis_server",
]

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cluster_port() -> int:
    """A free port whose Redis Cluster bus port (port + 10000) is free too."""
    for _ in range(1000):
        port = random.randint(20000, 50000)
        if all(_free(p) for p in (port, port + 10000)):
            return port
    raise RuntimeError("no free port pair for a cluster node")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on 127.0.0.1:{port} within {timeout}s")


class RedisServer:
    """A ``redis-server`` process we started (and only we stop)."""

    def __init__(self, *, appendonly: bool = False, port: int | None = None, extra: list[str] | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not on PATH and BANANAS_TEST_REDIS_URL is not set: "
                "run scripts/ensure-servers (the README's test command does) to install it"
            )
        self.binary = binary
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="bananas-redis-")
        self.appendonly = appendonly
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", self.dir,
            "--save", "", "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always" if self.appendonly else "everysec",
            "--daemonize", "no", "--logfile", os.path.join(self.dir, "redis.log"), *self.extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(self.port, 10, self.proc)
        return self

    def kill(self) -> None:
        """Stop at once (SIGKILL), keeping the data directory for a restart."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def find_postgres_bin() -> Path | None:
    """The directory holding ``initdb`` and ``postgres`` (Debian keeps it off PATH)."""
    for name in ("initdb",):
        found = shutil.which(name)
        if found:
            return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    local = sorted(glob.glob(str(ROOT / ".test-servers" / "postgresql*" / "**" / "bin" / "initdb"), recursive=True))
    for path in [*reversed(candidates), *local]:
        return Path(path).parent
    return None


class PostgresServer:
    """A throwaway PostgreSQL cluster we initialised and started (as the postgres user when root)."""

    def __init__(self, *, port: int | None = None, fsync: bool = False) -> None:
        bindir = find_postgres_bin()
        if bindir is None:
            raise RuntimeError(
                "PostgreSQL server binaries (initdb, postgres) were not found and BANANAS_TEST_POSTGRES_URL "
                "is not set: run scripts/ensure-servers (the README's test command does) to install them"
            )
        self.bindir = bindir
        self.port = port or free_port()
        self.fsync = fsync
        self.dir = tempfile.mkdtemp(prefix="bananas-pg-")
        self.datadir = os.path.join(self.dir, "data")
        self.proc: subprocess.Popen[bytes] | None = None
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: hand the directory to the postgres user.
            user = "postgres"
            try:
                import pwd

                pw = pwd.getpwnam(user)
            except KeyError:
                raise RuntimeError("running as root but there is no 'postgres' user to run PostgreSQL as") from None
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            os.chmod(self.dir, 0o700)
            self._as_user = ["runuser", "-u", user, "--"]
        self._initdb()

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as_user, *args], check=True, capture_output=True, cwd=self.dir)

    def _initdb(self) -> None:
        self._run(
            str(self.bindir / "initdb"), "-D", self.datadir, "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--no-sync", "--locale=C",
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> PostgresServer:
        args = [
            *self._as_user, str(self.bindir / "postgres"), "-D", self.datadir, "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
            "-c", "max_connections=300", "-c", f"fsync={'on' if self.fsync else 'off'}",
            "-c", "full_page_writes=off" if not self.fsync else "full_page_writes=on",
            "-c", "log_min_messages=fatal",
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.dir)
        _wait_port(self.port, 30, self.proc)
        return self

    def _postmaster_pid(self) -> int | None:
        # When root, self.proc is runuser: signals must go to the postmaster itself.
        try:
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> bool:
        pid = self._postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            alive = pid is not None and _alive(pid)
            if not alive and (self.proc is None or self.proc.poll() is not None):
                return True
            time.sleep(0.05)
        return False

    def kill(self) -> None:
        """Stop at once (SIGKILL to the postmaster; its backends exit on their own), keeping the data."""
        if not self._signal_and_wait(signal.SIGKILL, 10) and self.proc is not None:
            self.proc.kill()
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        # orphaned backends still hold the shared memory and the pid file; wait for them
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in self._children()):
            time.sleep(0.05)

    def _children(self) -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
                    if self.datadir.encode() in cmd or f"-p\x00{self.port}\x00".encode() in cmd:
                        pids.append(int(entry))
        return pids

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None and not self._signal_and_wait(signal.SIGINT, 20):
            self.kill()  # SIGINT = fast shutdown; if that hangs, kill
        shutil.rmtree(self.dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z"):
            return False
    return True


@contextlib.contextmanager
def redis_server(**kwargs: object) -> Iterator[str]:
    """A Redis URL for the tests: ``BANANAS_TEST_REDIS_URL`` or a throwaway server."""
    url = os.environ.get("BANANAS_TEST_REDIS_URL")
    if url:
        yield url
        return
    server = RedisServer(**kwargs).start()  # type: ignore[arg-type]
    try:
        yield server.url
    finally:
        server.stop()


@contextlib.contextmanager
def postgres_server(**kwargs: object) -> Iterator[str]:
    """A PostgreSQL URL for the tests: ``BANANAS_TEST_POSTGRES_URL`` or a throwaway cluster."""
    url = os.environ.get("BANANAS_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    server = PostgresServer(**kwargs).start()  # type: ignore[arg-type]
    try:
        yield server.url
    finally:
        server.stop()

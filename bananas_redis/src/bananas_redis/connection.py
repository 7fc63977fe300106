"""Redis connections: URL forms, Lua scripts by SHA, and retry with backoff on connection loss.

URLs: ``redis://`` and ``rediss://`` (TLS) as redis-py reads them;
``redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]``;
``redis+cluster://[:password@]host:port[,host:port...]``.
Bananas settings in the query string (``namespace``, ``retry_for``) are taken out before
redis-py sees the URL.

Every URL gives an asyncio client (what the backend runs on) and, on demand, a blocking one
with the same settings: the synchronous :class:`bananas.Client` enqueues through it from the
caller's own thread instead of hopping to its event loop thread and back.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.resources
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel
from bananas.backend import BackendOptions, redact_url
from bananas.errors import BackendUnavailable, ConfigError
from redis.commands.core import AsyncScript, Script
from redis.exceptions import ClusterDownError, NoScriptError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bananas_redis.keys import DEFAULT_NAMESPACE, Keys

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:  # the optional C extension (bananas-redis[hiredis]); redis-py's wrapper around it costs ~3 us more
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - depends on the extra
    _hiredis_pack = None

__all__ = ["BANANAS_PARAMS", "Connection", "RETRYABLE", "load_lua"]

log = logging.getLogger("bananas.redis")
T = TypeVar("T")

BANANAS_PARAMS = frozenset({"namespace", "retry_for"})
"""Query parameters that configure Bananas, not redis-py."""

TIMEOUTS: dict[str, Any] = {"socket_timeout": 10.0, "socket_connect_timeout": 5.0}
"""Defaults so a hung server raises (and is retried) instead of blocking forever; the URL's own win."""

RETRYABLE = (RedisConnectionError, RedisTimeoutError, ClusterDownError, TryAgainError, OSError)

AnyRedis = Any
"""A redis.asyncio Redis or RedisCluster client (typed loosely: their stubs disagree)."""


INCLUDE = "--#include "


@functools.cache
def load_lua(name: str) -> str:
    """The text of ``lua/<name>.lua`` (package data), read once; a line ``--#include other``
    is replaced by the text of ``lua/other.lua`` (scripts cannot call each other)."""
    text = importlib.resources.files("bananas_redis").joinpath("lua", f"{name}.lua").read_text("utf-8")
    lines = [load_lua(line[len(INCLUDE) :].strip()) if line.startswith(INCLUDE) else line for line in text.splitlines()]
    return "\n".join(lines) + "\n"


def _hosts(netloc: str, default_port: int) -> tuple[str | None, list[tuple[str, int]]]:
    password = None
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        password = unquote(auth.split(":", 1)[1]) if ":" in auth else unquote(auth) or None
    out: list[tuple[str, int]] = []
    for part in netloc.split(","):
        if not part:
            continue
        host, _, port = part.rpartition(":") if part.count(":") == 1 else (part, "", "")
        try:
            out.append((host or part, int(port) if port else default_port))
        except ValueError:
            raise ConfigError(f"invalid port in Redis host {part!r}: use host:port") from None
    if not out:
        raise ConfigError("the Redis URL names no host: use SCHEME://host:port[,host:port...]")
    return password, out


def make_client(url: str, *, blocking: bool = False) -> AnyRedis:
    """A redis-py client for ``url`` (without Bananas query parameters): asyncio, or
    with ``blocking=True`` the thread-safe synchronous client with the same settings."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in BANANAS_PARAMS]
    clean = urlunsplit(parts._replace(query=urlencode(query)))
    if scheme in ("redis", "rediss", "unix"):
        # A blocking pool: callers beyond max_connections wait for a free connection instead
        # of failing with "Too many connections" (redis-py's default pool raises).
        lib: Any = redis if blocking else aioredis
        pool = lib.BlockingConnectionPool.from_url(
            clean, decode_responses=False, max_connections=100, timeout=30, **TIMEOUTS
        )
        return lib.Redis.from_pool(pool)
    if scheme == "redis+cluster":
        cluster: Any = redis.cluster if blocking else redis.asyncio.cluster
        password, hosts = _hosts(parts.netloc, 6379)
        nodes = [cluster.ClusterNode(h, p) for h, p in hosts]
        return cluster.RedisCluster(startup_nodes=nodes, password=password, **TIMEOUTS)
    if scheme == "redis+sentinel":
        sentinels: Any = redis.sentinel if blocking else redis.asyncio.sentinel
        password, hosts = _hosts(parts.netloc, 26379)
        path = [p for p in parts.path.split("/") if p]
        if not path:
            raise ConfigError(
                "a redis+sentinel:// URL needs the service name: redis+sentinel://host:26379/mymaster[/db]"
            )
        db = int(path[1]) if len(path) > 1 else 0
        sentinel = sentinels.Sentinel(hosts, password=password, **TIMEOUTS)
        return sentinel.master_for(path[0], db=db, password=password, **TIMEOUTS)
    raise ConfigError(f"unsupported Redis URL scheme {scheme!r}: use redis, rediss, redis+sentinel or redis+cluster")


class _Backoff:
    """The retry policy of :meth:`Connection.run`: the next delay after a connection error,
    or :class:`BackendUnavailable` once ``retry_for`` seconds are used up."""

    def __init__(self, conn: Connection, what: str) -> None:
        self.conn, self.what = conn, what
        self.delay = 0.05
        self.deadline = time.monotonic() + conn.retry_for

    def after(self, exc: Exception) -> float:
        delay = self.delay
        if time.monotonic() + delay > self.deadline:
            raise BackendUnavailable(
                f"Redis at {self.conn.redacted} is unreachable ({self.what}): {exc}; "
                f"gave up after retrying for {self.conn.retry_for:g}s"
            ) from exc
        log.warning("Redis at %s: %s during %s; retrying in %.2fs", self.conn.redacted, exc, self.what, delay)
        self.delay = min(delay * 2, 2.0)
        return delay


class Connection:
    """One client (opened lazily), the namespace's keys, scripts, and the retry policy.

    :meth:`run` retries an operation on connection loss with exponential backoff (50 ms
    doubling to 2 s) for up to ``retry_for`` seconds (extra ``retry_for``, default 30), then
    raises :class:`BackendUnavailable` with the redacted URL. Only operations that are safe
    to repeat are run through it; every Lua script here is written to be (see queue.py).
    """

    def __init__(self, url: str, options: BackendOptions) -> None:
        self.url = url
        self.redacted = redact_url(url)
        self.options = options
        self.keys = Keys(options.extra.get("namespace", DEFAULT_NAMESPACE))  # validated by Keys
        try:
            self.retry_for = float(options.extra.get("retry_for", 30.0))
        except (TypeError, ValueError):
            raise ConfigError(f"retry_for must be a number of seconds, got {options.extra['retry_for']!r}") from None
        self._client: AnyRedis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._blocking: Any = None
        self._blocking_scripts: dict[str, Script] = {}
        self._blocking_lock = threading.Lock()
        self._idle: list[Any] = []  # blocking connections of our own, free for the next call
        self._idle_pid = os.getpid()
        self.is_cluster = urlsplit(url).scheme.lower() == "redis+cluster"
        self.closed = False

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = make_client(self.url)
        return self._client

    @property
    def blocking_client(self) -> Any:
        """The synchronous client (opened on first use, shared by threads), for callers
        without an event loop; see :meth:`run_blocking`."""
        if self._blocking is None:
            with self._blocking_lock:
                if self.closed:
                    raise RuntimeError("this Redis backend is closed")
                if self._blocking is None:
                    self._blocking = make_client(self.url, blocking=True)
        return self._blocking

    def now(self) -> float:
        """The backend clock (never the server's)."""
        return float(self.options.clock())

    def script(self, name: str) -> AsyncScript:
        """The named Lua script, registered once; called by SHA with a NOSCRIPT fallback."""
        found = self._scripts.get(name)
        if found is None:
            found = self._scripts[name] = self.client.register_script(load_lua(name))
        return found

    def blocking_script(self, name: str) -> Script:
        """:meth:`script` for :attr:`blocking_client`."""
        found = self._blocking_scripts.get(name)
        if found is None:
            found = self._blocking_scripts[name] = self.blocking_client.register_script(load_lua(name))
        return found

    def blocking_eval(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """Run the named Lua script by SHA (loading it on NOSCRIPT) from the caller's thread;
        wrap in :meth:`run_blocking` for retries. See :meth:`blocking_command`."""
        script = self.blocking_script(name)
        if self.is_cluster:
            return script(keys=keys, args=args, client=self.blocking_client)
        try:
            return self.blocking_command("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            self.blocking_command("SCRIPT", "LOAD", script.script)
            return self.blocking_command("EVALSHA", script.sha, len(keys), *keys, *args)

    def blocking_command(self, *args: Any) -> Any:
        """Send one command from the caller's thread and return its raw reply (not on Cluster).

        redis-py's command path (a pool checkout under a lock, the retry wrapper, response
        callbacks) costs ~45 us per call here, as much as the round trip itself; this takes a
        connection from a free list of our own (one per thread calling at the same moment),
        writes the command and reads the reply. It is still redis-py's ``Connection``, so TLS
        and Sentinel work as before.
        """
        if self._idle_pid != os.getpid():  # forked: the parent's sockets are not ours to use
            self._idle, self._idle_pid = [], os.getpid()
        try:
            conn = self._idle.pop()
        except IndexError:
            conn = self.blocking_client.connection_pool.get_connection()
        try:
            conn.send_packed_command([_hiredis_pack(args)] if _hiredis_pack is not None else conn.pack_command(*args))
            reply = conn.read_response()
        except ResponseError:  # an error reply: the exchange is complete, the connection fine
            self._idle.append(conn)
            raise
        except BaseException:  # a reply may still be on its way: the next call starts afresh
            conn.disconnect()
            self._idle.append(conn)
            raise
        self._idle.append(conn)
        return reply

    async def run(self, op: Callable[[], Awaitable[T]], what: str = "operation") -> T:
        """Run ``op`` (repeat-safe), retrying on connection loss; raise BackendUnavailable when it stays down."""
        backoff = None  # made on the first failure: retry_for counts from there
        while True:
            try:
                return await op()
            except RETRYABLE as exc:
                backoff = backoff or _Backoff(self, what)
                await asyncio.sleep(backoff.after(exc))

    def run_blocking(self, op: Callable[[], T], what: str = "operation") -> T:
        """:meth:`run` for a blocking ``op`` (one on :attr:`blocking_client`), in the caller's thread."""
        backoff = None
        while True:
            try:
                return op()
            except RETRYABLE as exc:
                backoff = backoff or _Backoff(self, what)
                time.sleep(backoff.after(exc))

    async def call(self, name: str, keys: list[str], args: list[Any], what: str = "") -> Any:
        """Run a Lua script through :meth:`run`."""
        script = self.script(name)
        return await self.run(lambda: script(keys=keys, args=args), what or name)

    async def batch(self, name: str, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run a script once per ``(keys, args)`` in one round trip; return the replies in order.

        A pipeline on a single server; on Cluster (whose pipelines refuse EVALSHA) the calls
        are sent concurrently instead.
        """
        script = self.script(name)

        async def once() -> list[Any]:
            if self.is_cluster:
                return list(await asyncio.gather(*(script(keys=k, args=a) for k, a in calls)))
            async with self.client.pipeline(transaction=False) as pipe:
                for keys, args in calls:
                    await script(keys=keys, args=args, client=pipe)
                return list(await pipe.execute())

        return await self.run(once, name)

    async def close(self) -> None:
        if self.closed:
            return
        with self._blocking_lock:
            self.closed = True
            blocking, self._blocking = self._blocking, None
            self._idle = []  # taken from blocking's pool: its close() disconnects them
        if blocking is not None:
            blocking.close()
        if self._client is not None:
            await self._client.aclose()

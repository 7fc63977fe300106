"""Redis connections: URL forms, Lua scripts by SHA, and retry with backoff on connection loss.

URLs: ``redis://`` and ``rediss://`` (TLS) as redis-py reads them;
``redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]``;
``redis+cluster://[:password@]host:port[,host:port...]``.
Bananas settings in the query string (``namespace``, ``retry_for``, ``wait_replicas``,
``wait_timeout``) are taken out before redis-py sees the URL.

Failover. A Sentinel-managed client asks the sentinels for the master's address at most
every :data:`MASTER_CHECK_SECONDS` (on the next operation, no extra round trip otherwise) and
on every retry; when the address changed, every pooled connection (the fast path's too) is
closed, so nothing keeps writing to a demoted master. Replies that mean "this node no longer
takes writes" (``READONLY``, ``NOREPLICAS``, ``UNBLOCKED``, ``MASTERDOWN``) are retried like
a lost connection, after the same re-discovery. On Cluster, redis-py follows MOVED/ASK and
re-reads the slot map; the same replies are retried with backoff.

Every URL gives an asyncio client (what the backend runs on) and, on demand, a blocking one
with the same settings: the synchronous :class:`bananas.Client` enqueues through it from the
caller's own thread instead of hopping to its event loop thread and back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.resources
import inspect
import logging
import math
import os
import re
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
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bananas_redis.keys import DEFAULT_NAMESPACE, Keys

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:  # the optional C extension (bananas-redis[hiredis]); redis-py's wrapper around it costs ~3 us more
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - depends on the extra
    _hiredis_pack = None

__all__ = ["BANANAS_PARAMS", "Connection", "RETRYABLE", "ReplicasBehind", "load_lua"]

log = logging.getLogger("bananas.redis")
T = TypeVar("T")

BANANAS_PARAMS = frozenset({"namespace", "retry_for", "wait_replicas", "wait_timeout"})
"""Query parameters that configure Bananas, not redis-py."""

MASTER_CHECK_SECONDS = 0.5
"""How often (at most) a Sentinel-managed client re-asks the sentinels for the master."""

FAILOVER_REPLIES = ("READONLY", "NOREPLICAS", "UNBLOCKED", "MASTERDOWN")
"""Error replies of a node that no longer takes writes (demoted, or cut off from its replicas
under ``min-replicas-to-write``): nothing was written, the operation is retried elsewhere."""

TIMEOUTS: dict[str, Any] = {"socket_timeout": 10.0, "socket_connect_timeout": 5.0}
"""Defaults so a hung server raises (and is retried) instead of blocking forever; the URL's own win."""

RETRYABLE = (RedisConnectionError, RedisTimeoutError, ClusterDownError, TryAgainError, OSError)

AnyRedis = Any
"""A redis.asyncio Redis or RedisCluster client (typed loosely: their stubs disagree)."""


def is_failover_reply(exc: BaseException) -> bool:
    """Whether ``exc`` is an error reply of :data:`FAILOVER_REPLIES` (also as a script's error)."""
    if isinstance(exc, ReadOnlyError):  # redis-py drops the READONLY code from the text
        return True
    if not isinstance(exc, ResponseError) or isinstance(exc, NoScriptError):
        return False
    text = str(exc)
    return text.startswith(FAILOVER_REPLIES) or any(f"-{code} " in text for code in FAILOVER_REPLIES)


_REPR = re.compile(r"<[A-Za-z_]\w*(?:\.\w+)+")
_HOST_PORT = re.compile(r"host=([^,()<>\s]+),\s*port=(\d+)")


def describe(exc: BaseException) -> str:
    """``exc`` as one short line fit for a log: redis-py client objects that its messages
    embed (a sentinel that could not be asked, say) are replaced by their ``host:port``."""
    text = str(exc) or type(exc).__name__
    out, pos = [], 0
    while (m := _REPR.search(text, pos)) is not None:
        depth, end = 0, m.start()
        while end < len(text):  # the whole nested <...(<...>)...> repr
            depth += {"<": 1, ">": -1}.get(text[end], 0)
            end += 1
            if depth == 0:
                break
        found = _HOST_PORT.search(text, m.start(), end)
        out += [text[pos : m.start()], f"{found[1]}:{found[2]}" if found else "a Redis client"]
        pos = end
    out.append(text[pos:])
    line = " ".join("".join(out).split())
    return line if len(line) <= 500 else line[:497] + "..."


def _whole(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a whole number >= 0, got {value!r}")
    try:
        number = int(value) if isinstance(value, int) else int(str(value).strip(), 10)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number >= 0, got {value!r}") from None
    if number < 0:
        raise ConfigError(f"{name} must be a whole number >= 0, got {value!r}")
    return number


def _seconds(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{name} must be a number of seconds > 0, got {value!r}")
    return number


class _ReplicaWait(RedisConnectionError):
    """Internal: a direct call to a Cluster node met MOVED/ASK; retried after the slot map is re-read."""


class ReplicasBehind(RedisConnectionError):
    """Fewer than ``wait_replicas`` replicas confirmed a write within ``wait_timeout``: the write
    may be lost if the master fails now. :meth:`Connection.run_replicated` retries it (the
    scripts it runs are safe to repeat) like a lost connection."""


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
                f"Redis at {self.conn.redacted} is unreachable ({self.what}): {describe(exc)}; "
                f"gave up after retrying for {self.conn.retry_for:g}s"
            ) from exc
        log.warning("Redis at %s: %s during %s; retrying in %.2fs", self.conn.redacted, describe(exc), self.what, delay)
        self.delay = min(delay * 2, 2.0)
        return delay


def _address(address: Any) -> str:
    host, port = address
    return f"{host.decode() if isinstance(host, bytes) else host}:{port}"


@functools.cache
def _takes_command_name(get_connection: Callable[..., Any]) -> bool:
    """Whether a pool's ``get_connection`` still requires the command name (redis-py < 5.3)."""
    param = inspect.signature(get_connection).parameters.get("command_name")
    return param is not None and param.default is inspect.Parameter.empty


def _checkout(pool: Any) -> Any:
    """A connection from a blocking redis-py pool, on every redis-py since the declared floor."""
    if _takes_command_name(type(pool).get_connection):
        return pool.get_connection("EVALSHA")
    return pool.get_connection()


class Connection:
    """One client (opened lazily), the namespace's keys, scripts, and the retry policy.

    :meth:`run` retries an operation on connection loss, and on the replies of a node that
    no longer takes writes (:data:`FAILOVER_REPLIES`), with exponential backoff (50 ms
    doubling to 2 s) for up to ``retry_for`` seconds (extra ``retry_for``, default 30), then
    raises :class:`BackendUnavailable` with the redacted URL. Only operations that are safe
    to repeat are run through it; every Lua script here is written to be (see queue.py).
    On Sentinel it also follows the master (see the module docs). ``wait_replicas`` (a whole
    number >= 0, default 0) and ``wait_timeout`` (seconds, default 1) configure the
    replicated calls (:meth:`eval_replicated`, :meth:`run_replicated`, :meth:`blpop_replicated`).
    """

    def __init__(self, url: str, options: BackendOptions) -> None:
        self.url = url
        self.redacted = redact_url(url)
        self.options = options
        extra = options.extra
        self.keys = Keys(extra.get("namespace", DEFAULT_NAMESPACE))  # validated by Keys
        try:
            self.retry_for = float(extra.get("retry_for", 30.0))
        except (TypeError, ValueError):
            raise ConfigError(f"retry_for must be a number of seconds, got {extra['retry_for']!r}") from None
        self.wait_replicas = _whole("wait_replicas", extra.get("wait_replicas", 0))
        self.wait_timeout = _seconds("wait_timeout", extra.get("wait_timeout", 1.0))
        self._client: AnyRedis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._blocking: Any = None
        self._blocking_scripts: dict[str, Script] = {}
        self._blocking_lock = threading.Lock()
        self._idle: list[Any] = []  # blocking connections of our own, free for the next call
        self._idle_pid = os.getpid()
        scheme = urlsplit(url).scheme.lower()
        self.is_cluster = scheme == "redis+cluster"
        self.is_sentinel = scheme == "redis+sentinel"
        self.closed = False
        self.generation = 0
        """Bumped whenever the asyncio client drops its connections after a failover: holders
        of a pub/sub connection compare it and subscribe again on the new master."""
        self._master: Any = None  # the address the sentinels named last (asyncio side)
        self._next_check = 0.0
        self._checking = False
        self._blocking_master: Any = None  # the same for the blocking client
        self._blocking_next_check = 0.0
        self._blocking_check_lock = threading.Lock()
        self._node_clients: dict[tuple[str, int], Any] = {}  # Cluster: a plain client per node (replica waits)
        self._blocking_node_clients: dict[tuple[str, int], Any] = {}

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

    # -- following the master -------------------------------------------------------------

    async def _follow_master(self) -> None:
        """Sentinel: ask the sentinels for the master; if it moved, close every pooled
        connection (in use or not) so that the next command connects to the new one."""
        if self._checking:
            return
        self._checking = True
        try:
            pool = self.client.connection_pool
            address = await pool.sentinel_manager.discover_master(pool.service_name)
            self._next_check = time.monotonic() + MASTER_CHECK_SECONDS
            if self._master is not None and address != self._master:
                log.warning(
                    "Redis at %s: the master moved from %s to %s; reconnecting",
                    self.redacted, _address(self._master), _address(address),
                )  # fmt: skip
                await self._drop_connections()
            self._master = address
        finally:
            self._checking = False

    async def _drop_connections(self) -> None:
        """Close the asyncio client's pooled connections (not on Cluster: redis-py re-reads the slot map)."""
        self.generation += 1
        if not self.is_cluster and self._client is not None:
            await self._client.connection_pool.disconnect()

    def _follow_master_blocking(self) -> None:
        """:meth:`_follow_master` for the blocking client (one thread checks at a time)."""
        if not self._blocking_check_lock.acquire(blocking=False):
            return
        try:
            pool = self.blocking_client.connection_pool
            address = pool.sentinel_manager.discover_master(pool.service_name)
            self._blocking_next_check = time.monotonic() + MASTER_CHECK_SECONDS
            if self._blocking_master is not None and address != self._blocking_master:
                log.warning(
                    "Redis at %s: the master moved from %s to %s; reconnecting",
                    self.redacted, _address(self._blocking_master), _address(address),
                )  # fmt: skip
                self._drop_blocking_connections()
            self._blocking_master = address
        finally:
            self._blocking_check_lock.release()

    def _drop_blocking_connections(self) -> None:
        if not self.is_cluster and self._blocking is not None:
            idle, self._idle = self._idle, []
            for conn in idle:
                self._discard(conn)
            self._blocking.connection_pool.disconnect()  # also those other threads are using now

    # -- the blocking fast path -----------------------------------------------------------

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

    def _take(self) -> Any:
        if self._idle_pid != os.getpid():  # forked: the parent's sockets are not ours to use
            self._idle, self._idle_pid = [], os.getpid()
        try:
            return self._idle.pop()
        except IndexError:
            return _checkout(self.blocking_client.connection_pool)

    def blocking_command(self, *args: Any) -> Any:
        """Send one command from the caller's thread and return its raw reply (not on Cluster).

        redis-py's command path (a pool checkout under a lock, the retry wrapper, response
        callbacks) costs ~45 us per call here, as much as the round trip itself; this takes a
        connection from a free list of our own (one per thread calling at the same moment),
        writes the command and reads the reply. It is still redis-py's ``Connection`` from the
        client's pool, so TLS and Sentinel work as before, and a failover closes it too.
        """
        conn = self._take()
        try:
            conn.send_packed_command([_hiredis_pack(args)] if _hiredis_pack is not None else conn.pack_command(*args))
            reply = conn.read_response()
        except ResponseError:  # an error reply: the exchange is complete, the connection fine
            self._idle.append(conn)
            raise
        except BaseException:  # a reply may still be on its way: the next call starts afresh
            self._discard(conn)
            raise
        self._idle.append(conn)
        return reply

    def _discard(self, conn: Any) -> None:
        """Close a fast-path connection and hand it back to the pool, whose next checkout
        connects it again the pool's way (on Sentinel: to the master the sentinels name now;
        reconnecting it ourselves would reuse the old address)."""
        conn.disconnect()
        with contextlib.suppress(Exception):
            self.blocking_client.connection_pool.release(conn)

    def _blocking_exchange(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Send ``commands`` together on one fast-path connection; their replies in order,
        an error reply as its exception object (not on Cluster)."""
        conn = self._take()
        replies: list[Any] = []
        try:
            if _hiredis_pack is not None:
                conn.send_packed_command([_hiredis_pack(c) for c in commands])
            else:
                conn.send_packed_command(conn.pack_commands(commands))
            for _ in commands:
                try:
                    replies.append(conn.read_response())
                except ResponseError as exc:
                    replies.append(exc)
        except BaseException:
            self._discard(conn)
            raise
        self._idle.append(conn)
        return replies

    # -- replicated writes ----------------------------------------------------------------

    def _wait_command(self) -> tuple[Any, ...]:
        return ("WAIT", self.wait_replicas, max(1, int(self.wait_timeout * 1000)))

    def check_replicas(self, acked: Any, what: str) -> None:
        """Raise :class:`BackendUnavailable` unless ``acked`` (WAIT's reply) reaches ``wait_replicas``."""
        if int(acked) < self.wait_replicas:
            raise BackendUnavailable(
                f"Redis at {self.redacted}: {what} was written to the master but only {int(acked)} of "
                f"{self.wait_replicas} replicas confirmed it within {self.wait_timeout:g}s (wait_replicas); "
                "it may be lost if the master fails now"
            )

    def _node_for(self, key: str, blocking: bool) -> Any:
        """Cluster: a plain client of the node that owns ``key``'s slot now (one per node)."""
        cluster = self.blocking_client if blocking else self.client
        node = cluster.get_node_from_key(key)
        clients = self._blocking_node_clients if blocking else self._node_clients
        found = clients.get((node.host, node.port))
        if found is None:
            lib: Any = redis if blocking else aioredis
            password, _ = _hosts(urlsplit(self.url).netloc, 6379)
            found = lib.Redis(host=node.host, port=node.port, password=password, **TIMEOUTS)
            clients[(node.host, node.port)] = found
        return found

    @staticmethod
    def _redirected(replies: list[Any]) -> None:
        for reply in replies:
            if isinstance(reply, (MovedError, AskError)):
                raise _ReplicaWait(f"the slot moved ({reply}); retrying on its new owner")

    async def _direct(self, key: str) -> Any:
        """The client whose pipelines reach the master of ``key`` on one connection (Cluster:
        a plain client of the slot's owner)."""
        if not self.is_cluster:
            return self.client
        if not self._node_clients:
            await self.client.initialize()
        try:
            return self._node_for(key, blocking=False)
        except Exception as exc:  # the slot map is being rebuilt
            raise _ReplicaWait(f"no owner known for the slot ({describe(exc)})") from exc

    def _marker(self) -> tuple[Any, ...]:
        """A short-lived write that moves this connection's replication offset to "now": a
        ``WAIT`` after it covers everything the master holds, also what an earlier call wrote."""
        return ("SET", f"{self.keys.ns}:replicated", b"1", "PX", 1000)

    async def eval_replicated(
        self, name: str, keys: list[str], args: list[Any], *, confirm: bool = False
    ) -> tuple[Any, int]:
        """The named script's reply and how many replicas confirmed its writes: the script and
        ``WAIT wait_replicas wait_timeout`` go out together on one connection (one round trip
        plus the replicas' acknowledgement). With ``confirm`` a marker write goes between them,
        so a script that found its work already done (a retry) still learns whether the
        replicas hold it. Wrap in :meth:`run` (MOVED/ASK are retried there)."""
        script = self.script(name)
        client = await self._direct(keys[0])
        try:
            for _ in range(2):
                async with client.pipeline(transaction=False) as pipe:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                    if confirm:
                        pipe.execute_command(*self._marker())
                    pipe.execute_command(*self._wait_command())
                    replies = await pipe.execute(raise_on_error=False)
                if not isinstance(replies[0], NoScriptError):
                    break
                await client.script_load(script.script)
        except RETRYABLE:
            await self._owner_unreachable(keys[0])
            raise
        if confirm:
            del replies[1]  # the marker's OK (or its error: raised below all the same)
        return await self._replicated_replies(replies, keys[0])

    async def run_replicated(self, name: str, keys: list[str], args: list[Any], what: str) -> Any:
        """Run the named script (safe to repeat) through :meth:`run` until ``wait_replicas``
        replicas hold what it wrote or found (see ``confirm`` of :meth:`eval_replicated`):
        a short count is retried like a lost connection, on whichever node is the master
        then, and :class:`BackendUnavailable` is raised once ``retry_for`` is used up."""

        async def once() -> Any:
            reply, acked = await self.eval_replicated(name, keys, args, confirm=True)
            if acked < self.wait_replicas:
                raise ReplicasBehind(
                    f"{what} was written but only {acked} of {self.wait_replicas} replicas confirmed it "
                    f"within {self.wait_timeout:g}s (wait_replicas)"
                )
            return reply

        return await self.run(once, what)

    async def blpop_replicated(self, key: str, timeout: float) -> tuple[Any, int]:
        """``BLPOP key timeout``, then a marker write and ``WAIT`` on the same connection: the
        entry popped (or None) and how many replicas hold the pop (0 when the marker or the
        wait failed after an entry was popped: the pop may not survive a failover). Wrap in
        :meth:`run`."""
        client = await self._direct(key)
        try:
            async with client.pipeline(transaction=False) as pipe:
                pipe.blpop([key], timeout=timeout)
                pipe.execute_command(*self._marker())
                pipe.execute_command(*self._wait_command())
                replies = await pipe.execute(raise_on_error=False)
        except RETRYABLE:
            await self._owner_unreachable(key)
            raise
        if replies[0] is None or isinstance(replies[0], Exception):
            await self._replicated_replies(replies[:1] + replies[2:], key)  # raises a failed pop
            return None, 0
        if any(isinstance(r, Exception) for r in replies[1:]):
            return replies[0], 0
        return replies[0], int(replies[2])

    async def _owner_unreachable(self, key: str) -> None:
        """Cluster: the direct connection to ``key``'s slot owner failed (the node may be dead,
        its replica promoted). Send a command for ``key`` through the cluster client, which
        re-reads the slot map after a connection error, so the retry goes to the owner the
        cluster names now instead of the dead node's address forever."""
        if self.is_cluster:
            with contextlib.suppress(Exception):
                await self.client.exists(key)

    def _blocking_owner_unreachable(self, key: str) -> None:
        """:meth:`_owner_unreachable` for the blocking client."""
        if self.is_cluster:
            with contextlib.suppress(Exception):
                self.blocking_client.exists(key)

    async def _replicated_replies(self, replies: list[Any], key: str) -> tuple[Any, int]:
        if self.is_cluster and any(isinstance(r, (MovedError, AskError)) for r in replies):
            with contextlib.suppress(Exception):
                await self.client.exists(key)  # follows the redirect: redis-py learns the new owner
            self._redirected(replies)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies[0], int(replies[1])

    async def confirm_replicated(self, key: str) -> int:
        """How many replicas hold everything written so far on the master of ``key`` (a
        short-lived marker write and WAIT on one connection): for a write whose retry found
        it already applied, whose connection, and so WAIT, is gone."""
        client = self._node_for(key, blocking=False) if self.is_cluster else self.client
        try:
            async with client.pipeline(transaction=False) as pipe:
                pipe.execute_command(*self._marker())
                pipe.execute_command(*self._wait_command())
                replies = await pipe.execute(raise_on_error=False)
        except RETRYABLE:
            await self._owner_unreachable(key)
            raise
        return (await self._replicated_replies(replies, key))[1]

    def blocking_eval_replicated(self, name: str, keys: list[str], args: list[Any]) -> tuple[Any, int]:
        """:meth:`eval_replicated` from the caller's thread (the fast path off Cluster)."""
        script = self.blocking_script(name)
        call = ("EVALSHA", script.sha, len(keys), *keys, *args)
        for _ in range(2):
            if self.is_cluster:
                try:
                    client = self._node_for(keys[0], blocking=True)
                except Exception as exc:
                    raise _ReplicaWait(f"no owner known for the slot ({describe(exc)})") from exc
                pipe = client.pipeline(transaction=False)
                pipe.execute_command(*call)
                pipe.execute_command(*self._wait_command())
                try:
                    replies = pipe.execute(raise_on_error=False)
                except RETRYABLE:
                    self._blocking_owner_unreachable(keys[0])
                    raise
            else:
                replies = self._blocking_exchange(call, self._wait_command())
            if not isinstance(replies[0], NoScriptError):
                break
            if self.is_cluster:
                client.script_load(script.script)
            else:
                self.blocking_command("SCRIPT", "LOAD", script.script)
        return self._blocking_replicated_replies(replies, keys[0])

    def _blocking_replicated_replies(self, replies: list[Any], key: str) -> tuple[Any, int]:
        if self.is_cluster and any(isinstance(r, (MovedError, AskError)) for r in replies):
            with contextlib.suppress(Exception):
                self.blocking_client.exists(key)
            self._redirected(replies)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies[0], int(replies[1])

    def blocking_confirm_replicated(self, key: str) -> int:
        """:meth:`confirm_replicated` from the caller's thread."""
        marker = self._marker()
        if self.is_cluster:
            pipe = self._node_for(key, blocking=True).pipeline(transaction=False)
            pipe.execute_command(*marker)
            pipe.execute_command(*self._wait_command())
            try:
                replies = pipe.execute(raise_on_error=False)
            except RETRYABLE:
                self._blocking_owner_unreachable(key)
                raise
        else:
            replies = self._blocking_exchange(marker, self._wait_command())
        return self._blocking_replicated_replies(replies, key)[1]

    # -- retries --------------------------------------------------------------------------

    async def run(self, op: Callable[[], Awaitable[T]], what: str = "operation") -> T:
        """Run ``op`` (repeat-safe), retrying on connection loss and failover replies (after
        following the master); raise BackendUnavailable when it stays down."""
        backoff = None  # made on the first failure: retry_for counts from there
        while True:
            try:
                if self.is_sentinel and time.monotonic() >= self._next_check:
                    await self._follow_master()
                return await op()
            except RETRYABLE as exc:
                backoff = backoff or _Backoff(self, what)
                self._next_check = 0.0
                await asyncio.sleep(backoff.after(exc))
            except ResponseError as exc:
                if not is_failover_reply(exc):
                    raise
                backoff = backoff or _Backoff(self, what)
                self._next_check = 0.0
                await self._drop_connections()
                await asyncio.sleep(backoff.after(exc))

    def run_blocking(self, op: Callable[[], T], what: str = "operation") -> T:
        """:meth:`run` for a blocking ``op`` (one on :attr:`blocking_client`), in the caller's thread."""
        backoff = None
        while True:
            try:
                if self.is_sentinel and time.monotonic() >= self._blocking_next_check:
                    self._follow_master_blocking()
                return op()
            except RETRYABLE as exc:
                backoff = backoff or _Backoff(self, what)
                self._blocking_next_check = 0.0
                time.sleep(backoff.after(exc))
            except ResponseError as exc:
                if not is_failover_reply(exc):
                    raise
                backoff = backoff or _Backoff(self, what)
                self._blocking_next_check = 0.0
                self._drop_blocking_connections()
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
            blocking_nodes, self._blocking_node_clients = list(self._blocking_node_clients.values()), {}
        for node in blocking_nodes:
            node.close()
        if blocking is not None:
            blocking.close()
        nodes, self._node_clients = list(self._node_clients.values()), {}
        for node in nodes:
            await node.aclose()
        if self._client is not None:
            await self._client.aclose()

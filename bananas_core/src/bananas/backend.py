"""A connected backend: the queue, results, cron storage and worker registry behind one URL."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from types import TracebackType
from typing import Any
from urllib.parse import unquote_plus

import attrs

from bananas.capabilities import Capability, require
from bananas.clock import Clock, system_clock
from bananas.errors import ConfigError
from bananas.protocols import Queue, ResultBackend, Scheduler, WorkerRegistry

__all__ = ["NAMESPACE_RULE", "Backend", "BackendOptions", "redact_url", "seconds_option", "validate_namespace"]


def _positive(_inst: object, attr: attrs.Attribute[float], value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{attr.name} must be a number of seconds > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class BackendOptions:
    """Settings every backend honours. Backend-specific settings arrive in ``extra``
    (from the URL's query string and from keyword arguments to :func:`bananas.connect`)."""

    clock: Clock = system_clock
    result_success_ttl: float = attrs.field(default=3600.0, validator=_positive)
    result_failure_ttl: float = attrs.field(default=86400.0, validator=_positive)
    completed_job_ttl: float = attrs.field(default=86400.0, validator=_positive)
    failed_job_ttl: float = attrs.field(default=7 * 86400.0, validator=_positive)
    extra: Mapping[str, Any] = attrs.field(factory=dict)


NAMESPACE_RULE = "1 to 64 characters, each an ASCII letter, a digit, '_', '-', '.', '{' or '}'"
"""What :func:`validate_namespace` accepts, in words (every backend applies the same rule)."""

_NAMESPACE = re.compile(r"[A-Za-z0-9_.{}-]{1,64}")


def seconds_option(extra: Mapping[str, Any], name: str) -> float | None:
    """The backend option ``name`` as a number of seconds > 0 (``None`` when not given); raises
    :class:`ConfigError` naming the option for anything else (a URL query gives strings)."""
    raw = extra.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 < value < math.inf:
        raise ConfigError(f"{name} must be a number of seconds > 0, got {raw!r}")
    return value


def validate_namespace(value: object) -> str:
    """``value`` if it is a valid namespace, else raise :class:`~bananas.errors.ConfigError`.

    A namespace is 1 to 64 characters, each an ASCII letter, a digit, ``_``, ``-``, ``.``,
    ``{`` or ``}`` (``{bananas}`` keeps every Redis Cluster key in one slot). No spaces, no
    glob characters (``*?[]``), no control characters, and no ``:``, the separator of Redis
    keys (``a`` and ``a:route:x`` would share keys). Namespaces are compared exactly:
    ``team-a``, ``team_a`` and ``Team.A`` are three isolated namespaces.
    """
    if not isinstance(value, str):
        raise ConfigError(f"invalid namespace {value!r}: it must be a string of {NAMESPACE_RULE}")
    if _NAMESPACE.fullmatch(value):
        return value
    if not value:
        problem = "it is empty"
    elif len(value) > 64:
        problem = f"it is {len(value)} characters long"
    else:
        bad = sorted({c for c in value if not _NAMESPACE.fullmatch(c)})
        problem = "it contains " + ", ".join(repr(c) for c in bad)
    raise ConfigError(f"invalid namespace {value!r}: {problem}; a namespace is {NAMESPACE_RULE}, for example 'team-a'")


_SECRET_WORDS = ("pass", "pwd", "secret", "token", "key", "credential", "auth")
_MASK = "***"
# Schemes whose user-only userinfo (``scheme://word@host``) is read as the password.
_PASSWORD_ONLY_USERINFO = ("redis", "rediss", "redis+sentinel", "redis+cluster", "unix")


def _is_secret(name: str) -> bool:
    name = unquote_plus(name).lower()
    return any(word in name for word in _SECRET_WORDS)


def _redact_query(query: str) -> str:
    """``query`` with the value of every secret-looking parameter replaced by ``***``."""
    out = []
    for item in re.split(r"([&;])", query):
        name, eq, _value = item.partition("=")
        out.append(f"{name}={_MASK}" if eq and _is_secret(name) else item)
    return "".join(out)


_PASSWORD_WITH_QUERY = re.compile(r"[^:/]*:(?![0-9]*(?:/|$))")  # 'user:' followed by no port
_AT_HOST = re.compile(r"@(?=[A-Za-z0-9._~%\[\]:,-]*(?:[/?#&;]|$))")
_NAME = re.compile(r"([^\s&;,?=]+)\s*=\s*")
_VALUE = re.compile(r"""'[^']*'?|"[^"]*"?|[^\s&;,]*""")


def _redact_loose(text: str) -> str:
    """Redaction of something that is not ``scheme://...``: everything up to the last ``@``
    before any ``?`` is hidden, and the value of every secret-looking ``name=value`` pair
    (``&``, ``;``, ``,`` or whitespace separated, as in a libpq ``key=value`` string)."""
    head, q_mark, query = text.partition("?")
    at = head.rfind("@")
    if at >= 0:
        head = _MASK + head[at:]
    text = head + q_mark + query
    out, pos = [], 0
    for m in _NAME.finditer(text):
        if m.start() >= pos and _is_secret(m.group(1)):
            value = _VALUE.match(text, m.end())
            out.append(text[pos : m.end()] + _MASK)
            pos = value.end() if value else m.end()
    return "".join(out) + text[pos:]


def redact_url(url: str) -> str:
    """``url`` fit to print: passwords become ``***``.

    Masked: the password of the userinfo (``user:***@``; the whole userinfo for Redis
    schemes, which read ``scheme://word@host`` as a password), also with several hosts
    (``redis+sentinel://:***@h1:26379,h2:26379/...``), and the value of every query
    parameter whose name suggests a secret (containing ``pass``, ``pwd``, ``secret``,
    ``token``, ``key``, ``credential`` or ``auth``; the name is kept). Not split by the URL
    rules of :mod:`urllib`, so a URL they reject is redacted too; text that is not
    ``scheme://...`` at all is redacted conservatively (all before an ``@`` is hidden).
    """
    url = str(url)
    scheme, sep, rest = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        return _redact_loose(url)
    # The userinfo ends at the last '@' before the first '=' of the query: a password may
    # hold '@', '/', '?' or '#' written unescaped, and a query value may hold '@'.
    q = rest.find("?")
    eq = rest.find("=", q) if q >= 0 else -1
    at = rest.rfind("@", 0, eq if eq >= 0 else len(rest))
    if at < 0 and q >= 0 and _PASSWORD_WITH_QUERY.match(rest[:q]):
        # 'user:pa?ss=word@host': what follows ':' is no port, so the '?' is the password's;
        # take the last '@' followed by something like a host (may hide more than needed).
        at = max((m.start() for m in _AT_HOST.finditer(rest, q)), default=-1)
    userinfo = ""
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1 :]
        user, colon, _password = userinfo.partition(":")
        if colon:
            userinfo = f"{user}:{_MASK}"
        elif scheme.lower() in _PASSWORD_ONLY_USERINFO and userinfo:
            userinfo = _MASK
        if "?" in _password or "?" in user:  # the query began inside the userinfo: mask on
            return f"{scheme}://{userinfo}@{_redact_query(rest)}"
        userinfo += "@"
    hosts, q_mark, query = rest.partition("?")
    return f"{scheme}://{userinfo}{hosts}{q_mark}{_redact_query(query)}"


class Backend:
    """What :func:`bananas.connect` returns: the storage parts behind one URL.

    ``queue``, ``results`` and ``workers`` always exist; ``scheduler`` only when the
    backend declares :attr:`Capability.CRON`. Close it (or use ``async with``) when done.
    A plugin's factory leaves ``capabilities`` out: :func:`bananas.connect` sets them from
    the backend's :class:`~bananas.plugins.BackendSpec`, their one declaration.
    """

    def __init__(
        self,
        *,
        name: str,
        url: str,
        queue: Queue,
        results: ResultBackend,
        workers: WorkerRegistry,
        scheduler: Scheduler | None = None,
        capabilities: frozenset[Capability] = frozenset(),
        options: BackendOptions | None = None,
    ) -> None:
        self.name = name
        self.url = redact_url(url)
        self.queue = queue
        self.results = results
        self.workers = workers
        self._scheduler = scheduler
        self.capabilities = frozenset(capabilities)
        self.options = options or BackendOptions()

    @property
    def clock(self) -> Clock:
        """The clock every time-dependent operation of this backend reads."""
        return self.options.clock

    @property
    def scheduler(self) -> Scheduler:
        """Cron storage; raises :class:`~bananas.errors.CapabilityNotSupported` without ``CRON``."""
        self.require(Capability.CRON, "cron schedules")
        assert self._scheduler is not None, f"{self.name} declares 'cron' but gave no scheduler"
        return self._scheduler

    def supports(self, capability: Capability) -> bool:
        """True if the backend declares ``capability``."""
        return capability in self.capabilities

    def require(self, capability: Capability, operation: str) -> None:
        """Raise :class:`~bananas.errors.CapabilityNotSupported` unless ``capability`` is declared."""
        require(self.capabilities, capability, backend=self.name, operation=operation)

    async def close(self) -> None:
        """Close every part once (parts may be one object). Idempotent."""
        seen: set[int] = set()
        for part in (self.queue, self.results, self.workers, self._scheduler):
            if part is not None and id(part) not in seen:
                seen.add(id(part))
                await part.close()

    async def __aenter__(self) -> Backend:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<Backend {self.name} {self.url}>"

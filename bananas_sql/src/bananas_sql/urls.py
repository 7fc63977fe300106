"""Bananas URLs to SQLAlchemy URLs, keeping our own options out of the driver's."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlencode, urlsplit

from bananas.backend import redact_url
from bananas.errors import ConfigError

OUR_OPTIONS = frozenset(
    {
        "namespace",
        "table_prefix",
        "schema",
        "retry_seconds",
        "busy_timeout",
        "poll_interval",
        "pool_size",
        "pool_pre_ping",
        "claim_sync_commit",
    }
)
"""Query parameters read by Bananas; any other reaches the database driver (PostgreSQL only)."""


def _split(url: str) -> tuple[str, str]:
    if "://" not in url:
        raise ConfigError(f"{redact_url(url)!r} is not a database URL; expected postgresql://... or sqlite:///path.db")
    scheme, rest = url.split("://", 1)
    return scheme.lower(), rest


def _postgres_parts(url: str) -> SplitResult:
    scheme, rest = _split(url)
    if scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise ConfigError(f"not a PostgreSQL URL: {scheme}://; use postgresql://user@host:port/database")
    parts = urlsplit("postgresql://" + rest)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in OUR_OPTIONS]
    return parts._replace(query=urlencode(query))


def _split_hosts(hosts: str) -> tuple[list[str], list[str]]:
    """``h1:p1,[::1]:p2,h3`` -> ``(["h1", "::1", "h3"], ["p1", "p2", ""])`` (percent-decoded)."""
    names, ports = [], []
    for item in hosts.split(","):
        match = re.fullmatch(r"\[(?P<v6>[^\]]*)\](?::(?P<p6>[^:]*))?|(?P<host>[^:]*)(?::(?P<port>[^:]*))?", item)
        if match is None:
            raise ConfigError(f"cannot read the host list {hosts!r} of a PostgreSQL URL; use host:port,host:port")
        names.append(unquote(match["v6"] if match["v6"] is not None else match["host"]))
        ports.append(unquote(match["p6"] or match["port"] or ""))
    return names, ports


def unsplit(parts: SplitResult) -> str:
    """``urlunsplit`` that keeps ``//`` with an empty host part (``postgresql:///db?host=/run``)."""
    text = f"{parts.scheme}://{parts.netloc}{parts.path}"
    return text + (f"?{parts.query}" if parts.query else "") + (f"#{parts.fragment}" if parts.fragment else "")


def postgres_sqlalchemy_url(url: str) -> str:
    """``postgresql://u@h:p/db?sslmode=...`` -> ``postgresql+psycopg://u@h:p/db?sslmode=...``.

    Several hosts (``postgresql://u@h1:p1,h2:p2/db?target_session_attrs=read-write``, as libpq
    reads them) become SQLAlchemy's ``?host=h1,h2&port=p1,p2``, which reaches libpq unchanged.
    """
    parts = _postgres_parts(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if "," not in hosts:
        return unsplit(parts._replace(scheme="postgresql+psycopg"))
    names, ports = _split_hosts(hosts)
    query = parse_qsl(parts.query)
    if any(k in ("host", "hostaddr", "port") for k, _ in query):
        raise ConfigError("a PostgreSQL URL lists hosts either before the database name or as host=..., not both")
    query += [("host", ",".join(names))] + ([("port", ",".join(ports))] if any(ports) else [])
    return unsplit(parts._replace(scheme="postgresql+psycopg", netloc=userinfo + at, query=urlencode(query)))


def postgres_conninfo(url: str) -> str:
    """A libpq connection URI without our options (for the psycopg connections, which bypass
    SQLAlchemy); several hosts stay as libpq reads them (``h1:p1,h2:p2``)."""
    return unsplit(_postgres_parts(url))


def sqlite_path(url: str) -> str:
    """The file path of ``sqlite:///relative.db`` or ``sqlite:////abs/path.db``."""
    scheme, rest = _split(url)
    if scheme != "sqlite":
        raise ConfigError(f"not a SQLite URL: {scheme}://; use sqlite:///relative.db or sqlite:////abs/path.db")
    path = urlsplit("sqlite://" + rest).path
    path = path[1:] if path.startswith("/") else path
    if not path or path == ":memory:" or rest.startswith("/:memory:"):
        raise ConfigError(
            "SQLite needs a file (workers share the queue through it): use sqlite:///relative.db "
            "or sqlite:////absolute/path.db, not an in-memory database"
        )
    return path


def sqlite_sqlalchemy_url(url: str) -> str:
    """``sqlite:///x.db`` -> ``sqlite+aiosqlite:///x.db``."""
    return "sqlite+aiosqlite:///" + sqlite_path(url)


def number(extra: Mapping[str, Any], key: str, default: float) -> float:
    """A positive number option from ``extra`` (URL query values arrive as strings)."""
    value = extra.get(key, default)
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if result <= 0:
        raise ConfigError(f"{key} must be > 0, got {value!r}")
    return result

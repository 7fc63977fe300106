"""Bananas URLs to SQLAlchemy URLs, keeping our own options out of the driver's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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
        "claim_sync_commit",
    }
)
"""Query parameters read by Bananas; any other reaches the database driver (PostgreSQL only)."""


def _split(url: str) -> tuple[str, str]:
    if "://" not in url:
        raise ConfigError(f"{redact_url(url)!r} is not a database URL; expected postgresql://... or sqlite:///path.db")
    scheme, rest = url.split("://", 1)
    return scheme.lower(), rest


def postgres_sqlalchemy_url(url: str) -> str:
    """``postgresql://u@h:p/db?sslmode=...`` -> ``postgresql+psycopg://u@h:p/db?sslmode=...``."""
    scheme, rest = _split(url)
    if scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise ConfigError(f"not a PostgreSQL URL: {scheme}://; use postgresql://user@host:port/database")
    parts = urlsplit("postgresql://" + rest)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in OUR_OPTIONS]
    return urlunsplit(parts._replace(scheme="postgresql+psycopg", query=urlencode(query)))


def postgres_conninfo(url: str) -> str:
    """A libpq connection URI (for the LISTEN connection, which bypasses SQLAlchemy)."""
    return "postgresql" + postgres_sqlalchemy_url(url)[len("postgresql+psycopg") :]


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

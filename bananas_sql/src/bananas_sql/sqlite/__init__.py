"""The SQLite backend: :mod:`~bananas_sql.sqlite.database` (the units of work, polling
wake-ups, a replaced file) on :mod:`~bananas_sql.sqlite.connection` (one ``sqlite3``
connection in one thread, with shared write transactions)."""

from __future__ import annotations

from bananas.backend import Backend, BackendOptions
from bananas.capabilities import Capability

from bananas_sql.backend import sql_backend
from bananas_sql.sqlite.database import SqliteDatabase


def connect_sqlite(url: str, options: BackendOptions, capabilities: frozenset[Capability]) -> Backend:
    """The SQLite backend for ``url`` (the file is opened on first use)."""
    return sql_backend("sqlite", SqliteDatabase(url, options), url, options, capabilities)

"""Bananas storage on SQL: PostgreSQL (``postgresql://``) and SQLite (``sqlite:///file.db``).

Backends are reached through :func:`bananas.connect`; this package adds the schema
command (:func:`upgrade`) and transactional submission on PostgreSQL
(:func:`enqueue_in_transaction`, :func:`enqueue_in_transaction_async`).

Layout, one module per concern:

- :mod:`~bananas_sql.plugin` (the ``bananas`` plugin; imports no driver), :mod:`~bananas_sql.urls`;
- :mod:`~bananas_sql.tables` (names, states, the schema version), :mod:`~bananas_sql.schema`
  (table definitions, PostgreSQL triggers) and :mod:`~bananas_sql.migrate` (creation and
  numbered upgrade steps): the only users of SQLAlchemy's schema tools;
- :mod:`~bananas_sql.queries`: every statement by name, each dialect's own in
  ``queries/postgres.py`` and ``queries/sqlite.py``;
- :mod:`~bananas_sql.database` (what the dialects share), :mod:`~bananas_sql.batch` (group
  commit), :mod:`~bananas_sql.rows` (jobs as rows), :mod:`~bananas_sql.queue`,
  :mod:`~bananas_sql.results` (results, cron, workers), :mod:`~bananas_sql.backend`;
- :mod:`bananas_sql.pg`: one connection pool per backend (``pool_size``, the LISTEN
  connection included), psycopg for every statement (no SQLAlchemy), the listener, the
  hand-off, transactional enqueue;
- :mod:`bananas_sql.sqlite`: one ``sqlite3`` connection in one thread for the hot paths,
  SQLAlchemy (aiosqlite) for the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bananas_sql.migrate import upgrade
    from bananas_sql.pg.transactional import enqueue_in_transaction, enqueue_in_transaction_async

__all__ = ["enqueue_in_transaction", "enqueue_in_transaction_async", "upgrade"]


def __getattr__(name: str) -> Any:
    # SQLAlchemy and the drivers load only when asked for: plugin discovery imports this
    # package to list its schemes and must stay light.
    if name == "upgrade":
        from bananas_sql import migrate

        return migrate.upgrade
    if name in ("enqueue_in_transaction", "enqueue_in_transaction_async"):
        from bananas_sql.pg import transactional

        return getattr(transactional, name)
    raise AttributeError(f"module 'bananas_sql' has no attribute {name!r}")

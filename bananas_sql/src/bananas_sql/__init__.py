"""Bananas storage on SQL: PostgreSQL (``postgresql://``) and SQLite (``sqlite:///file.db``).

Backends are reached through :func:`bananas.connect`; this package adds the schema
command (:func:`upgrade`) and transactional submission on PostgreSQL
(:func:`enqueue_in_transaction`, :func:`enqueue_in_transaction_async`).
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

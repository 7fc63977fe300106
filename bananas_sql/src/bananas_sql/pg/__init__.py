"""The PostgreSQL backend.

- :mod:`~bananas_sql.pg.pool`: every connection of a backend, within ``pool_size``;
- :mod:`~bananas_sql.pg.database`: the units of work on psycopg (claims, group commit,
  submissions) and the wake-ups;
- :mod:`~bananas_sql.pg.listener`: the one LISTEN connection;
- :mod:`~bananas_sql.pg.handoff`: the queue whose idle workers are handed jobs;
- :mod:`~bananas_sql.pg.batch`: a group commit as few statements;
- :mod:`~bananas_sql.pg.transactional`: submitting a job in the caller's transaction.
"""

from __future__ import annotations

from bananas.backend import Backend, BackendOptions
from bananas.capabilities import Capability

from bananas_sql.backend import sql_backend
from bananas_sql.pg.database import PostgresDatabase
from bananas_sql.pg.handoff import PostgresQueue


def connect_postgres(url: str, options: BackendOptions, capabilities: frozenset[Capability]) -> Backend:
    """The PostgreSQL backend for ``url`` (connections open on first use)."""
    db = PostgresDatabase(url, options)
    return sql_backend("postgresql", db, url, options, capabilities, queue=PostgresQueue(db))

"""One :class:`~bananas.backend.Backend` of the SQL parts sharing one database."""

from __future__ import annotations

from bananas.backend import Backend, BackendOptions
from bananas.capabilities import Capability

from bananas_sql.database import Database
from bananas_sql.queue import SqlQueue
from bananas_sql.results import SqlResults, SqlScheduler, SqlWorkers


def sql_backend(
    name: str,
    db: Database,
    url: str,
    options: BackendOptions,
    capabilities: frozenset[Capability],
    *,
    queue: SqlQueue | None = None,
) -> Backend:
    """One Backend whose queue (``queue``, by default a :class:`SqlQueue`), results, cron storage
    and worker registry share ``db``."""
    return Backend(
        name=name,
        url=url,
        queue=queue if queue is not None else SqlQueue(db),
        results=SqlResults(db),
        workers=SqlWorkers(db),
        scheduler=SqlScheduler(db),
        capabilities=capabilities,
        options=options,
    )

"""Checkpoints on PostgreSQL and SQLite: :class:`~bananas.protocols.Checkpoints` over the
``checkpoints`` table (schema version 7), each save fenced by the claim in the same statement."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bananas.errors import LeaseLost
from bananas.job import Job

from bananas_sql.database import Connection, Database
from bananas_sql.queries.checkpoints import statements

__all__ = ["SqlCheckpoints"]


class SqlCheckpoints:
    """Mixed into :class:`~bananas_sql.queue.SqlQueue`."""

    db: Database
    _checkpoint_q: Mapping[str, Any] | None = None

    def _cq(self) -> Mapping[str, Any]:
        if self._checkpoint_q is None:
            raw = statements(self.db.names.table)
            self._checkpoint_q = {name: self.db.statement(sql) for name, sql in raw.items()}
        return self._checkpoint_q

    async def save_checkpoint(self, job: Job, state: str) -> None:
        """Save ``state`` while ``job``'s claim holds it; :class:`LeaseLost` otherwise."""
        if not job.lease_token:
            raise LeaseLost(job.id, "no claim")
        cq = self._cq()
        params = {"id": job.id, "state": state, "token": job.lease_token}

        async def work(conn: Connection) -> bool:
            return (await conn.execute(cq["save_checkpoint"], params)).first() is not None

        if not await self.db.run(work, single=True):
            raise LeaseLost(job.id)

    async def load_checkpoint(self, job_id: str) -> str | None:
        """The last state saved, or ``None``."""
        cq = self._cq()

        async def work(conn: Connection) -> str | None:
            row = (await conn.execute(cq["load_checkpoint"], {"id": job_id})).first()
            return None if row is None else str(row.state)

        return await self.db.run(work, readonly=True)

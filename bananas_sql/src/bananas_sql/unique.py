"""Unique jobs on PostgreSQL and SQLite: :class:`~bananas.protocols.UniqueEnqueue` in one
transaction, with the keys in the ``unique_keys`` table (see :mod:`bananas_sql.queries.unique`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bananas.errors import DuplicateJob
from bananas.job import Job, JobStatus
from bananas.unique import UniqueKey, key_forgettable, key_held

from bananas_sql import tables as t
from bananas_sql.database import Connection, Database, same_submission
from bananas_sql.queries.unique import statements
from bananas_sql.rows import job_params

__all__ = ["SqlUnique"]

_STATUS = {
    t.READY: JobStatus.PENDING,
    t.SCHEDULED: JobStatus.SCHEDULED,  # delayed jobs and retries alike: both hold the key
    t.PROCESSING: JobStatus.PROCESSING,
    t.COMPLETED: JobStatus.COMPLETED,
    t.DEAD: JobStatus.FAILED,
}


class SqlUnique:
    """``enqueue_unique`` for :class:`~bananas_sql.queue.SqlQueue` (mixed in)."""

    db: Database
    _unique_q: Mapping[str, Any] | None = None

    def _unique_statements(self) -> Mapping[str, Any]:
        if self._unique_q is None:
            names = self.db.names
            raw = statements(names.table("unique_keys"), names.jobs, self.db.dialect)
            self._unique_q = {name: self.db.statement(sql) for name, sql in raw.items()}
        return self._unique_q

    async def enqueue_unique(self, entries: Sequence[tuple[Job, UniqueKey | None]]) -> list[str]:
        """Enqueue each job unless its key is held, in one transaction (see
        :class:`~bananas.protocols.UniqueEnqueue`)."""
        if not entries:
            return []
        ids = [job.id for job, _ in entries]
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise DuplicateJob(f"the batch holds the same job id more than once: {', '.join(dupes)}")
        now = self.db.clock()
        rows = [(job_params(job, now), unique) for job, unique in entries]
        uq, q = self._unique_statements(), self.db.q

        async def work(conn: Connection) -> list[str]:
            answers: list[str] = []
            taken: dict[str, str] = {}
            for params, unique in rows:
                job_id = params["id"]
                if unique is not None:
                    holder = taken.get(unique.key) or await _take(conn, uq, unique, job_id, now)
                    if holder is not None:
                        answers.append(holder)
                        continue
                    taken[unique.key] = job_id
                if (await conn.execute(q["enqueue"], params)).first() is None and not await _ours(conn, q, params):
                    raise DuplicateJob(f"a job with id {job_id!r} already exists; nothing of the batch was written")
                answers.append(job_id)
            await _sweep(conn, uq, set(taken), now)
            return answers

        return await self.db.run(work)


async def _take(conn: Connection, uq: Mapping[str, Any], unique: UniqueKey, job_id: str, now: float) -> str | None:
    """Take ``unique``'s key for ``job_id`` and return ``None``, or return the id of the job
    that holds it (taking nothing)."""
    params = {"key": unique.key, "job_id": job_id, "unique_for": unique.unique_for, "now": now}
    if (await conn.execute(uq["take_new_key"], params)).first() is not None:
        return None
    row = (await conn.execute(uq["key_holder"], {"key": unique.key})).first()
    if row is not None and _held(row, now):
        return str(row.job_id)
    await conn.execute(uq["take_key"], params)
    return None


def _held(row: Any, now: float) -> bool:
    """Whether the key of a ``key_holder`` row is still held at ``now`` (the core's rule)."""
    return key_held(_status(row, now), row.finished_at, float(row.unique_for), now)


def _status(row: Any, now: float) -> JobStatus | None:
    if row.expires_at is not None and row.expires_at <= now:
        return None  # the record has expired: as good as gone
    return _STATUS.get(row.state)


async def _sweep(conn: Connection, uq: Mapping[str, Any], taken: set[str], now: float) -> None:
    """Delete the two longest-unseen keys if :func:`~bananas.unique.key_forgettable` lets them go
    (else mark them seen), so keys of finished jobs do not pile up."""
    for row in (await conn.execute(uq["oldest_keys"], {})).all():
        if row.unique_key not in taken:
            gone = key_forgettable(_status(row, now), row.finished_at, float(row.unique_for), now)
            await conn.execute(uq["drop_key" if gone else "seen_key"], {"key": row.unique_key, "now": now})


async def _ours(conn: Connection, q: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
    """Whether the stored job under ``params``' id is this very submission (an earlier try of
    this transaction committed before its reply was lost)."""
    found = (await conn.execute(q["stored_data"], {"ids": [params["id"]]})).all()
    return bool(found) and same_submission(found[0][1], params["data"])

"""Submitting a job in the caller's own SQLAlchemy transaction (PostgreSQL): the job exists
only if that transaction commits."""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from bananas import observe
from bananas.clock import Clock, system_clock
from bananas.errors import DuplicateJob
from bananas.job import Job
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from bananas_sql.queries import compile_all
from bananas_sql.queries.postgres import FRAGMENTS
from bananas_sql.rows import job_params
from bananas_sql.tables import Names


@functools.lru_cache(maxsize=64)
def _enqueue_query(prefix_key: tuple[tuple[str, str], ...]) -> sa.TextClause:
    names = Names.from_extra(dict(prefix_key))
    return compile_all(names.as_mapping(), FRAGMENTS)["enqueue"]


def _prepare(
    job: Job, namespace: str | None, table_prefix: str | None, schema: str | None, clock: Clock
) -> tuple[sa.TextClause, dict[str, Any]]:
    extra = {k: v for k, v in (("namespace", namespace), ("table_prefix", table_prefix), ("schema", schema)) if v}
    return _enqueue_query(tuple(sorted(extra.items()))), job_params(job, clock())


def enqueue_in_transaction(
    connection: sa.Connection | Session,
    job: Job,
    *,
    namespace: str | None = None,
    table_prefix: str | None = None,
    schema: str | None = None,
    clock: Clock = system_clock,
) -> None:
    """Insert ``job`` through the caller's SQLAlchemy ``Connection`` or ``Session``.

    The job exists (and idle workers are woken) only when the caller's transaction
    commits; a rollback leaves no trace. PostgreSQL only. Raises
    :class:`~bananas.errors.DuplicateJob` if the id exists, :class:`~bananas.errors.InvalidJob`
    for a status other than pending/scheduled.
    """
    with observe.submitting((job,)) as written:  # traced and counted like a client's submit
        query, params = _prepare(written[0], namespace, table_prefix, schema, clock)
        if connection.execute(query, params).first() is None:
            raise DuplicateJob(f"a job with id {job.id!r} already exists")


async def enqueue_in_transaction_async(
    connection: AsyncConnection | AsyncSession,
    job: Job,
    *,
    namespace: str | None = None,
    table_prefix: str | None = None,
    schema: str | None = None,
    clock: Clock = system_clock,
) -> None:
    """:func:`enqueue_in_transaction` for an ``AsyncConnection`` or ``AsyncSession``."""
    with observe.submitting((job,)) as written:
        query, params = _prepare(written[0], namespace, table_prefix, schema, clock)
        if (await connection.execute(query, params)).first() is None:
            raise DuplicateJob(f"a job with id {job.id!r} already exists")

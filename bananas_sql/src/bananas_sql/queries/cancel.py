"""The statements of cancellation (see :mod:`bananas_sql.cancel`), by name, and the
``cancel_requests`` table (schema version 8): the claimed jobs ``client.cancel`` asked to stop.

A waiting job is cancelled by one ``UPDATE`` that applies only while the row still holds what
was read (its state and data): state ``cancelled``, expiring like a completed job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bananas_sql.queries import HELD, PROCESSING

if TYPE_CHECKING:  # the runtime reads only the statements: no SQLAlchemy import for them
    import sqlalchemy as sa

__all__ = ["cancel_requests_table", "statements"]


def cancel_requests_table(md: sa.MetaData, prefix: str) -> None:
    """Add the cancel_requests table to ``md``: one row per claimed job asked to stop."""
    import sqlalchemy as sa

    sa.Table(prefix + "cancel_requests", md, sa.Column("job_id", sa.String(256), primary_key=True))


def statements(table: Callable[[str], str]) -> dict[str, str]:
    """The named statements (``:name`` parameters); ``table(name)`` gives a table's full name."""
    jobs, requests = table("jobs"), table("cancel_requests")
    return {
        "cancel_read": "SELECT state, data FROM "
        + jobs
        + " WHERE id = :id AND (expires_at IS NULL OR expires_at > :now)",
        "cancel_waiting": (
            f"UPDATE {jobs} SET state = 'cancelled', data = :data, run_at = 0, lease_until = NULL, "
            "lease_token = NULL, finished_at = :now, expires_at = :expires_at "
            "WHERE id = :id AND state = :state AND data = :old RETURNING id"
        ),
        "cancel_prune": (
            f"DELETE FROM {requests} WHERE job_id NOT IN (SELECT id FROM {jobs} WHERE state = 'processing')"
        ),
        "cancel_request": (
            f"INSERT INTO {requests} (job_id) SELECT id FROM {jobs} WHERE id = :id AND state = {PROCESSING} "
            "ON CONFLICT (job_id) DO NOTHING"
        ),
        "cancel_requested": (
            f"SELECT r.job_id FROM {requests} AS r JOIN {jobs} AS j ON j.id = r.job_id "
            f"WHERE r.job_id IN :ids AND j.state = {PROCESSING}"
        ),
        "settle_cancelled": (
            f"UPDATE {jobs} SET state = 'cancelled', data = :data, lease_until = NULL, lease_token = NULL, "
            f"finished_at = :now, expires_at = :expires_at WHERE {HELD} RETURNING id"
        ),
        "cancel_forget": f"DELETE FROM {requests} WHERE job_id = :id",
    }

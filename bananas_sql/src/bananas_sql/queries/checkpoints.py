"""The statements of checkpoints (see :mod:`bananas_sql.checkpoints`), by name.

A save is one ``INSERT ... SELECT ... WHERE EXISTS`` (the claim still holds the job) with an
upsert: it writes nothing once another claim has the job.
"""

from __future__ import annotations

from collections.abc import Callable

from bananas_sql.queries import PROCESSING

__all__ = ["statements"]

_ID = "CAST(:id AS VARCHAR(256))"  # one type for the parameter used twice (PostgreSQL asks)


def statements(table: Callable[[str], str]) -> dict[str, str]:
    """The named statements (``:name`` parameters); ``table(name)`` gives a table's full name."""
    checkpoints, jobs = table("checkpoints"), table("jobs")
    return {
        "save_checkpoint": (
            f"INSERT INTO {checkpoints} (job_id, state) SELECT {_ID}, CAST(:state AS TEXT) WHERE EXISTS "
            f"(SELECT 1 FROM {jobs} WHERE id = {_ID} AND state = {PROCESSING} AND lease_token = :token) "
            "ON CONFLICT (job_id) DO UPDATE SET state = excluded.state RETURNING job_id"
        ),
        "load_checkpoint": f"SELECT state FROM {checkpoints} WHERE job_id = :id",
    }

"""The statements of unique jobs (see :mod:`bananas_sql.unique`), by name, for one namespace.

``{unique_keys}`` is the table of keys (schema version 5): ``unique_key`` -> ``job_id`` (the job
holding it), ``unique_for`` and ``checked_at`` (when it was taken or last looked at). Taking a
new key is an ``INSERT ... ON CONFLICT DO NOTHING``:
on PostgreSQL a racing transaction waits on the row until the first commits, then reads it
(``FOR UPDATE``); SQLite runs one writer at a time (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

__all__ = ["statements"]


def statements(unique_keys: str, jobs: str, dialect: str) -> dict[str, str]:
    """The named statements over the tables ``unique_keys`` and ``jobs`` (``:name`` parameters)."""
    lock = " FOR UPDATE OF u" if dialect == "postgresql" else ""
    skip = " FOR UPDATE OF u SKIP LOCKED" if dialect == "postgresql" else ""
    holder = (
        "SELECT u.unique_key AS unique_key, u.job_id AS job_id, u.unique_for AS unique_for, j.state AS state, "
        "j.finished_at AS finished_at, j.expires_at AS expires_at "
        f"FROM {unique_keys} AS u LEFT JOIN {jobs} AS j ON j.id = u.job_id"
    )
    return {
        "take_new_key": (
            f"INSERT INTO {unique_keys} (unique_key, job_id, unique_for, checked_at) "
            "VALUES (:key, :job_id, :unique_for, :now) ON CONFLICT (unique_key) DO NOTHING RETURNING unique_key"
        ),
        "key_holder": f"{holder} WHERE u.unique_key = :key{lock}",
        "take_key": (
            f"UPDATE {unique_keys} SET job_id = :job_id, unique_for = :unique_for, checked_at = :now "
            "WHERE unique_key = :key"
        ),
        # The sweep: the two keys longest unseen, then each deleted (no holder) or marked seen.
        "oldest_keys": f"{holder} ORDER BY u.checked_at LIMIT 2{skip}",
        "drop_key": f"DELETE FROM {unique_keys} WHERE unique_key = :key",
        "seen_key": f"UPDATE {unique_keys} SET checked_at = :now WHERE unique_key = :key",
    }

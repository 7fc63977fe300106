"""The statements of workflows (see :mod:`bananas_sql.workflow`), by name, for one namespace.

A join's arrival is an ``UPDATE ... RETURNING`` of its row: on PostgreSQL racing members'
transactions queue on the row lock, each counts one more, and exactly one reads the full
count; SQLite runs one writer at a time (``BEGIN IMMEDIATE``). A slot is an
``INSERT ... ON CONFLICT DO NOTHING``, so it is filled once.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["statements"]


def statements(table: Callable[[str], str]) -> dict[str, str]:
    """The named statements (``:name`` parameters); ``table(name)`` gives a table's full name."""
    wf, steps, joins, slots = (table(n) for n in ("workflows", "workflow_steps", "workflow_joins", "workflow_slots"))
    return {
        "new_workflow": (
            f"INSERT INTO {wf} (id, document, created_at) VALUES (:id, :document, :now) "
            "ON CONFLICT (id) DO NOTHING RETURNING id"
        ),
        "new_step": (
            f"INSERT INTO {steps} (job_id, workflow_id, state, job, on_success, on_dead) "
            "VALUES (:job_id, :workflow_id, :state, :job, :on_success, :on_dead)"
        ),
        "new_join": (
            f"INSERT INTO {joins} (join_id, workflow_id, definition) VALUES (:join_id, :workflow_id, :definition)"
        ),
        "links": f"SELECT on_success, on_dead FROM {steps} WHERE job_id = :job_id",
        "set_outcome": f"UPDATE {steps} SET state = :state, outcome = :outcome WHERE job_id = :job_id",
        "take_waiting": (
            f"UPDATE {steps} SET state = 'created' WHERE job_id = :job_id AND state = 'waiting' RETURNING job"
        ),
        "fill_slot": (
            f"INSERT INTO {slots} (join_id, slot, outcome, value) VALUES (:join_id, :slot, :outcome, :value) "
            "ON CONFLICT (join_id, slot) DO NOTHING RETURNING slot"
        ),
        "count_arrival": (
            f"UPDATE {joins} SET arrived = arrived + 1, failed = failed + :failed WHERE join_id = :join_id "
            "RETURNING arrived, failed"
        ),
        "join": f"SELECT definition FROM {joins} WHERE join_id = :join_id",
        "slots": f"SELECT outcome, value FROM {slots} WHERE join_id = :join_id ORDER BY slot",
        "document": f"SELECT document FROM {wf} WHERE id = :id",
        "step_states": f"SELECT job_id, state, outcome FROM {steps} WHERE workflow_id = :id",
    }

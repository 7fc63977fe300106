"""The statements of workflows (see :mod:`bananas_sql.workflow`), by name, for one namespace.

A join's arrival is an ``UPDATE ... RETURNING`` of its row: on PostgreSQL racing members'
transactions queue on the row lock, each counts one more, and exactly one reads the full
count; SQLite runs one writer at a time (``BEGIN IMMEDIATE``). A slot is an
``INSERT ... ON CONFLICT DO NOTHING``, so it is filled once. A workflow's ``open_steps``
counts its steps created and not yet settled; the settle that brings it to 0 sets
``expires_at``, and the lease reaper's cleanup deletes expired workflows a few at a time.

Lock order, so that concurrent writes of one workflow never deadlock on PostgreSQL: the job
row a settle or cancel fences, then the workflow row (``lock_workflow``, a no-op update taken
before any step, join or slot row), then those. ``stop_workflow`` takes the workflow row first.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["statements"]


def statements(table: Callable[[str], str]) -> dict[str, str]:
    """The named statements (``:name`` parameters); ``table(name)`` gives a table's full name."""
    wf, steps, joins, slots = (table(n) for n in ("workflows", "workflow_steps", "workflow_joins", "workflow_slots"))
    return {
        "new_workflow": (
            f"INSERT INTO {wf} (id, document, created_at, open_steps) VALUES (:id, :document, :now, :open) "
            "ON CONFLICT (id) DO NOTHING RETURNING id"
        ),
        "new_step": (
            f"INSERT INTO {steps} (job_id, workflow_id, state, job, on_success, on_dead) "
            "VALUES (:job_id, :workflow_id, :state, :job, :on_success, :on_dead)"
        ),
        "new_join": (
            f"INSERT INTO {joins} (join_id, workflow_id, definition) VALUES (:join_id, :workflow_id, :definition)"
        ),
        "links": f"SELECT on_success, on_dead FROM {steps} WHERE job_id = :job_id AND state = 'created'",
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
        "lock_workflow": f"UPDATE {wf} SET open_steps = open_steps WHERE id = :id",
        "add_open": f"UPDATE {wf} SET open_steps = open_steps + :delta WHERE id = :id RETURNING open_steps",
        "expire_workflow": f"UPDATE {wf} SET expires_at = :expires_at WHERE id = :id",
        "document": f"SELECT document FROM {wf} WHERE id = :id AND (expires_at IS NULL OR expires_at > :now)",
        "step_states": f"SELECT job_id, state, outcome FROM {steps} WHERE workflow_id = :id",
        "running_steps": f"SELECT job_id FROM {steps} WHERE workflow_id = :id AND state = 'created'",
        "cancel_waiting_steps": (
            f"UPDATE {steps} SET state = 'cancelled', outcome = :outcome "
            "WHERE workflow_id = :id AND state = 'waiting' RETURNING job_id"
        ),
        "expired_workflows": f"SELECT id FROM {wf} WHERE expires_at <= :now LIMIT 100",
        "prune_workflow_slots": (
            f"DELETE FROM {slots} WHERE join_id IN (SELECT join_id FROM {joins} WHERE workflow_id = :id)"
        ),
        "prune_workflow_joins": f"DELETE FROM {joins} WHERE workflow_id = :id",
        "prune_workflow_steps": f"DELETE FROM {steps} WHERE workflow_id = :id",
        "prune_workflow": f"DELETE FROM {wf} WHERE id = :id",
    }

"""The workflow tables (schema version 6): one row per workflow, per step, per join and per
filled join slot (see :mod:`bananas_sql.workflow`); and the checkpoints of long jobs (version 7,
see :mod:`bananas_sql.checkpoints`)."""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["WORKFLOW_TABLES", "checkpoints_table", "workflow_tables"]

WORKFLOW_TABLES = ("workflows", "workflow_steps", "workflow_joins", "workflow_slots")

_Double = sa.Float(precision=53).with_variant(sa.Double(), "postgresql")


def workflow_tables(md: sa.MetaData, prefix: str) -> None:
    """Add the workflow tables to ``md``."""
    sa.Table(
        prefix + "workflows",
        md,
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("created_at", _Double, nullable=False),
    )
    sa.Table(
        prefix + "workflow_steps",
        md,
        sa.Column("job_id", sa.String(256), primary_key=True),
        sa.Column("workflow_id", sa.String(64), nullable=False, index=True),
        sa.Column("state", sa.String(16), nullable=False),  # waiting, created, completed, dead
        sa.Column("job", sa.Text, nullable=False),  # the job's JSON as submitted
        sa.Column("on_success", sa.Text, nullable=False),
        sa.Column("on_dead", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=True),
    )
    sa.Table(
        prefix + "workflow_joins",
        md,
        sa.Column("join_id", sa.String(64), primary_key=True),
        sa.Column("workflow_id", sa.String(64), nullable=False),
        sa.Column("definition", sa.Text, nullable=False),
        sa.Column("arrived", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
    )
    sa.Table(
        prefix + "workflow_slots",
        md,
        sa.Column("join_id", sa.String(64), primary_key=True),
        sa.Column("slot", sa.Integer, primary_key=True),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("value", sa.Text, nullable=False),
    )


def checkpoints_table(md: sa.MetaData, prefix: str) -> None:
    """Add the checkpoints table to ``md``: the last state each job saved."""
    sa.Table(
        prefix + "checkpoints",
        md,
        sa.Column("job_id", sa.String(256), primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
    )

"""The workflow tables (schema version 6): one row per workflow, per step, per join and per
filled join slot (see :mod:`bananas_sql.workflow`); a workflow's count of running steps and
its expiry (:func:`workflow_expiry`); and the checkpoints of long jobs (version 7, see
:mod:`bananas_sql.checkpoints`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from bananas_sql.tables import Names

__all__ = ["WORKFLOW_TABLES", "checkpoints_table", "workflow_expiry", "workflow_tables"]

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
        sa.Column("open_steps", sa.Integer, nullable=True),  # created, not settled; NULL: not counted
        sa.Column("expires_at", _Double, nullable=True, index=True),  # set when open_steps reaches 0
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
        sa.Column("workflow_id", sa.String(64), nullable=False, index=True),
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


def workflow_expiry(conn: sa.Connection, names: Names, dialect: str) -> None:
    """The schema step that lets finished workflows expire: ``workflows.open_steps`` (counted
    now for the workflows already stored) and ``workflows.expires_at``, and the indexes the
    cleanup uses. A workflow already finished keeps no expiry (it is kept, as before)."""
    table = f"{names.schema + '.' if names.schema else ''}{names.prefix}"
    wf, steps = table + "workflows", table + "workflow_steps"
    columns = {c["name"] for c in sa.inspect(conn).get_columns(names.prefix + "workflows", schema=names.schema)}
    if "open_steps" not in columns:
        conn.execute(sa.text(f"ALTER TABLE {wf} ADD COLUMN open_steps INTEGER"))
        conn.execute(
            sa.text(
                f"UPDATE {wf} SET open_steps = (SELECT count(*) FROM {steps} AS s "
                f"WHERE s.workflow_id = {wf}.id AND s.state = 'created')"
            )
        )
    if "expires_at" not in columns:
        kind = "DOUBLE PRECISION" if dialect == "postgresql" else "FLOAT"
        conn.execute(sa.text(f"ALTER TABLE {wf} ADD COLUMN expires_at {kind}"))
    md = sa.MetaData(schema=names.schema)
    workflow_tables(md, names.prefix)
    for name in ("workflows", "workflow_joins"):
        for index in md.tables[table + name].indexes:
            index.create(conn, checkfirst=True)


def checkpoints_table(md: sa.MetaData, prefix: str) -> None:
    """Add the checkpoints table to ``md``: the last state each job saved."""
    sa.Table(
        prefix + "checkpoints",
        md,
        sa.Column("job_id", sa.String(256), primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
    )

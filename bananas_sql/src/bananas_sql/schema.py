"""What a new database gets: the tables and indexes of one namespace (SQLAlchemy definitions)
and, on PostgreSQL, the triggers that announce work and results and hand new jobs to idle
workers. Used by :mod:`bananas_sql.migrate` only."""

from __future__ import annotations

import sqlalchemy as sa

from bananas_sql.queries.cancel import cancel_requests_table
from bananas_sql.queries.groups import group_tables
from bananas_sql.tables import DEAD, PROCESSING, READY, SCHEDULED, Names
from bananas_sql.workflow_schema import checkpoints_table, workflow_tables

HANDOFF_DATA_MAX = 7000
"""Largest job (bytes of wire JSON) sent whole with its hand-off; NOTIFY payloads stop at
8000 bytes, and a larger job is sent by number and read back by the worker."""

PG_TRIGGERS = (
    # Idle workers waiting for a job (schema version 3). Unlogged: a registration lasts one
    # wait, and after a server crash the workers simply register again. ``channel`` is the
    # worker process's hand-off channel and ``slot`` the worker within it. ``clock_offset`` is
    # the worker's clock minus the server's at registration, so a handed job's lease is on
    # the worker's clock; ``until`` (server clock) ends a registration whose worker is gone.
    # ``fenced`` (version 4): the worker takes the hand-off's lease token; workers of older
    # bananas-sql still running after an upgrade register without it, and are only woken.
    """CREATE UNLOGGED TABLE IF NOT EXISTS {waiters} (
    token text PRIMARY KEY,
    channel text NOT NULL,
    slot integer NOT NULL,
    routing_keys text[] NOT NULL,
    priorities smallint[] NOT NULL,
    lease float8 NOT NULL,
    clock_offset float8 NOT NULL,
    until float8 NOT NULL,
    fenced boolean NOT NULL DEFAULT false
)""",
    "ALTER TABLE {waiters} ADD COLUMN IF NOT EXISTS fenced boolean NOT NULL DEFAULT false",
    # A job made ready goes straight to a registered idle worker (a job in a group never: its
    # group's limits are the claim's to apply, so every listener is told there is work) that takes its routing key
    # and priority: claimed here (state, lease and a fresh lease token, as that worker's claim
    # would) and sent on the channel of the worker's process as ``slot seq token[ data]``, so
    # the worker runs it without a claim round trip. With no such worker, every listener is
    # told there is work. notify_work serves one row made ready by an UPDATE (released,
    # retried, moved, requeued, re-submitted over an expired id); jobs_inserted serves a whole
    # INSERT at once, so a bulk submission runs one trigger and sends one work notification,
    # not one per row.
    """CREATE OR REPLACE FUNCTION {schema_prefix}{prefix}notify_work() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    t float8 := extract(epoch FROM clock_timestamp());
    fence text;
    w record;
BEGIN
    SELECT token, channel, slot, lease, clock_offset INTO w FROM {waiters}
    WHERE NEW.group_name IS NULL AND fenced AND until > t AND NEW.routing_key = ANY(routing_keys)
        AND NEW.priority = ANY(priorities)
    LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF FOUND THEN
        DELETE FROM {waiters} WHERE token = w.token;
        fence := md5(random()::text || clock_timestamp()::text || NEW.seq::text);
        UPDATE {jobs} SET state = 'processing', lease_until = t + w.clock_offset + w.lease,
            lease_token = fence WHERE seq = NEW.seq;
        PERFORM pg_notify(w.channel, w.slot::text || ' ' || NEW.seq::text || ' ' || fence
            || CASE WHEN octet_length(NEW.data) <= {handoff_data_max} THEN ' ' || NEW.data ELSE '' END);
    ELSE
        PERFORM pg_notify('{work_channel}', '');
    END IF;
    RETURN NULL;
END $$""",
    """CREATE OR REPLACE FUNCTION {schema_prefix}{prefix}jobs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    t float8 := extract(epoch FROM clock_timestamp());
    ready bigint;
    handed bigint[] := '{{}}';
    fence text;
    w record;
    j record;
BEGIN
    SELECT count(*) INTO ready FROM new_jobs WHERE state = 'ready';
    IF ready = 0 THEN
        RETURN NULL;
    END IF;
    FOR w IN SELECT x.token, x.channel, x.slot, x.routing_keys, x.priorities, x.lease, x.clock_offset
        FROM {waiters} AS x
        WHERE x.fenced AND x.until > t AND EXISTS (SELECT 1 FROM new_jobs AS n WHERE n.state = 'ready'
            AND n.group_name IS NULL AND n.routing_key = ANY(x.routing_keys) AND n.priority = ANY(x.priorities))
        FOR UPDATE SKIP LOCKED
    LOOP
        EXIT WHEN cardinality(handed) >= ready;
        SELECT n.seq, n.data INTO j FROM new_jobs AS n
        WHERE n.state = 'ready' AND n.group_name IS NULL AND n.routing_key = ANY(w.routing_keys)
            AND n.priority = ANY(w.priorities) AND n.seq <> ALL(handed)
        ORDER BY n.priority, n.position LIMIT 1;
        CONTINUE WHEN NOT FOUND;
        handed := handed || j.seq;
        DELETE FROM {waiters} WHERE token = w.token;
        fence := md5(random()::text || clock_timestamp()::text || j.seq::text);
        UPDATE {jobs} SET state = 'processing', lease_until = t + w.clock_offset + w.lease,
            lease_token = fence WHERE seq = j.seq;
        PERFORM pg_notify(w.channel, w.slot::text || ' ' || j.seq::text || ' ' || fence
            || CASE WHEN octet_length(j.data) <= {handoff_data_max} THEN ' ' || j.data ELSE '' END);
    END LOOP;
    IF cardinality(handed) < ready THEN
        PERFORM pg_notify('{work_channel}', '');
    END IF;
    RETURN NULL;
END $$""",
    "DROP TRIGGER IF EXISTS {prefix}jobs_notify ON {jobs}",
    "CREATE TRIGGER {prefix}jobs_notify AFTER UPDATE OF state ON {jobs} "
    "FOR EACH ROW WHEN (NEW.state = 'ready') EXECUTE FUNCTION {schema_prefix}{prefix}notify_work()",
    "DROP TRIGGER IF EXISTS {prefix}jobs_inserted ON {jobs}",
    "CREATE TRIGGER {prefix}jobs_inserted AFTER INSERT ON {jobs} REFERENCING NEW TABLE AS new_jobs "
    "FOR EACH STATEMENT EXECUTE FUNCTION {schema_prefix}{prefix}jobs_inserted()",
    """CREATE OR REPLACE FUNCTION {schema_prefix}{prefix}notify_result() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{result_channel}', NEW.job_id);
    RETURN NULL;
END $$""",
    "DROP TRIGGER IF EXISTS {prefix}results_notify ON {results}",
    "CREATE TRIGGER {prefix}results_notify AFTER INSERT OR UPDATE ON {results} "
    "FOR EACH ROW EXECUTE FUNCTION {schema_prefix}{prefix}notify_result()",
)
"""The PostgreSQL hand-off and notification DDL (``str.format`` templates over
:meth:`Names.as_mapping <bananas_sql.tables.Names.as_mapping>` and ``handoff_data_max``)."""

PG_GROUP_TRIGGERS = (
    # A grouped job leaving the processing state frees a slot of its group (schema version 10):
    # workers held back by the group's limit are told there is work, as for a new job.
    """CREATE OR REPLACE FUNCTION {schema_prefix}{prefix}group_slot_freed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{work_channel}', '');
    RETURN NULL;
END $$""",
    "DROP TRIGGER IF EXISTS {prefix}jobs_group_slot ON {jobs}",
    "CREATE TRIGGER {prefix}jobs_group_slot AFTER UPDATE OF state ON {jobs} FOR EACH ROW "
    "WHEN (OLD.state = 'processing' AND NEW.state <> 'processing' AND OLD.group_name IS NOT NULL) "
    "EXECUTE FUNCTION {schema_prefix}{prefix}group_slot_freed()",
)
"""The PostgreSQL DDL of groups (after ``jobs.group_name`` exists; templates as :data:`PG_TRIGGERS`)."""


_Double = sa.Float(precision=53).with_variant(sa.Double(), "postgresql")
_Seq = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # INTEGER PRIMARY KEY is SQLite's rowid


def metadata(names: Names, dialect: str) -> sa.MetaData:
    """The tables and indexes of one namespace for ``dialect`` (``postgresql`` or ``sqlite``)."""
    md = sa.MetaData(schema=names.schema)
    p = names.prefix
    jobs = sa.Table(
        p + "jobs",
        md,
        sa.Column("seq", _Seq, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(256), nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("routing_key", sa.String(64), nullable=False),
        sa.Column("priority", sa.SmallInteger, nullable=False),
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("run_at", _Double, nullable=False),
        sa.Column("lease_until", _Double),
        # The claim holding a processing row; settles are fenced with it. (Schema version 4.)
        sa.Column("lease_token", sa.String(64)),
        sa.Column("finished_at", _Double),
        sa.Column("expires_at", _Double),
        sa.Column("error", sa.Text),
        sa.Column("data", sa.Text, nullable=False),
        # The group of a grouped job (schema version 10); NULL for every other.
        sa.Column("group_name", sa.String(128)),
    )
    # The claim index holds only claimable rows, so finished history never slows a claim; and
    # (schema version 10) only those without a group, so a group's backlog never slows a claim
    # of the others (grouped rows are in jobs_grouped).
    plain = sa.text(f"state IN ('{READY}', '{SCHEDULED}') AND group_name IS NULL")
    sa.Index(
        p + "jobs_claim", jobs.c.routing_key, jobs.c.priority, jobs.c.position,
        postgresql_where=plain, sqlite_where=plain,
    )  # fmt: skip
    # Scheduled jobs by due time: move_scheduled (every scheduler_interval) finds the due ones
    # without scanning the backlog. Without it, a million waiting jobs made that scan 130 ms
    # on SQLite, holding the write lock. (Schema version 2.)
    scheduled = sa.text(f"state = '{SCHEDULED}'")
    sa.Index(p + "jobs_due", jobs.c.run_at, jobs.c.position, postgresql_where=scheduled, sqlite_where=scheduled)
    processing = sa.text(f"state = '{PROCESSING}'")
    sa.Index(p + "jobs_lease", jobs.c.lease_until, postgresql_where=processing, sqlite_where=processing)
    # Grouped jobs (schema version 10): due ones by routing key, priority, group and position
    # (a grouped claim's participants and takes). A group's running jobs are counted through
    # jobs_lease: processing rows are only as many as the workers hold.
    grouped = sa.text(f"state IN ('{READY}', '{SCHEDULED}') AND group_name IS NOT NULL")
    sa.Index(
        p + "jobs_grouped", jobs.c.routing_key, jobs.c.priority, jobs.c.group_name, jobs.c.position,
        postgresql_where=grouped, sqlite_where=grouped,
    )  # fmt: skip
    dead = sa.text(f"state = '{DEAD}'")
    sa.Index(p + "jobs_dead", jobs.c.finished_at, postgresql_where=dead, sqlite_where=dead)
    expiring = sa.text("expires_at IS NOT NULL")
    sa.Index(p + "jobs_expiry", jobs.c.expires_at, postgresql_where=expiring, sqlite_where=expiring)
    if dialect == "sqlite":
        # SQLite has no sequences: positions come from MAX/MIN(position), kept cheap by this index.
        sa.Index(p + "jobs_position", jobs.c.position)
    else:
        sa.Sequence(p + "job_position", metadata=md)
    results = sa.Table(
        p + "results",
        md,
        sa.Column("job_id", sa.String(256), primary_key=True),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("expires_at", _Double, nullable=False),
    )
    sa.Index(p + "results_expiry", results.c.expires_at)
    sa.Table(
        p + "schedules",
        md,
        sa.Column("schedule_id", sa.String(256), primary_key=True),
        sa.Column("last_run", _Double),
        sa.Column("next_run", _Double),
        sa.Column("last_success", _Double),
        sa.Column("last_error", sa.Text, nullable=False, server_default=""),
        sa.Column("run_count", sa.BigInteger, nullable=False, server_default="0"),
    )
    sa.Table(
        p + "workers",
        md,
        sa.Column("id", sa.String(256), primary_key=True),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("expires_at", _Double, nullable=False),
    )
    unique_keys(md, p)
    workflow_tables(md, p)
    checkpoints_table(md, p)
    cancel_requests_table(md, p)
    group_tables(md, p)
    sa.Table(
        p + "schema_version",
        md,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
    )
    return md


def unique_keys(md: sa.MetaData, prefix: str) -> sa.Table:
    """The unique keys of submitted jobs (schema version 5): which job holds each key, for how
    long after it completed, and when the key was last taken or looked at (the sweep that
    deletes keys no job holds any more takes the longest unseen first; see
    :mod:`bananas_sql.unique`)."""
    table = sa.Table(
        prefix + "unique_keys",
        md,
        sa.Column("unique_key", sa.String(512), primary_key=True),
        sa.Column("job_id", sa.String(256), nullable=False),
        sa.Column("unique_for", _Double, nullable=False),
        sa.Column("checked_at", _Double, nullable=False),
    )
    sa.Index(prefix + "unique_keys_checked", table.c.checked_at)
    return table

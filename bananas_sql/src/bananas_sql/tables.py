"""The names of the schema's objects (prefixed per namespace), the job states and the schema
version; the table definitions are in :mod:`bananas_sql.schema`.

The ``state`` column of a job row is authoritative for where the job is; ``data`` holds
the job as wire-format JSON (:meth:`bananas.job.Job.to_json`) so unknown fields survive.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import attrs
from bananas.backend import validate_namespace
from bananas.errors import ConfigError

SCHEMA_VERSION = 10
"""The schema this code needs; bump it and add a step in :mod:`bananas_sql.migrate` on change."""

DEFAULT_PREFIX = "bananas_"
_IDENT = re.compile(r"[a-z_][a-z0-9_]*")
_MAX_IDENT = 63  # PostgreSQL's identifier limit

# Job states (the ``state`` column).
READY = "ready"
SCHEDULED = "scheduled"
PROCESSING = "processing"
COMPLETED = "completed"
DEAD = "dead"


def namespace_prefix(namespace: str) -> str:
    """The table prefix of a (valid) namespace; distinct namespaces get distinct prefixes.

    A namespace that is already a lower-case identifier (``billing``, ``team_a``) is used
    as it is (``billing_``), as it always was. Any other (``team-a``, ``Team.A``, ``{jobs}``)
    is lower-cased with other characters made ``_`` and followed by 8 hex digits of the
    SHA-256 of the exact namespace (``team_a_1c0b1cf4_``), so namespaces differing only in
    case or punctuation never share tables.
    """
    if _IDENT.fullmatch(namespace):
        return namespace + "_"
    stem = re.sub(r"[^a-z0-9_]", "_", namespace.lower())[:30]
    if not _IDENT.fullmatch(stem):
        stem = "ns_" + stem[:27]
    return f"{stem}_{hashlib.sha256(namespace.encode()).hexdigest()[:8]}_"


def _prefix_from(extra: Mapping[str, Any]) -> str:
    ns = extra.get("namespace")
    if ns is not None:
        validate_namespace(ns)
    raw = extra.get("table_prefix")
    if raw is None:
        if ns is None:
            return DEFAULT_PREFIX
        raw = namespace_prefix(ns)
    raw = str(raw)
    if not _IDENT.fullmatch(raw):
        raise ConfigError(
            f"table_prefix {raw!r} is not usable: use lower-case letters, digits and '_', starting with a letter"
        )
    if len(raw) > 40:  # leave room for the longest suffix below
        raw = raw[:28] + hashlib.sha1(raw.encode()).hexdigest()[:11] + "_"
    return raw


@attrs.frozen
class Names:
    """Every database object name of one namespace (unquoted, schema-qualified where needed)."""

    prefix: str
    schema: str | None = None

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any]) -> Names:
        """Names from ``extra["namespace"]``/``extra["table_prefix"]`` and ``extra["schema"]``."""
        schema = extra.get("schema") or None
        if schema is not None and not _IDENT.fullmatch(str(schema)):
            raise ConfigError(f"schema {schema!r} is not usable: use lower-case letters, digits and '_'")
        return cls(_prefix_from(extra), schema)

    def table(self, name: str) -> str:
        base = self.prefix + name
        return f"{self.schema}.{base}" if self.schema else base

    @property
    def jobs(self) -> str:
        return self.table("jobs")

    @property
    def results(self) -> str:
        return self.table("results")

    @property
    def schedules(self) -> str:
        return self.table("schedules")

    @property
    def workers(self) -> str:
        return self.table("workers")

    @property
    def waiters(self) -> str:
        """Idle PostgreSQL workers waiting for a job to be handed over (see ``migrate``)."""
        return self.table("waiters")

    @property
    def version(self) -> str:
        return self.table("schema_version")

    @property
    def position_seq(self) -> str:
        return self.table("job_position")

    def channel(self, what: str) -> str:
        """A LISTEN/NOTIFY channel name for this namespace (``work`` or ``result``)."""
        name = f"{self.schema}_{self.prefix}{what}" if self.schema else f"{self.prefix}{what}"
        return name[:_MAX_IDENT]

    def as_mapping(self) -> dict[str, str]:
        """The names as ``str.format`` arguments for the query templates."""
        return {
            "jobs": self.jobs,
            "results": self.results,
            "schedules": self.schedules,
            "workers": self.workers,
            "waiters": self.waiters,
            "version": self.version,
            "position_seq": self.position_seq,
            "group_limits": self.table("group_limits"),
            "group_state": self.table("group_state"),
            "group_starts": self.table("group_starts"),
            "prefix": self.prefix,
            "schema_prefix": f"{self.schema}." if self.schema else "",
            "work_channel": self.channel("work"),
            "result_channel": self.channel("result"),
        }

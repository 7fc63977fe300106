"""What the PostgreSQL and SQLite databases share: the namespace's names and statements, the
schema check, group commit, outage logging; and the interface the queue, results, cron and
worker registry use. Each dialect subclasses :class:`Database` (:mod:`bananas_sql.pg`,
:mod:`bananas_sql.sqlite`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import attrs
from bananas.backend import BackendOptions, redact_url
from bananas.errors import SchemaError
from bananas.job import JobPriority, JobResult, dumps, loads
from bananas.logsafe import printable

from bananas_sql.batch import GroupCommit, Write
from bananas_sql.tables import SCHEMA_VERSION, Names

log = logging.getLogger("bananas.sql")
T = TypeVar("T")


def one_line(exc: BaseException, limit: int = 500) -> str:
    """``exc`` as one bounded log line: libpq's multi-line messages (a line per host tried)
    joined with spaces, other control characters escaped."""
    return printable(" ".join(str(exc).split()) or type(exc).__name__, limit)


DEFAULT_RETRY_SECONDS = 15.0
"""How long an operation keeps retrying while the database is unreachable."""


class ClaimedRow(NamedTuple):
    """A row a claim (or a hand-off) took: its sequence number, stored job and id."""

    seq: int
    data: str
    id: str


@attrs.frozen
class GroupClaim:
    """A claim through the group rules (see :mod:`bananas_sql.groups`)."""

    keys: tuple[str, ...]
    ranks: tuple[int, ...]
    """The priorities asked for, highest first."""
    all_prios: bool
    names: tuple[str, ...] | None
    limit: int
    now: float
    lease_until: float
    token: str
    dry: bool = False
    """Only find out whether a claim would take a job (the SQLite wait for work)."""


@attrs.frozen
class Claimed:
    """What a grouped claim did: the rows claimed in claim order, whether grouped jobs were due
    at all, when a group held back may next start a job, and (``dry``) whether a job would be taken."""

    rows: list[ClaimedRow]
    grouped: bool
    wake_at: float | None
    takes: bool = False


class Result(Protocol):
    """What a statement returned: its rows (named: ``row.id``) and row count."""

    @property
    def rowcount(self) -> int: ...

    def first(self) -> Any: ...

    def all(self) -> Sequence[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """A connection in a unit of work (see :meth:`Database.run`)."""

    async def execute(self, statement: Any, parameters: Any = None) -> Result:
        """Run one of :attr:`Database.q` (a list of parameter mappings: once for each)."""
        ...


def upgrade_command(url: str, extra: Mapping[str, Any]) -> str:
    """The command that creates or upgrades the schema of ``url``'s namespace (options given
    as keyword arguments are added to the URL's query string, where the command reads them)."""
    query = dict(parse_qsl(urlsplit(url).query))
    missing = {k: str(extra[k]) for k in ("namespace", "table_prefix", "schema") if extra.get(k) and k not in query}
    if missing:
        url += ("&" if "?" in url else "?") + urlencode(missing)
    return f"bananas db upgrade --url '{redact_url(url)}'"


class Database:
    """One namespace in one database: its statements, and units of work retried while the
    connection is lost.

    A dialect sets :attr:`dialect` and :attr:`q` (the named statements, in the form its
    :meth:`run` executes) and implements the abstract methods below.
    """

    dialect = ""
    q: Mapping[str, Any]
    """The named statements of :mod:`bananas_sql.queries` for this namespace and dialect."""

    def __init__(self, url: str, options: BackendOptions) -> None:
        self.url = url
        self.options = options
        self.clock = options.clock
        self.names = Names.from_extra(options.extra)
        self.writes = GroupCommit(self.write_batch)
        self.retry_seconds = float(options.extra.get("retry_seconds", DEFAULT_RETRY_SECONDS))
        self._schema_ok = False
        self._closed = False

    # -- units of work -----------------------------------------------------------------

    async def run(
        self, work: Callable[[Connection], Awaitable[T]], *, readonly: bool = False, single: bool = False
    ) -> T:
        """Run ``work(connection)`` in one transaction, retrying with backoff while the
        connection is lost; ``connection.execute(q[name], params)`` runs a named statement (a
        list of parameter mappings runs it once for each) and returns its rows.

        ``work`` must be safe to run again (every caller here is); ``readonly`` work may skip
        taking a write lock (SQLite); ``single`` work is one statement, atomic by itself, so it
        may run without BEGIN/COMMIT round trips (PostgreSQL). Raises
        :class:`~bananas.errors.BackendUnavailable` when the database stays unreachable for
        ``retry_seconds``, :class:`~bananas.errors.SchemaError` when the schema is missing or
        of another version.
        """
        raise NotImplementedError

    def statement(self, sql: str) -> Any:
        """A statement built at run time (``:name`` parameters) in the form :meth:`run` executes."""
        raise NotImplementedError

    def schema_checked(self, version: int | None) -> None:
        """Accept the schema ``version`` found (None: no tables), or raise :class:`SchemaError`
        saying what to do."""
        cmd = upgrade_command(self.url, self.options.extra)
        where = f"table prefix {self.names.prefix!r}"
        if self.names.schema:
            where += f" in schema {self.names.schema!r}"
        if version is None:
            raise SchemaError(
                f"the Bananas tables ({where}) do not exist in {redact_url(self.url)}; create them with: {cmd}"
            )
        if version < SCHEMA_VERSION:
            raise SchemaError(
                f"the Bananas tables ({where}) are at schema version {version} but this bananas-sql needs "
                f"{SCHEMA_VERSION}; upgrade them with: {cmd}"
            )
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"the Bananas tables ({where}) are at schema version {version}, newer than this bananas-sql "
                f"understands ({SCHEMA_VERSION}); upgrade the bananas-sql package"
            )
        self._schema_ok = True

    async def _ensure_schema(self) -> None:
        if not self._schema_ok:
            await self.run(_nothing, readonly=True)  # checks the schema, with the usual retries

    def result_params(self, result: JobResult) -> dict[str, Any]:
        """The ``store_result`` parameters of ``result`` (wire-format hash, TTL by outcome)."""
        ttl = self.options.result_success_ttl if result.is_success() else self.options.result_failure_ttl
        return {"id": result.job_id, "data": dumps(result.to_hash()), "expires_at": self.clock() + ttl}

    # -- the hot paths, on each dialect's driver ---------------------------------------

    async def write_batch(self, writes: Sequence[Write]) -> list[bool]:
        """Run named one-row writes in one transaction (see :class:`GroupCommit`); for each,
        whether it returned or touched a row."""
        raise NotImplementedError

    async def enqueue_one(self, params: Mapping[str, Any]) -> bool:
        """Insert one job (the ``enqueue`` statement); False if its id exists and has not expired.

        A retry after a failure whose outcome is unknown (the connection lost during the
        commit) that finds the id taken is True only if the stored job is this submission
        (see :func:`same_submission`): the first try committed. Another job under that id is
        False, as without a retry.
        """
        raise NotImplementedError

    async def insert_many(self, rows: Sequence[Mapping[str, Any]], now: float) -> bool:
        """Insert jobs (``job_params`` rows, distinct ids) in one transaction, in order, after
        removing expired rows with their ids; False, with nothing written, if an id exists.

        A retry after an unknown outcome that finds the ids taken is True if every stored job
        is the one submitted (the first try committed them all, as one transaction)."""
        raise NotImplementedError

    async def claim(
        self,
        routing_keys: Sequence[str],
        priorities: Sequence[JobPriority],
        *,
        limit: int,
        lease_until: float,
        job_names: Sequence[str] | None,
        now: float,
        token: str,
    ) -> list[ClaimedRow] | None:
        """Mark up to ``limit`` claimable rows processing under lease ``token``, in one statement;
        the rows in claim order (routing key, priority, position). None, with nothing claimed,
        when a grouped job of ``routing_keys`` is due: claim with :meth:`claim_grouped` then."""
        raise NotImplementedError

    async def claim_grouped(self, req: GroupClaim) -> Claimed:
        """A claim through the group rules, in one transaction (see :mod:`bananas_sql.groups`)."""
        raise NotImplementedError

    async def renew_leases(self, held: Sequence[tuple[str, str]], until: float) -> set[str]:
        """Extend to ``until`` the leases of the ``(id, lease token)`` rows still processing under
        that token, in one transaction; the ids extended."""
        raise NotImplementedError

    # -- wake-ups ----------------------------------------------------------------------

    async def wait_for_work(self, routing_keys: Sequence[str], timeout: float) -> None:
        """Return when work may be ready for ``routing_keys`` or after ``timeout`` seconds."""
        raise NotImplementedError

    async def wait_for_result(self, job_id: str, timeout: float, check: Callable[[], Awaitable[bool]]) -> bool:
        """Wait until ``check()`` is true (re-checked on every wake-up) or ``timeout`` passes."""
        raise NotImplementedError

    def note_claim(self) -> None:
        """Called before each claim (lets push wake-ups avoid a lost-wake-up race)."""

    async def close(self) -> None:
        """Close every connection. Idempotent."""
        raise NotImplementedError


class OutageLog:
    """One WARNING when an outage begins and one INFO line when it ends."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._since: float | None = None

    def failing(self, error: BaseException, retry_seconds: float) -> None:
        if self._since is None:
            self._since = time.monotonic()
            log.warning(
                "%s failed: %s; retrying on a fresh connection for up to %gs", self.what, one_line(error), retry_seconds
            )

    def recovered(self) -> None:
        since, self._since = self._since, None
        if since is not None:
            log.info("%s: connected again after %.1fs", self.what, time.monotonic() - since)


_CHANGED_AFTER_SUBMIT = frozenset({"status", "updated_at", "scheduled_for", "attempts", "error"})
"""Wire-format fields that claims, retries and outcomes rewrite; the rest of a job is as submitted."""


def same_submission(stored: str, submitted: str) -> bool:
    """Whether the stored job record ``stored`` is the submission ``submitted`` (both wire-format
    JSON): equal in every field but those a worker rewrites (status, times of update and
    schedule, attempts, error), so also after the job ran. Unreadable records are not."""
    try:
        a, b = loads(stored), loads(submitted)
    except Exception:  # deliberately broad: stored data is hostile
        return False
    if not isinstance(a, dict) or not isinstance(b, dict):
        return False
    return {k: v for k, v in a.items() if k not in _CHANGED_AFTER_SUBMIT} == {
        k: v for k, v in b.items() if k not in _CHANGED_AFTER_SUBMIT
    }


def stored_as_given(found: Sequence[Sequence[Any]], submitted: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the ``(id, data)`` rows ``found`` hold every ``job_params`` row of ``submitted``
    as submitted (see :func:`same_submission`)."""
    stored = {row[0]: row[1] for row in found}
    return all(r["id"] in stored and same_submission(stored[r["id"]], r["data"]) for r in submitted)


async def _nothing(_conn: Connection) -> None:
    return None

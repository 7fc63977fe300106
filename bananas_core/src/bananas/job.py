"""The job model: jobs, results, statuses, priorities and their JSON wire encoding.

The encoding is the one in ``REDIS_WIRE_FORMAT.md``, shared by every backend and by the
other Bananas implementations: a job is a JSON object, a result a flat mapping of strings.
"""

from __future__ import annotations

import enum
import functools
import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias, TypeVar

import attrs

from bananas.errors import InvalidJob, InvalidRoutingKey, JobDecodeError, PayloadError
from bananas.timefmt import format_time, parse_time

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_ROUTING_KEY",
    "JSON",
    "Job",
    "JobPriority",
    "JobResult",
    "JobStatus",
    "backoff_seconds",
    "dumps",
    "loads",
    "validate_routing_key",
]

JSON: TypeAlias = Any
"""Any value the standard :mod:`json` module can encode: dict, list, str, int, float, bool, None."""

T = TypeVar("T")

DEFAULT_ROUTING_KEY = "default"
DEFAULT_MAX_RETRIES = 3
MAX_NAME_LENGTH = 256
_ROUTING_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


class JobStatus(enum.StrEnum):
    """Where a job is in its life."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    SCHEDULED = "scheduled"

    @property
    def is_final(self) -> bool:
        """True for ``completed`` and ``failed``: the job will not run again by itself."""
        return self in (JobStatus.COMPLETED, JobStatus.FAILED)


class JobPriority(enum.StrEnum):
    """Priority within a routing key; a worker always takes ``high`` before ``normal`` before ``low``."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @classmethod
    def parse(cls, value: JobPriority | str) -> JobPriority:
        """Accept the enum or its string (any case); raise :class:`InvalidJob` otherwise."""
        if isinstance(value, JobPriority):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            allowed = ", ".join(p.value for p in cls)
            raise InvalidJob(f"invalid priority {value!r}: use one of {allowed}") from None

    @property
    def rank(self) -> int:
        """0 for high, 1 for normal, 2 for low: the order a worker takes them in."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {JobPriority.HIGH: 0, JobPriority.NORMAL: 1, JobPriority.LOW: 2}
ALL_PRIORITIES: tuple[JobPriority, ...] = (JobPriority.HIGH, JobPriority.NORMAL, JobPriority.LOW)


def validate_routing_key(key: str) -> str:
    """Return ``key`` if it is 1-64 letters, digits, ``_`` or ``-``; raise :class:`InvalidRoutingKey`."""
    if not isinstance(key, str):
        raise InvalidRoutingKey(f"routing key must be a string, not {type(key).__name__}")
    if not _ROUTING_KEY.fullmatch(key):
        if not key:
            problem = "is empty"
        elif len(key) > 64:
            problem = f"is {len(key)} characters long"
        else:
            bad = sorted({c for c in key if not (c.isascii() and (c.isalnum() or c in "_-"))})
            problem = "contains " + ", ".join(repr(c) for c in bad)
        raise InvalidRoutingKey(
            f"invalid routing key {key!r}: it {problem}; "
            "use 1-64 characters of letters, digits, '_' and '-' (for example 'gpu' or 'us-east-1')"
        )
    return key


def backoff_seconds(attempts: int) -> float:
    """Delay before the next try after ``attempts`` failed ones: 2**attempts seconds."""
    return float(2 ** max(attempts, 0))


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
"""One encoder for every dumps: json.dumps with options builds a new one per call."""


def dumps(value: JSON) -> str:
    """Encode a JSON value compactly; raise :class:`PayloadError` if it is not JSON."""
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError) as exc:
        raise PayloadError(
            f"value is not JSON-serialisable ({exc}); use dicts, lists, strings, numbers, booleans and None"
        ) from None


def loads(text: str | bytes) -> JSON:
    """Decode JSON text; raise :class:`JobDecodeError` if it is not JSON."""
    try:
        return json.loads(text)
    except (ValueError, TypeError) as exc:
        raise JobDecodeError(f"stored data is not valid JSON: {exc}") from None


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise InvalidJob(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is UTC:  # the common case, and already what we store
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidJob(
            f"naive datetime {value.isoformat()} has no time zone; "
            "pass an aware datetime such as datetime.now(timezone.utc)"
        )
    return value.astimezone(UTC)


def _aware_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else _aware(value)


def _check_name(_inst: object, _attr: object, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidJob("job name must be a non-empty string naming a registered handler")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidJob(f"job name is {len(value)} characters long; at most {MAX_NAME_LENGTH}")


def _check_id(_inst: object, _attr: object, value: str) -> None:
    if not isinstance(value, str) or not value or len(value) > 256 or value != value.strip():
        raise InvalidJob(f"job id must be a non-empty string of at most 256 characters, got {value!r}")


def _check_routing_key(_inst: object, _attr: object, value: str) -> None:
    validate_routing_key(value)


def _check_count(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidJob(f"{attr.name} must be a whole number >= 0, got {value!r}")


def _check_max_retries(inst: object, attr: attrs.Attribute[int], value: int) -> None:
    _check_count(inst, attr, value)
    if value > 100:
        raise InvalidJob(f"max_retries must be between 0 and 100, got {value}")


def _to_priority(value: JobPriority | str) -> JobPriority:
    return JobPriority.parse(value)


def _frozen_extra(value: Mapping[str, JSON] | None) -> Mapping[str, JSON]:
    return dict(value or {})


@attrs.frozen(kw_only=True)
class Job:
    """A unit of work: a handler name, a JSON payload and its bookkeeping.

    Jobs are immutable; use :meth:`evolve` for a changed copy. Times are aware UTC
    datetimes. ``extra`` holds fields written by other implementations, kept as they
    are through every read-modify-write.
    """

    name: str = attrs.field(validator=_check_name)
    payload: JSON = None
    id: str = attrs.field(factory=lambda: str(uuid.uuid4()), validator=_check_id)
    description: str = ""
    status: JobStatus = attrs.field(default=JobStatus.PENDING, converter=JobStatus)
    priority: JobPriority = attrs.field(default=JobPriority.NORMAL, converter=_to_priority)
    routing_key: str = attrs.field(default=DEFAULT_ROUTING_KEY, validator=_check_routing_key)
    created_at: datetime = attrs.field(factory=_utcnow, converter=_aware)
    updated_at: datetime = attrs.field(factory=_utcnow, converter=_aware)
    scheduled_for: datetime | None = attrs.field(default=None, converter=_aware_or_none)
    attempts: int = attrs.field(default=0, validator=_check_count)
    max_retries: int = attrs.field(default=DEFAULT_MAX_RETRIES, validator=_check_max_retries)
    error: str = ""
    extra: Mapping[str, JSON] = attrs.field(factory=dict, converter=_frozen_extra, repr=False)
    lease_token: str = attrs.field(default="", eq=False, repr=False)
    """Which claim this copy comes from: set by :meth:`Queue.claim <bananas.protocols.Queue.claim>`,
    opaque, never part of the wire format. Settles of the job are fenced with it: they apply
    only while this claim still holds the job."""

    @classmethod
    def create(
        cls,
        name: str,
        payload: JSON = None,
        *,
        priority: JobPriority | str = JobPriority.NORMAL,
        routing_key: str = DEFAULT_ROUTING_KEY,
        description: str | None = None,
        scheduled_for: datetime | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        job_id: str | None = None,
        now: datetime | None = None,
    ) -> Job:
        """A new job, validated, with the defaults of the original Bananas.

        ``scheduled_for`` in the future makes it ``scheduled``; in the past (or now) it is
        ``pending``, to run at once. The payload must be JSON (raises :class:`PayloadError`).
        """
        dumps(payload)
        at = _aware(now) if now is not None else _utcnow()
        when = _aware_or_none(scheduled_for)
        status = JobStatus.PENDING
        if when is not None and when > at:
            status = JobStatus.SCHEDULED
        else:
            when = None
        return cls(
            name=name,
            payload=payload,
            id=job_id if job_id is not None else str(uuid.uuid4()),
            description=description or "",
            status=status,
            priority=JobPriority.parse(priority),
            routing_key=validate_routing_key(routing_key),
            created_at=at,
            updated_at=at,
            scheduled_for=when,
            max_retries=max_retries,
        )

    def evolve(self, **changes: Any) -> Job:
        """A copy with ``changes`` applied (validated like the constructor)."""
        return attrs.evolve(self, **changes)

    def set_routing_key(self, routing_key: str) -> Job:
        """A copy routed to ``routing_key``; raises :class:`InvalidRoutingKey` if it is invalid."""
        return self.evolve(routing_key=validate_routing_key(routing_key))

    def payload_as(self, cls: type[T]) -> T:
        """The payload structured into ``cls`` (a dataclass, attrs class, or plain type).

        Raises :class:`PayloadError` naming the class and what does not fit.
        """
        return structure(self.payload, cls, what=f"payload of job {self.id} ({self.name})")

    # -- wire encoding -------------------------------------------------------------

    def to_dict(self) -> dict[str, JSON]:
        """The job as the wire-format JSON object (empty optional fields left out)."""
        d: dict[str, JSON] = dict(self.extra)
        d["id"] = self.id
        d["name"] = self.name
        if self.description:
            d["description"] = self.description
        d["payload"] = self.payload
        d["status"] = self.status.value
        d["priority"] = self.priority.value
        d["routing_key"] = self.routing_key
        d["created_at"] = _format_time(self.created_at)
        d["updated_at"] = _format_time(self.updated_at)
        if self.scheduled_for is not None:
            d["scheduled_for"] = _format_time(self.scheduled_for)
        d["attempts"] = self.attempts
        d["max_retries"] = self.max_retries
        if self.error:
            d["error"] = self.error
        return d

    def to_json(self) -> str:
        """The job as wire-format JSON text; raises :class:`PayloadError` if the payload is not JSON."""
        return dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, JSON]) -> Job:
        """Read a wire-format JSON object; raises :class:`JobDecodeError` if it is not a job."""
        if not isinstance(data, Mapping):
            raise JobDecodeError(f"a job must be a JSON object, got {type(data).__name__}")
        known = {k: data[k] for k in _WIRE_FIELDS if k in data}
        extra = {k: v for k, v in data.items() if k not in _WIRE_FIELDS}
        try:
            for key in ("id", "name"):
                if not isinstance(known.get(key), str):
                    raise JobDecodeError(f"job has no string {key!r} field")
            routing_key = known.get("routing_key") or DEFAULT_ROUTING_KEY
            scheduled = known.get("scheduled_for")
            return cls(
                id=known["id"],
                name=known["name"],
                description=_str_field(known, "description"),
                payload=known.get("payload"),
                status=JobStatus(known.get("status") or JobStatus.PENDING),
                priority=JobPriority(known.get("priority") or JobPriority.NORMAL),
                routing_key=routing_key,
                created_at=_time_field(known, "created_at"),
                updated_at=_time_field(known, "updated_at", known.get("created_at")),
                scheduled_for=_parse_time(scheduled) if isinstance(scheduled, str) and scheduled else None,
                attempts=_int_field(known, "attempts", 0),
                max_retries=_int_field(known, "max_retries", DEFAULT_MAX_RETRIES),
                error=_str_field(known, "error"),
                extra=extra,
            )
        except JobDecodeError:
            raise
        except (ValueError, TypeError, InvalidJob) as exc:
            raise JobDecodeError(f"stored job {data.get('id')!r} is malformed: {exc}") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> Job:
        """Read wire-format JSON text; raises :class:`JobDecodeError` for anything that is not a job."""
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise JobDecodeError(f"stored job is not UTF-8: {exc}") from None
        return cls.from_dict(loads(text))


_parse_time = functools.lru_cache(maxsize=1024)(parse_time)
"""parse_time, remembered: jobs submitted together share created_at, jobs claimed together updated_at."""
_format_time = functools.lru_cache(maxsize=1024)(format_time)
"""format_time, remembered: a job's created_at usually equals its updated_at, and jobs
submitted together share one time."""

_WIRE_FIELDS = frozenset(
    {
        "id", "name", "description", "payload", "status", "priority", "routing_key",
        "created_at", "updated_at", "scheduled_for", "attempts", "max_retries", "error",
    }
)  # fmt: skip


def _str_field(data: Mapping[str, JSON], key: str) -> str:
    value = data.get(key) or ""
    if not isinstance(value, str):
        raise JobDecodeError(f"job field {key!r} must be a string, got {type(value).__name__}")
    return value


def _int_field(data: Mapping[str, JSON], key: str, default: int) -> int:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise JobDecodeError(f"job field {key!r} must be a whole number, got {value!r}")
    return int(value)


def _time_field(data: Mapping[str, JSON], key: str, fallback: JSON = None) -> datetime:
    value = data.get(key) or fallback
    if value is None:
        return _utcnow()
    if not isinstance(value, str):
        raise JobDecodeError(f"job field {key!r} must be an RFC 3339 string, got {value!r}")
    return _parse_time(value)


def structure(value: JSON, cls: type[T], *, what: str) -> T:
    """Structure a decoded JSON value into ``cls`` with cattrs; raise :class:`PayloadError`."""
    import cattrs  # imported on use: most jobs never structure their payload

    try:
        return cattrs.structure(value, cls)
    except Exception as exc:  # cattrs raises a variety of exception groups
        detail = "; ".join(cattrs.transform_error(exc)) if isinstance(exc, cattrs.BaseValidationError) else str(exc)
        raise PayloadError(f"{what} does not fit {cls.__name__}: {detail}") from None


@attrs.frozen(kw_only=True)
class JobResult:
    """The outcome of a job that reached a final state.

    ``result`` is the handler's return value (decoded JSON, ``None`` when it returned
    nothing); ``error`` the failure message.
    """

    job_id: str
    status: JobStatus = attrs.field(converter=JobStatus)
    result: JSON = None
    error: str = ""
    completed_at: datetime = attrs.field(factory=_utcnow, converter=_aware)
    duration: timedelta = timedelta(0)

    @status.validator
    def _final(self, _attr: object, value: JobStatus) -> None:
        if not value.is_final:
            raise InvalidJob(f"a result's status must be completed or failed, not {value.value}")

    def is_success(self) -> bool:
        """True if the job completed."""
        return self.status is JobStatus.COMPLETED

    def is_failed(self) -> bool:
        """True if the job failed for good."""
        return self.status is JobStatus.FAILED

    def result_as(self, cls: type[T]) -> T:
        """The result value structured into ``cls``; raises :class:`PayloadError` if it does not fit."""
        return structure(self.result, cls, what=f"result of job {self.job_id}")

    def to_hash(self) -> dict[str, str]:
        """The wire-format result hash: status, completed_at, duration_ms, result or error."""
        fields = {
            "status": self.status.value,
            "completed_at": format_time(self.completed_at),
            "duration_ms": str(self.duration // timedelta(milliseconds=1)),
        }
        if self.is_success() and self.result is not None:
            fields["result"] = dumps(self.result)
        if self.error:
            fields["error"] = self.error
        return fields

    @classmethod
    def from_hash(cls, job_id: str, fields: Mapping[str, str] | Mapping[bytes, bytes]) -> JobResult:
        """Read a wire-format result hash; raises :class:`JobDecodeError` if it is malformed."""
        try:
            text = {
                (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in fields.items()
            }
            raw = text.get("result")
            duration_ms = text.get("duration_ms") or "0"
            return cls(
                job_id=job_id,
                status=JobStatus(text["status"]),
                result=loads(raw) if raw else None,
                error=text.get("error", ""),
                completed_at=parse_time(text["completed_at"]) if text.get("completed_at") else _utcnow(),
                duration=timedelta(milliseconds=float(duration_ms)),
            )
        except JobDecodeError:
            raise
        except (KeyError, ValueError, TypeError, UnicodeDecodeError, InvalidJob) as exc:
            raise JobDecodeError(f"stored result of job {job_id!r} is malformed: {exc!r}") from None

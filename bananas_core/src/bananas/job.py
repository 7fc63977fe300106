"""The job model: jobs, results, statuses, priorities and their JSON wire encoding.

The encoding is the Redis wire format (``docs/redis-wire-format.md``), shared by every backend and by the
other Bananas implementations: a job is a JSON object, a result a flat mapping of strings.

What a submit accepts and what a decode accepts are the same, so a job the client takes can
always be stored, read back and run, and a record another producer wrote beyond these limits
is a :class:`~bananas.errors.JobDecodeError`, never a crash:

- nesting: a payload (a result, an unknown field's value) holds at most :data:`MAX_DEPTH`
  levels of arrays and objects; a stored job, which wraps its payload, one more;
- numbers: finite floats (no NaN or Infinity, which JSON has no literal for) and integers
  of any size Python reads and writes (up to 4300 digits); other implementations' payloads
  carry big integers, and they survive byte for byte (a JavaScript reader loses precision
  beyond 2**53, a Go one beyond 64 bits: keep to those where such readers matter);
- times: ``scheduled_for`` from :data:`MIN_TIME` to :data:`MAX_TIME`, a range that RFC 3339
  (four-digit years) and float Unix timestamps both hold, with a year to spare;
- fields: names and ids are non-empty strings without control characters; description and
  error are strings.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import math
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias, TypeVar

import attrs

from bananas.errors import InvalidJob, InvalidRoutingKey, JobDecodeError, PayloadError
from bananas.groups import validate_group
from bananas.timefmt import format_time, parse_time

__all__ = [
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_ROUTING_KEY",
    "JSON",
    "MAX_BACKOFF_EXPONENT",
    "MAX_DEPTH",
    "MAX_INT",
    "MAX_TIME",
    "MIN_INT",
    "MIN_TIME",
    "Job",
    "JobPriority",
    "JobResult",
    "JobStatus",
    "backoff_seconds",
    "check_time",
    "dumps",
    "loads",
    "time_after",
    "unchecked_copy",
    "validate_routing_key",
]

JSON: TypeAlias = Any
"""Any value the standard :mod:`json` module can encode: dict, list, str, int, float, bool, None."""

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_ROUTING_KEY = "default"
DEFAULT_MAX_RETRIES = 3
MAX_NAME_LENGTH = 256
_ROUTING_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")

# -- the limits: one set, enforced by every encode (submit) and every decode (read) --------

MAX_DEPTH = 64
"""Most levels of arrays and objects in a payload, a result or an unknown field's value
(``[]`` is one level, ``{"a": [1]}`` two). Deep enough for any real document, shallow enough
that a decoder deep in a worker's call stack never runs out of stack."""
MAX_DOCUMENT_DEPTH = MAX_DEPTH + 1
"""Most levels in a stored job's JSON: the job object around a payload of :data:`MAX_DEPTH`.
:func:`dumps` and :func:`loads` enforce this one, so any stored job can be re-encoded."""
MAX_INT = 2**63 - 1
"""Largest ``attempts`` count: a signed 64-bit integer (Go ``int64``, SQL ``bigint``)."""
MIN_INT = -(2**63)
"""Smallest signed 64-bit integer."""
MIN_TIME = datetime(1970, 1, 1, tzinfo=UTC)
"""Earliest ``scheduled_for`` (the Unix epoch: float timestamps are never negative)."""
MAX_TIME = datetime(9999, 1, 1, tzinfo=UTC)
"""Latest ``scheduled_for``: RFC 3339 has four-digit years; a year is left for time zones and arithmetic."""
MAX_BACKOFF_EXPONENT = 32
"""Retry backoff is 2**attempts seconds up to 2**32 s (about 136 years), so a retry time stays representable."""

_TIME_RANGE = f"from {format_time(MIN_TIME)} to {format_time(MAX_TIME)}"
_NUMBER_RULE = "numbers must be finite (JSON has no NaN or Infinity) and integers at most 4300 digits long"


class _Refused(ValueError):
    """JSON text or a value breaks a limit; the message says which and what is allowed."""


class _TooDeep(_Refused):
    """JSON text or a value nests deeper than allowed."""

    def __init__(self, limit: int) -> None:
        super().__init__(_depth_message(limit))


def _depth_message(limit: int) -> str:
    return f"nests arrays and objects more than {limit} levels deep; at most {limit} levels are allowed"


class JobStatus(enum.StrEnum):
    """Where a job is in its life."""

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    SCHEDULED = "scheduled"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """True for ``completed``, ``failed`` and ``cancelled``: the job will not run again by itself."""
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


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
    """Delay before the next try after ``attempts`` failed ones: 2**attempts seconds, at most
    2**:data:`MAX_BACKOFF_EXPONENT` (so that now plus the delay is always a valid time)."""
    return float(2 ** min(max(attempts, 0), MAX_BACKOFF_EXPONENT))


def _refuse_constant(name: str) -> float:
    raise _Refused(f"{name} is not a JSON number (JSON has no NaN or Infinity); {_NUMBER_RULE}")


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
"""One encoder for every dumps: json.dumps with options builds a new one per call."""
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
"""One decoder for every loads; NaN and Infinity literals are refused (they could never be written back)."""


def _marks_table() -> bytes:
    """A bytes.translate table that keeps only what the limits look at: digits (as ``0``),
    exponents (``e``), ``+``, openers (``[``) and what may end a number (``t``)."""
    table = bytearray(b" " * 256)
    for c in b"0123456789":
        table[c] = ord("0")
    for c in b"eE":
        table[c] = ord("e")
    table[ord("+")] = ord("+")
    for c in b"[{":
        table[c] = ord("[")
    for c in b",]} \t\n\r":
        table[c] = ord("t")
    return bytes(table)


_MARKS = _marks_table()
_LONG_DIGITS = b"0" * 19  # |n| > MAX_INT needs 19 digits; so does a float too large for its exponent
_BIG_EXPONENTS = (b"0e000", b"0e+000")  # a float beyond 1.8e308 with fewer digits needs one of these
_EXPONENT_END = re.compile(rb"0e\+?0{3,}(?:t|\Z)")  # ... that ends where a number ends
_BRACKETS = bytes.maketrans(b"{}", b"[]")  # for nesting, objects count like arrays
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'[]{}"')


def _check_text(raw: bytes, limit: int, *, floats: bool = True) -> bool:
    """Check the nesting of JSON ``raw`` against ``limit`` (raises :class:`_TooDeep`); return
    whether it may hold a number beyond the limits (then the value must be walked).

    A few C-speed passes over the bytes settle nearly every document. ``floats=False`` skips
    looking for floats beyond 1.8e308 (text that Python's own encoder wrote has none).
    """
    marks = raw.translate(_MARKS)
    if marks.count(b"[") > limit and not _nests_within(raw, limit):
        raise _TooDeep(limit)
    if _LONG_DIGITS in marks:
        return True
    if floats:
        for pattern in _BIG_EXPONENTS:
            at = marks.find(pattern)
            while at >= 0:
                if _EXPONENT_END.match(marks, at):
                    return True
                at = marks.find(pattern, at + 1)
    return False


def _nests_within(raw: bytes, limit: int) -> bool:
    """True if the arrays and objects of well-formed JSON ``raw`` nest at most ``limit`` deep.

    Escapes are dropped and everything but quotes and brackets deleted; strings then are
    ``""`` pairs, unless one holds a bracket (the slow path cuts those out). Each pass of the
    loop removes the innermost level of what is left. False also for malformed text.
    """
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = raw.translate(_BRACKETS, _NOT_STRUCTURE).replace(b'""', b"")
    if b'"' in structure:  # a string holds a bracket
        parts = raw.split(b'"')
        if len(parts) % 2 == 0:  # an unterminated string
            return False
        structure = b"".join(parts[::2]).translate(_BRACKETS, _NOT_STRUCTURE)
    for _ in range(limit):
        if not structure:
            return True
        structure = structure.replace(b"[]", b"")
    return not structure


def _value_nests_within(value: JSON, limit: int) -> bool:
    """True if the lists and dicts of ``value`` nest at most ``limit`` deep (walks at most that deep)."""
    level: list[Any] = [value]
    for _ in range(limit + 1):
        below: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                below.extend(v for v in item.values() if isinstance(v, dict | list | tuple))
            elif isinstance(item, list | tuple):
                below.extend(v for v in item if isinstance(v, dict | list | tuple))
        if not below:
            return True
        level = below
    return False


def _bad_number(value: JSON) -> str | None:
    """What is wrong with the first number of ``value`` beyond the limits, or None."""
    stack: list[Any] = [value]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if isinstance(item, dict | list | tuple):
            if id(item) in seen:
                continue
            seen.add(id(item))
            stack.extend(item.values() if isinstance(item, dict) else item)
        elif isinstance(item, bool):
            continue
        elif isinstance(item, float) and not math.isfinite(item):
            return f"it holds the number {item!r}, which JSON cannot represent; {_NUMBER_RULE}"
    return None


def _on_fresh_stack(fn: Callable[[Any], R], arg: Any, limit: int) -> R:
    """``fn(arg)`` on a new thread's empty stack, for a caller already deep in recursion
    (the json module recurses once per level of nesting). Rare: costs a thread start.

    ``arg`` has been found to nest at most ``limit`` deep; should ``fn`` run out of stack all
    the same, that is the data's fault (:class:`_TooDeep`), not the caller's.
    """
    box: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            box.append((True, fn(arg)))
        except RecursionError:
            box.append((False, _TooDeep(limit)))
        except BaseException as exc:  # handed to the caller below
            box.append((False, exc))

    thread = threading.Thread(target=run, name="bananas-json", daemon=True)
    thread.start()
    thread.join()
    ok, result = box[0]
    if not ok:
        raise result
    return result  # type: ignore[no-any-return]


def _encode(value: JSON, limit: int) -> str:
    """Compact JSON text of ``value``; raises ``TypeError`` / ``ValueError`` (:class:`_Refused`
    for a broken limit) if it is not JSON within the limits."""
    try:
        text = _ENCODER.encode(value)
    except RecursionError:
        if not _value_nests_within(value, limit):
            raise _TooDeep(limit) from None
        text = _on_fresh_stack(_ENCODER.encode, value, limit)  # the caller's stack is deep, not the value
    except ValueError:  # NaN or Infinity, a circular structure, an int too long to print
        problem = _bad_number(value)
        if problem is None:
            raise
        raise _Refused(problem) from None
    if _check_text(text.encode("utf-8", "surrogatepass"), limit, floats=False):
        problem = _bad_number(value)
        if problem is not None:
            raise _Refused(problem)
    return text


def _decode(data: str | bytes, limit: int) -> JSON:
    """The value of JSON ``data`` (UTF-8 when bytes); raises ``ValueError`` (:class:`_Refused`
    for a broken limit) if it is not JSON within the limits."""
    if isinstance(data, str):
        text, raw = data, data.encode("utf-8", "surrogatepass")
    else:
        text, raw = data.decode("utf-8"), data
    try:
        suspect = _check_text(raw, limit)
    except _Refused:
        with contextlib.suppress(RecursionError):
            _DECODER.decode(text)  # malformed text says where, rather than "too deep"
        raise
    try:
        value = _DECODER.decode(text)
    except RecursionError:  # the text nests within the limit: it is the caller's stack that is deep
        value = _on_fresh_stack(_DECODER.decode, text, limit)
    if suspect:
        problem = _bad_number(value)
        if problem is not None:
            raise _Refused(problem)
    return value


def _reason(exc: BaseException) -> str:
    """``exc`` as the "why" of an error message: one line, not too long."""
    if isinstance(exc, json.JSONDecodeError):
        text = f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    elif isinstance(exc, UnicodeDecodeError):
        text = f"not UTF-8 ({exc.reason} at byte {exc.start})"
    elif isinstance(exc, ValueError | TypeError | KeyError):
        text = str(exc) if not isinstance(exc, KeyError) else f"no {exc} field"
    else:
        text = f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= 400 else text[:399] + "…"


def dumps(value: JSON, *, max_depth: int = MAX_DOCUMENT_DEPTH) -> str:
    """Encode a JSON value compactly; raise :class:`PayloadError` if it is not JSON or breaks a
    limit (nesting deeper than ``max_depth``, an integer beyond 64 bits, NaN or Infinity).

    Anything it returns, :func:`loads` reads back with the same ``max_depth``.
    """
    return _check_payload(value, "value", max_depth)


def _check_payload(value: JSON, what: str, limit: int = MAX_DEPTH) -> str:
    """The JSON text of ``value``; raises :class:`PayloadError` naming ``what`` if it is not JSON
    or breaks a limit."""
    try:
        return _encode(value, limit)
    except _TooDeep:
        raise PayloadError(f"{what} {_depth_message(limit)}") from None
    except _Refused as exc:
        raise PayloadError(f"{what} is not acceptable: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise PayloadError(
            f"{what} is not JSON-serialisable ({exc}); use dicts, lists, strings, numbers, booleans and None"
        ) from None


def loads(text: str | bytes, *, max_depth: int = MAX_DOCUMENT_DEPTH) -> JSON:
    """Decode JSON text (UTF-8 when bytes); raise :class:`JobDecodeError`, and nothing else, if it
    is not JSON or breaks a limit (see :func:`dumps`).

    Decodes anything within the limits also when called deep in a call stack.
    """
    try:
        return _decode(text, max_depth)
    except RecursionError:  # not the text: the caller's stack is exhausted (see _on_fresh_stack)
        raise
    except Exception as exc:  # anything the bytes can make go wrong is the data's fault
        raise JobDecodeError(f"stored data is unreadable: {_reason(exc)}") from None


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _show(value: object) -> str:
    """A short, safe repr of ``value`` for an error message."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value)
    except Exception:  # a repr that fails (or nests too deep) must not hide the real error
        text = f"a {type(value).__name__}"
    return text if len(text) <= 80 else text[:79] + "…"


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
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidJob(f"time {value.isoformat()} falls outside years 1-9999 in UTC") from None


def check_time(value: datetime, what: str = "scheduled_for") -> datetime:
    """``value`` as an aware UTC datetime if it lies from :data:`MIN_TIME` to :data:`MAX_TIME`;
    raise :class:`InvalidJob` naming ``what`` otherwise (also for a naive datetime)."""
    try:
        when = _aware(value)
    except InvalidJob as exc:
        raise InvalidJob(f"{what}: {exc}; it must lie {_TIME_RANGE}") from None
    if not MIN_TIME <= when <= MAX_TIME:
        raise InvalidJob(f"{what} {format_time(when)} is out of range: it must lie {_TIME_RANGE}")
    return when


def time_after(now: datetime, delay: float | timedelta, *, what: str = "scheduled_for") -> datetime:
    """``now`` plus ``delay`` (a timedelta, or seconds; negative means in the past).

    Raises :class:`InvalidJob` naming ``what`` unless ``delay`` is a finite number or a
    timedelta and the time it gives lies from :data:`MIN_TIME` to :data:`MAX_TIME`.
    """
    if isinstance(delay, timedelta):
        step = delay
    elif isinstance(delay, bool) or not isinstance(delay, int | float):
        raise InvalidJob(f"{what} must be an aware datetime, a timedelta or a delay in seconds, got {_show(delay)}")
    elif isinstance(delay, float) and not math.isfinite(delay):
        raise InvalidJob(f"{what}: a delay of {delay!r} seconds is not a finite number")
    else:
        try:
            step = timedelta(seconds=delay)
        except OverflowError:
            raise InvalidJob(
                f"{what}: a delay of {_show(delay)} seconds is out of range; the time must lie {_TIME_RANGE}"
            ) from None
    try:
        when = _aware(now) + step
    except OverflowError:
        raise InvalidJob(f"{what}: a delay of {step} is out of range; the time must lie {_TIME_RANGE}") from None
    return check_time(when, what)


def _scheduled_time(value: datetime | None) -> datetime | None:
    return None if value is None else check_time(value)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _control_char(value: str) -> str | None:
    """The first control character of ``value`` (newline, tab, NUL, ...), or None."""
    if value.isprintable():  # the common case, decided in C
        return None
    m = _CONTROL.search(value)
    return m.group() if m else None


def _check_name(_inst: object, _attr: object, value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidJob(f"job name must be a non-empty string naming a registered handler, got {_show(value)}")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidJob(f"job name is {len(value)} characters long; at most {MAX_NAME_LENGTH}")
    bad = _control_char(value)
    if bad is not None:
        raise InvalidJob(f"job name {_show(value)} contains the control character {bad!r}; use printable characters")


def _check_id(_inst: object, _attr: object, value: str) -> None:
    if (
        not isinstance(value, str)
        or not value
        or len(value) > 256
        or value != value.strip()
        or _control_char(value) is not None
    ):
        raise InvalidJob(
            "job id must be a non-empty string of at most 256 characters, without surrounding spaces "
            f"or control characters, got {_show(value)}"
        )


def _check_str(_inst: object, attr: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str):
        raise InvalidJob(f"{attr.name} must be a string, got {type(value).__name__} {_show(value)}")


def _check_routing_key(_inst: object, _attr: object, value: str) -> None:
    validate_routing_key(value)


def _check_count(_inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_INT:
        raise InvalidJob(f"{attr.name} must be a whole number from 0 to {MAX_INT}, got {_show(value)}")


def _check_max_retries(inst: object, attr: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
        raise InvalidJob(f"max_retries must be a whole number from 0 to 100, got {_show(value)}")


def _check_group(_inst: object, _attr: object, value: str | None) -> None:
    if value is not None:
        validate_group(value)


def _to_priority(value: JobPriority | str) -> JobPriority:
    return value if type(value) is JobPriority else JobPriority.parse(value)


def _to_status(value: JobStatus | str) -> JobStatus:
    return value if type(value) is JobStatus else JobStatus(value)


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
    description: str = attrs.field(default="", validator=_check_str)
    status: JobStatus = attrs.field(default=JobStatus.PENDING, converter=_to_status)
    priority: JobPriority = attrs.field(default=JobPriority.NORMAL, converter=_to_priority)
    routing_key: str = attrs.field(default=DEFAULT_ROUTING_KEY, validator=_check_routing_key)
    created_at: datetime = attrs.field(factory=_utcnow, converter=_aware)
    updated_at: datetime = attrs.field(factory=_utcnow, converter=_aware)
    scheduled_for: datetime | None = attrs.field(default=None, converter=_scheduled_time)
    attempts: int = attrs.field(default=0, validator=_check_count)
    max_retries: int = attrs.field(default=DEFAULT_MAX_RETRIES, validator=_check_max_retries)
    error: str = attrs.field(default="", validator=_check_str)
    extra: Mapping[str, JSON] = attrs.field(factory=dict, converter=_frozen_extra, repr=False)
    group: str | None = attrs.field(default=None, validator=_check_group)
    """The group the job belongs to (see :mod:`bananas.groups`), or ``None``; on the wire the
    optional ``group`` field, left out when ``None``."""
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
        group: str | None = None,
    ) -> Job:
        """A new job, validated, with the defaults of the original Bananas.

        ``scheduled_for`` in the future makes it ``scheduled``; in the past (or now) it is
        ``pending``, to run at once; either way it must lie from :data:`MIN_TIME` to
        :data:`MAX_TIME`. Raises :class:`InvalidJob` naming the field for anything a worker
        could not read back, :class:`PayloadError` for a payload that is not JSON or breaks
        the limits (see the module docstring). ``group`` puts the job in a group (see
        :mod:`bananas.groups`); an invalid name raises :class:`~bananas.errors.InvalidGroup`.
        """
        _check_payload(payload, "payload")
        at = _aware(now) if now is not None else _utcnow()
        when = None if scheduled_for is None else check_time(scheduled_for)
        status = JobStatus.PENDING
        if when is not None and when > at:
            status = JobStatus.SCHEDULED
        else:
            when = None
        return cls(
            name=name,
            payload=payload,
            id=job_id if job_id is not None else str(uuid.uuid4()),
            description="" if description is None else description,
            status=status,
            priority=JobPriority.parse(priority),
            routing_key=validate_routing_key(routing_key),
            created_at=at,
            updated_at=at,
            scheduled_for=when,
            max_retries=max_retries,
            group=None if group is None else validate_group(group),
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
        if self.group is not None:
            d["group"] = self.group
        return d

    def to_json(self) -> str:
        """The job as wire-format JSON text; raises :class:`PayloadError` if the payload (or an
        unknown field) is not JSON or breaks the limits, so that nothing unreadable is stored."""
        try:
            return _encode(self.to_dict(), MAX_DOCUMENT_DEPTH)
        except _TooDeep:
            problem = f"its payload (or an unknown field) {_depth_message(MAX_DEPTH)}"
        except _Refused as exc:
            problem = f"its payload (or an unknown field): {exc}"
        except (TypeError, ValueError) as exc:
            problem = f"its payload (or an unknown field) is not JSON-serialisable ({exc})"
        raise PayloadError(f"job {_show(self.id)} cannot be stored: {problem}")

    @classmethod
    def from_dict(cls, data: Mapping[str, JSON], *, lease_token: str = "") -> Job:
        """Read a wire-format JSON object; raises :class:`JobDecodeError`, and nothing else, if
        it is not a job.

        ``data`` is what :func:`loads` returned, which enforces the limits on the payload and
        unknown fields; every other field is checked here. A backend reading a job it has just
        claimed passes the claim's ``lease_token`` (it is not part of the stored record).
        """
        if not isinstance(data, Mapping):
            raise JobDecodeError(f"a job must be a JSON object, got {type(data).__name__}")
        try:
            return cls._read(data, lease_token)
        except RecursionError:  # not the data: the caller's stack is exhausted
            raise
        except Exception as exc:  # deliberately broad: whatever stored data makes go wrong is its fault
            raise JobDecodeError(f"stored job {_stored_id(data)} is unreadable: {_reason(exc)}") from None

    @classmethod
    def _read(cls, data: Mapping[str, JSON], lease_token: str = "") -> Job:
        if data.keys() <= _WIRE_FIELDS:  # the common case: no fields of other implementations
            known, extra = data, {}
        else:
            known = {k: data[k] for k in _WIRE_FIELDS if k in data}
            extra = {k: v for k, v in data.items() if k not in _WIRE_FIELDS}
        for key in ("id", "name"):
            if not isinstance(known.get(key), str):
                raise JobDecodeError(f"it has no string {key!r} field")
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
            group=_group_field(known),
            lease_token=lease_token,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Job:
        """Read wire-format JSON text (UTF-8 when bytes); raises :class:`JobDecodeError`, and
        nothing else, for anything that is not a job within the limits.

        Reads any job within the limits also when called deep in a call stack.
        """
        try:
            data = _decode(text, MAX_DOCUMENT_DEPTH)
        except RecursionError:  # not the text: the caller's stack is exhausted
            raise
        except _TooDeep:
            raise JobDecodeError(
                f"stored job is unreadable: its payload (or another field) {_depth_message(MAX_DEPTH)}"
            ) from None
        except Exception as exc:  # deliberately broad: whatever stored data makes go wrong is its fault
            raise JobDecodeError(f"stored job is unreadable: {_reason(exc)}") from None
        return cls.from_dict(data)


def _stored_id(data: Mapping[str, JSON]) -> str:
    try:
        ident = data.get("id")
    except Exception:  # a broken mapping: say nothing of its id
        ident = None
    return _show(ident) if isinstance(ident, str) else "(with no string id)"


_JOB_FIELDS = tuple(field.name for field in attrs.fields(Job))


def unchecked_copy(job: Job, **changes: Any) -> Job:
    """A copy of ``job`` with ``changes``, NOT validated: for a backend reporting the job it
    has just stored from a copy it built itself (the new ``status``, an aware UTC
    ``updated_at``, ...), where :meth:`Job.evolve` would check every field again. Values of
    the wrong type make a broken job; anything read from storage goes through
    :meth:`Job.from_dict`."""
    new = object.__new__(Job)
    put = object.__setattr__
    for name in _JOB_FIELDS:
        put(new, name, changes.pop(name) if name in changes else getattr(job, name))
    if changes:
        raise TypeError(f"Job has no field(s) {', '.join(sorted(changes))}")
    return new


_parse_time = functools.lru_cache(maxsize=1024)(parse_time)
"""parse_time, remembered: jobs submitted together share created_at, jobs claimed together updated_at."""
_format_time = functools.lru_cache(maxsize=1024)(format_time)
"""format_time, remembered: a job's created_at usually equals its updated_at, and jobs
submitted together share one time."""

_WIRE_FIELDS = frozenset(
    {
        "id", "name", "description", "payload", "status", "priority", "routing_key",
        "created_at", "updated_at", "scheduled_for", "attempts", "max_retries", "error", "group",
    }
)  # fmt: skip


def _str_field(data: Mapping[str, JSON], key: str) -> str:
    value = data.get(key) or ""
    if not isinstance(value, str):
        raise JobDecodeError(f"job field {key!r} must be a string, got {type(value).__name__}")
    return value


def _group_field(data: Mapping[str, JSON]) -> str | None:
    value = data.get("group")
    if value is None:
        return None
    if not isinstance(value, str):
        raise JobDecodeError(f"job field 'group' must be a string, got {_show(value)}")
    return validate_group(value)


def _int_field(data: Mapping[str, JSON], key: str, default: int) -> int:
    value = data.get(key, default)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():  # another producer's 3.0
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise JobDecodeError(f"job field {key!r} must be a whole number, got {_show(value)}")
    return value


def _time_field(data: Mapping[str, JSON], key: str, fallback: JSON = None) -> datetime:
    value = data.get(key) or fallback
    if value is None:
        return _utcnow()
    if not isinstance(value, str):
        raise JobDecodeError(f"job field {key!r} must be an RFC 3339 string, got {_show(value)}")
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
    nothing); ``error`` the failure message. A result is held to the limits of :func:`dumps`.
    """

    job_id: str
    status: JobStatus = attrs.field(converter=JobStatus)
    result: JSON = None
    error: str = attrs.field(default="", validator=_check_str)
    completed_at: datetime = attrs.field(factory=_utcnow, converter=_aware)
    duration: timedelta = timedelta(0)

    @status.validator
    def _final(self, _attr: object, value: JobStatus) -> None:
        if not value.is_final:
            raise InvalidJob(f"a result's status must be completed, failed or cancelled, not {value.value}")

    def is_success(self) -> bool:
        """True if the job completed."""
        return self.status is JobStatus.COMPLETED

    def is_failed(self) -> bool:
        """True if the job failed for good."""
        return self.status is JobStatus.FAILED

    def is_cancelled(self) -> bool:
        """True if the job was cancelled (``client.cancel``) before it finished."""
        return self.status is JobStatus.CANCELLED

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
        """Read a wire-format result hash; raises :class:`JobDecodeError`, and nothing else, if it
        is malformed or its result breaks the limits of :func:`loads`."""
        try:
            text = {
                (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in fields.items()
            }
            raw = text.get("result")
            return cls(
                job_id=job_id,
                status=JobStatus(text["status"]),
                result=_decode(raw, MAX_DOCUMENT_DEPTH) if raw else None,
                error=text.get("error", ""),
                completed_at=parse_time(text["completed_at"]) if text.get("completed_at") else _utcnow(),
                duration=_duration(text.get("duration_ms") or "0"),
            )
        except RecursionError:  # not the data: the caller's stack is exhausted
            raise
        except Exception as exc:  # deliberately broad: whatever stored data makes go wrong is its fault
            raise JobDecodeError(f"stored result of job {_show(job_id)} is unreadable: {_reason(exc)}") from None


_MAX_DURATION_MS = timedelta.max // timedelta(milliseconds=1)


def _duration(text: str) -> timedelta:
    """A ``duration_ms`` field as a timedelta; ``ValueError`` unless a finite number of milliseconds >= 0."""
    ms = float(text)
    if not 0 <= ms <= _MAX_DURATION_MS:  # also NaN
        raise ValueError(f"duration_ms must be a number of milliseconds from 0 to {_MAX_DURATION_MS}, got {text!r}")
    return timedelta(milliseconds=ms)

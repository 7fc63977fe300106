"""RFC 3339 times as the wire format writes and reads them.

Writers produce UTC with a ``Z`` and trim trailing fractional zeros (like Go's
``RFC3339Nano``). Readers accept 0-9 fractional digits, ``Z`` or a numeric offset,
and a time with no offset at all, which is read as UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

__all__ = ["format_time", "from_timestamp", "parse_time", "to_timestamp"]

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})"
    r"(?:[.,](\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?"
)

_CANONICAL = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?Z")
"""What writers produce (UTC, ``Z``): ``datetime.fromisoformat`` reads it, in C, as the general
parser would (fractional digits past the sixth dropped)."""


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 time into an aware UTC datetime; raise ``ValueError`` (and nothing else)
    if it is not one, or not one Python can hold."""
    if _CANONICAL.fullmatch(text):
        try:
            return datetime.fromisoformat(text)
        except ValueError:  # e.g. a leap second, or year 0: the general parser says what is wrong
            pass
    return _parse_general(text)


def _parse_general(text: str) -> datetime:
    m = _RFC3339.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    frac = m.group(7) or ""
    micro = int((frac + "000000")[:6])
    if second == 60:  # a leap second: the instant after :59
        second = 59
        micro = 999999
    tz: timezone = UTC
    if m.group(9):
        sign = 1 if m.group(9) == "+" else -1
        offset = timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        tz = timezone(sign * offset)
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz).astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValueError(f"RFC 3339 time {text!r} falls outside years 1-9999 in UTC") from None


def format_time(value: datetime) -> str:
    """Format an aware datetime as UTC RFC 3339 with ``Z``, fractional zeros trimmed."""
    if value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError("cannot format a naive datetime; give it a time zone")
        value = value.astimezone(UTC)
    text = value.isoformat()[:-6]  # drop "+00:00"; isoformat is twice as fast as strftime
    return (text.rstrip("0") if value.microsecond else text) + "Z"


def to_timestamp(value: datetime) -> float:
    """Unix seconds of an aware datetime."""
    return value.timestamp()


def from_timestamp(seconds: float) -> datetime:
    """An aware UTC datetime from Unix seconds; ``ValueError`` for NaN, infinity or a time
    outside years 1-9999."""
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError):
        raise ValueError(f"{seconds!r} Unix seconds is not a time between years 1 and 9999") from None

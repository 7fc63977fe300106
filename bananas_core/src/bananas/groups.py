"""Groups with limits: the group a job belongs to, the limits kept in the store, and the rules.

``submit_job(..., group="tenant-42")`` puts a job in a group. A group's limit, kept in the
store so that every worker obeys it, caps how many of its jobs run at once (``max_running``,
across all workers) and how many start per window (``rate``, e.g. ``"10/s"``). The limit stored
for ``"*"`` is the default: a group without a limit of its own uses it (each group on its own:
``max_running=2`` under ``"*"`` lets every group run two). A group's own limit replaces the
default entirely; an own limit with neither field set exempts the group from the default.

The rules are here, decided once; backends store the limits and the running jobs and starts,
and apply :func:`admits`:

- a claim takes a job of a group only while fewer than ``max_running`` of the group's claimed
  jobs still have a lease running (a slot is freed by any settle, and at the latest when the
  lease deadline passes, so a crashed worker leaks nothing), and while :func:`rate_admits`;
  ``max_running=0`` pauses the group;
- a rate of ``count`` per ``per`` seconds spaces the starts evenly: a start at time ``t``
  admits the group's next one at ``t + per / count`` (a sliding window of ``per / count``
  seconds holding one start), so no window of ``per`` seconds ever holds more than ``count``
  starts and a backlog starts at the rate's pace rather than in bursts: ``"5/s"`` starts 20 jobs
  over 3.8 s, one every 0.2 s, never 5 at once;
- a job held back stays where it is (no attempt counted, no error) and claims go on past it;
  within one routing key and priority, groups (and the jobs without a group, together) are
  served in turn.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping

import attrs

from bananas.errors import InvalidGroup, JobDecodeError

__all__ = [
    "DEFAULT_GROUP",
    "MAX_GROUP_LENGTH",
    "MAX_RATE_COUNT",
    "MAX_RUNNING_LIMIT",
    "NO_LIMIT",
    "UNREADABLE_LIMIT",
    "GroupLimit",
    "Rate",
    "admits",
    "counted_starts",
    "effective_limit",
    "next_start_at",
    "rate_admits",
    "unreadable_limit",
    "validate_group",
    "validate_limit_target",
]

log = logging.getLogger("bananas.groups")

DEFAULT_GROUP = "*"
"""The name a default limit is stored under: it applies to every group without a limit of its own."""

MAX_GROUP_LENGTH = 128
"""The longest group name, in characters."""

MAX_RUNNING_LIMIT = 1_000_000
"""The largest ``max_running``."""

MAX_RATE_COUNT = 100_000
"""The most starts a rate may allow per window."""

_GROUP = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
_GROUP_RULE = (
    f"use 1-{MAX_GROUP_LENGTH} characters of ASCII letters, digits, '_', '-', '.', ':' and '@' "
    "(for example 'tenant-42' or 'org:acme')"
)
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"\s*(\d+)\s*/\s*([smh])\s*")
_RATE_RULE = (
    f"write it as COUNT/UNIT with a whole COUNT from 1 to {MAX_RATE_COUNT} and UNIT s, m or h (e.g. '10/s', '100/m')"
)


def validate_group(name: object) -> str:
    """Return ``name`` if it is a valid group name; raise :class:`~bananas.errors.InvalidGroup`
    saying what is wrong and what is allowed (``"*"`` names the default limit, not a group)."""
    if not isinstance(name, str):
        raise InvalidGroup(f"a group name must be a string, not {type(name).__name__}; {_GROUP_RULE}")
    if _GROUP.fullmatch(name):
        return name
    if name == DEFAULT_GROUP:
        problem = "is '*', which names the default limit of every group, not a group a job can be in"
    elif not name:
        problem = "is empty"
    elif len(name) > MAX_GROUP_LENGTH:
        problem = f"is {len(name)} characters long"
    else:
        bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c in "_-.:@"))})
        problem = "contains " + ", ".join(repr(c) for c in bad)
    shown = name if len(name) <= 80 else name[:79] + "…"
    raise InvalidGroup(f"invalid group {shown!r}: it {problem}; {_GROUP_RULE}")


def validate_limit_target(name: object) -> str:
    """Return ``name`` if a limit may be stored under it (a group name, or ``"*"`` for the
    default); raise :class:`~bananas.errors.InvalidGroup` otherwise."""
    return DEFAULT_GROUP if name == DEFAULT_GROUP else validate_group(name)


@attrs.frozen
class Rate:
    """At most ``count`` starts in any window of ``per`` seconds (1, 60 or 3600), spaced evenly:
    the store enforces a sliding window of :attr:`window` seconds holding :attr:`burst` start."""

    count: int
    per: float

    @property
    def window(self) -> float:
        """Seconds a start counts against the rate: ``per / count``, the spacing of the starts."""
        return self.per / self.count

    @property
    def burst(self) -> int:
        """Starts one :attr:`window` may hold: one (starts are spaced, never bunched)."""
        return 1

    def __attrs_post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or not 1 <= self.count <= MAX_RATE_COUNT:
            raise InvalidGroup(f"invalid rate: a count of {self.count!r} starts; {_RATE_RULE}")
        if self.per not in _UNITS.values():
            raise InvalidGroup(f"invalid rate: a window of {self.per!r} seconds; {_RATE_RULE}")

    @classmethod
    def parse(cls, value: Rate | str) -> Rate:
        """``"10/s"``, ``"100/m"``, ``"5/h"`` (or a :class:`Rate`, returned as it is); raises
        :class:`~bananas.errors.InvalidGroup` saying what is allowed."""
        if isinstance(value, Rate):
            return value
        if not isinstance(value, str):
            raise InvalidGroup(f"invalid rate {value!r}: it must be a string; {_RATE_RULE}")
        match = _RATE.fullmatch(value)
        if match is None:
            shown = value if len(value) <= 40 else value[:39] + "…"
            raise InvalidGroup(f"invalid rate {shown!r}: {_RATE_RULE}")
        if len(match.group(1)) > 7:
            raise InvalidGroup(f"invalid rate {value.strip()!r}: {_RATE_RULE}")
        return cls(int(match.group(1)), _UNITS[match.group(2)])

    def __str__(self) -> str:
        unit = next(u for u, seconds in _UNITS.items() if seconds == self.per)
        return f"{self.count}/{unit}"


def _to_rate(value: Rate | str | None) -> Rate | None:
    return None if value is None else Rate.parse(value)


def _check_max_running(_inst: object, _attr: object, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RUNNING_LIMIT:
        raise InvalidGroup(
            f"invalid max_running {value!r}: use a whole number from 0 (paused) to {MAX_RUNNING_LIMIT}, "
            "or None for no limit on running jobs"
        )


@attrs.frozen(kw_only=True)
class GroupLimit:
    """A group's limit: at most ``max_running`` of its jobs running at once (``0``: paused) and
    at most ``rate`` starts per window; ``None`` means no limit of that kind."""

    max_running: int | None = attrs.field(default=None, validator=_check_max_running)
    rate: Rate | None = attrs.field(default=None, converter=_to_rate)

    @property
    def unlimited(self) -> bool:
        """True when neither field limits anything."""
        return self.max_running is None and self.rate is None

    def describe(self) -> str:
        """One line for people: ``max_running=2 rate=10/s`` (``no limit`` when unlimited)."""
        if self.unlimited:
            return "no limit"
        parts = []
        if self.max_running is not None:
            parts.append(f"max_running={self.max_running}")
        if self.rate is not None:
            parts.append(f"rate={self.rate}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, int | str]:
        """The stored form: ``{"max_running": 2, "rate": "10/s"}``, fields left out when ``None``."""
        data: dict[str, int | str] = {}
        if self.max_running is not None:
            data["max_running"] = self.max_running
        if self.rate is not None:
            data["rate"] = str(self.rate)
        return data

    def to_json(self) -> str:
        """The one text form every backend stores (compact JSON of :meth:`to_dict`)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> GroupLimit:
        """Read :meth:`to_dict`'s form; raises :class:`~bananas.errors.JobDecodeError`, and nothing else."""
        try:
            if not isinstance(data, Mapping) or set(data) - {"max_running", "rate"}:
                raise ValueError("expected an object with max_running and/or rate")
            max_running, rate = data.get("max_running"), data.get("rate")
            if rate is not None and not isinstance(rate, str):
                raise ValueError(f"rate must be a string such as '10/s', got {rate!r}")
            return cls(max_running=max_running, rate=rate)  # type: ignore[arg-type]
        except Exception as exc:  # hostile data: whatever it makes go wrong is its own fault
            raise JobDecodeError(f"stored group limit is unreadable: {exc}") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> GroupLimit:
        """Read :meth:`to_json`'s text; raises :class:`~bananas.errors.JobDecodeError`, and nothing else."""
        try:
            data = json.loads(text)
        except Exception as exc:
            raise JobDecodeError(f"stored group limit is unreadable: not JSON ({exc})") from None
        return cls.from_dict(data)


NO_LIMIT = GroupLimit()
"""The limit of a group when neither it nor ``"*"`` has one stored."""

UNREADABLE_LIMIT = GroupLimit(max_running=0)
"""What a backend applies for a stored limit it cannot read: the group is held back (never
more than its real limit), and a WARNING names it (see :func:`unreadable_limit`)."""


def unreadable_limit(group: str, error: object) -> GroupLimit:
    """:data:`UNREADABLE_LIMIT`, after a WARNING naming ``group`` and why its limit is unreadable."""
    log.warning(
        "the stored limit of group %r is unreadable (%s); its jobs are held back until it is set again", group, error
    )
    return UNREADABLE_LIMIT


def effective_limit(own: GroupLimit | None, default: GroupLimit | None) -> GroupLimit:
    """The limit a group obeys: its own if one is stored, else the default (``"*"``), else none."""
    if own is not None:
        return own
    return default if default is not None else NO_LIMIT


def counted_starts(starts: Iterable[float], rate: Rate, now: float) -> int:
    """How many of ``starts`` (times a group's jobs were claimed) count against ``rate`` at ``now``:
    those with ``t + window > now``."""
    window = rate.window
    return sum(1 for t in starts if t + window > now)


def rate_admits(starts: Iterable[float], rate: Rate | None, now: float) -> bool:
    """True if one more start at ``now`` keeps to ``rate`` (always, without one)."""
    return rate is None or counted_starts(starts, rate, now) < rate.burst


def next_start_at(starts: Iterable[float], rate: Rate | None, now: float) -> float:
    """The earliest time from ``now`` at which ``rate`` admits one more start."""
    if rate is None:
        return now
    counted = sorted(t for t in starts if t + rate.window > now)
    if len(counted) < rate.burst:
        return now
    return counted[len(counted) - rate.burst] + rate.window


def admits(limit: GroupLimit, running: int, starts: Iterable[float], now: float) -> bool:
    """True if a group under ``limit``, with ``running`` jobs whose lease still runs and past
    ``starts``, may start one more job at ``now``."""
    if limit.max_running is not None and running >= limit.max_running:
        return False
    return rate_admits(starts, limit.rate, now)

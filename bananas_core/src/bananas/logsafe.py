"""Making stored strings safe to put in a log line.

Job names, ids, errors and payload fragments come from storage, which any producer can
write. Formatted raw into a log message, a name containing a newline would forge log lines
(and terminal control sequences could rewrite what an operator sees). :func:`printable`
escapes every control character the way :func:`repr` does and caps the length, so one
stored value is always one piece of one log line.
"""

from __future__ import annotations

import re

__all__ = ["printable"]

DEFAULT_LIMIT = 200
"""Characters of a stored value kept by :func:`printable` unless told otherwise."""

# C0 and C1 controls, DEL, the Unicode line and paragraph separators, and the bidirectional
# formatting characters (which can make a log line read differently from what it holds).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, limit: int = DEFAULT_LIMIT) -> str:
    """``text`` (``str()`` of it if not a string) fit for one log line.

    Control characters (newlines, carriage returns, tabs, escape sequences, other C0/C1
    controls, Unicode line separators and bidirectional overrides) become escapes like
    ``repr`` writes them (``\\n``, ``\\x1b``, ``\\u2028``). At most ``limit`` characters of
    the value are kept; a longer value is cut and says how much was left out. Printable
    text comes back unchanged (and is cheap to check).
    """
    value = text if isinstance(text, str) else str(text)
    cut = ""
    if len(value) > limit >= 0:
        cut = f"...[{len(value) - limit} more characters]"
        value = value[:limit]
    if _UNSAFE.search(value) is not None:
        value = _UNSAFE.sub(_escape, value)
    return value + cut if cut else value

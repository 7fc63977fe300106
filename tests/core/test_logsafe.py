"""``bananas.logsafe.printable``: one stored value is always one piece of one log line."""

from __future__ import annotations

import pytest
from bananas.logsafe import printable


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("send_email", "send_email"),
        ("a\nb", "a\\nb"),
        ("a\r\nb\tc", "a\\r\\nb\\tc"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("nul\x00del\x7fnel\x85", "nul\\x00del\\x7fnel\\x85"),
        ("line\u2028para\u2029", "line\\u2028para\\u2029"),
        ("bidi\u202eevil", "bidi\\u202eevil"),
        ("caf\u00e9 \u65e5\u672c", "caf\u00e9 \u65e5\u672c"),
    ],
)
def test_control_characters_are_escaped_and_text_is_kept(raw: str, shown: str) -> None:
    assert printable(raw) == shown
    assert len(printable(raw).splitlines()) <= 1


def test_long_values_are_cut_and_say_so() -> None:
    assert printable("x" * 50, 10) == "x" * 10 + "...[40 more characters]"
    assert printable("x" * 10, 10) == "x" * 10


def test_non_strings_are_shown_with_str() -> None:
    assert printable(42) == "42"
    assert printable(ValueError("bad\nthing")) == "bad\\nthing"

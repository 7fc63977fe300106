"""``bananas submit --unique-key``: a held key submits nothing and prints the holder's id."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from bananas import connect
from bananas.cli import main


@pytest.fixture
def url() -> str:
    return f"memory://cli-unique-{uuid.uuid4().hex}"


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def _ready(url: str) -> int:
    async def count() -> int:
        async with connect(url) as backend:
            return (await backend.queue.depths()).total_ready

    return asyncio.run(count())


def test_a_second_submit_of_a_key_prints_the_first_id(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, first, _ = _cli(capsys, "submit", "bill", "--unique-key", "invoice:42", "--unique-for", "60", "--url", url)
    assert code == 0
    code, again, err = _cli(capsys, "submit", "bill", "--unique-key", "invoice:42", "--url", url)
    assert code == 0 and again == first
    assert "nothing submitted" in err and first.strip() in err
    code, out, _ = _cli(capsys, "submit", "bill", "--unique-key", "invoice:42", "--url", url, "--json")
    assert json.loads(out) == {"id": first.strip(), "duplicate": True}
    assert _ready(url) == 1


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--unique-key", ""], "--unique-key must be a non-empty string"),
        (["--unique-for", "5"], "--unique-for needs a --unique-key"),
        (["--unique-key", "k", "--unique-for", "-5"], "--unique-for"),
    ],
)
def test_bad_unique_options_are_one_line(
    capsys: pytest.CaptureFixture[str], url: str, argv: list[str], says: str
) -> None:
    code, _, err = _cli(capsys, "submit", "bill", *argv, "--url", url)
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and says in lines[0], err
    assert _ready(url) == 0

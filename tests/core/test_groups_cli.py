"""``bananas groups`` (list, set, remove) and ``bananas submit --group``: one line per answer,
one readable line and exit 2 for a bad name or value, exit 1 removing a limit that is not there."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from bananas import connect
from bananas.cli import main


@pytest.fixture
def url() -> str:
    return f"memory://cli-groups-{uuid.uuid4().hex}"


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_set_list_and_remove(capsys: pytest.CaptureFixture[str], url: str) -> None:
    assert _cli(capsys, "groups", "--url", url)[1].startswith("no group limits stored")
    code, out, _ = _cli(capsys, "groups", "set", "tenant-42", "--max-running", "2", "--rate", "10/s", "--url", url)
    assert (code, out) == (0, "group tenant-42: max_running=2 rate=10/s\n")
    assert _cli(capsys, "groups", "set", "*", "--rate", "100/m", "--url", url)[0] == 0
    code, out, _ = _cli(capsys, "groups", "list", "--url", url)
    assert code == 0
    assert out.split("\n")[0].split() == ["GROUP", "MAX", "RUNNING", "RATE"]
    assert "tenant-42" in out and "(default)" in out and "100/m" in out
    code, out, _ = _cli(capsys, "groups", "--url", url, "--json")
    assert json.loads(out) == [
        {"group": "*", "max_running": None, "rate": "100/m"},
        {"group": "tenant-42", "max_running": 2, "rate": "10/s"},
    ]
    code, out, _ = _cli(capsys, "groups", "remove", "tenant-42", "--url", url)
    assert code == 0 and "limit removed" in out
    code, out, _ = _cli(capsys, "groups", "remove", "tenant-42", "--url", url)
    assert code == 1 and "nothing removed" in out


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["set", "has space", "--max-running", "1"], "invalid group 'has space'"),
        (["set", "a", "--rate", "fast"], "invalid rate 'fast'"),
        (["set", "a", "--max-running", "-1"], "--max-running"),
        (["remove", ""], "invalid group ''"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], url: str, argv: list[str], says: str
) -> None:
    code, out, err = _cli(capsys, "groups", *argv, "--url", url)
    assert code == 2 and out == ""
    assert says in err and len(err.strip().splitlines()) == 1


def test_submit_with_a_group(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, _ = _cli(capsys, "submit", "bill", "--group", "tenant-42", "--url", url)
    assert code == 0

    async def group_of(job_id: str) -> str | None:
        async with connect(url) as backend:
            return (await backend.queue.get_job(job_id)).group

    assert asyncio.run(group_of(out.strip())) == "tenant-42"
    shown = _cli(capsys, "job", out.strip(), "--url", url)[1]
    assert [line.split() for line in shown.splitlines() if line.startswith("group")] == [["group", "tenant-42"]]
    assert json.loads(_cli(capsys, "job", out.strip(), "--url", url, "--json")[1])["group"] == "tenant-42"
    code, _, err = _cli(capsys, "submit", "bill", "--group", "*", "--url", url)
    assert code == 2 and "invalid group '*'" in err

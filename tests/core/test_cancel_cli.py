"""``bananas cancel ID``: one line for each answer and its exit code."""

from __future__ import annotations

import json
import uuid

import pytest
from bananas.cli import main


@pytest.fixture
def url() -> str:
    return f"memory://cli-cancel-{uuid.uuid4().hex}"


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_cancel_prints_cancelled_then_already_finished(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, _ = _cli(capsys, "submit", "bill", "--in", "1h", "--url", url)
    job_id = out.strip()
    assert code == 0 and job_id
    code, out, _ = _cli(capsys, "cancel", job_id, "--url", url)
    assert code == 0 and out == f"job {job_id} cancelled: it will not run\n"
    code, out, _ = _cli(capsys, "cancel", job_id, "--url", url)
    assert code == 3 and out == f"job {job_id} already finished (cancelled): nothing to cancel\n"
    code, out, _ = _cli(capsys, "cancel", job_id, "--url", url, "--json")
    assert code == 3 and json.loads(out) == {"id": job_id, "outcome": "already_finished", "status": "cancelled"}
    code, out, _ = _cli(capsys, "job", job_id, "--url", url, "--json")
    assert json.loads(out)["status"] == "cancelled"


def test_cancel_an_unknown_id_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str], url: str) -> None:
    code, out, err = _cli(capsys, "cancel", "no-such-job", "--url", url)
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "no-such-job" in err and err.startswith("bananas:")

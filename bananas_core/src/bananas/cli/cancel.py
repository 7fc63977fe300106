"""``bananas cancel ID``: cancel a job, one line per answer."""

from __future__ import annotations

import argparse
from typing import Any

from bananas.cancel import CancelOutcome, cancel_job
from bananas.cli.common import add_common, open_from_args
from bananas.cli.output import emit_json
from bananas.errors import JobNotFound

__all__ = ["ALREADY_FINISHED_EXIT", "register"]

ALREADY_FINISHED_EXIT = 3
"""The exit code when the job had already finished: nothing to cancel, and not an error."""


def register(sub: Any) -> None:
    """Add ``cancel`` to the ``bananas`` subparsers."""
    p = sub.add_parser(
        "cancel",
        help="cancel a job",
        description="Cancel a job: one not started never runs; a running one is stopped by its worker at its "
        "next lease renewal. Exit 0 cancelled or stop requested, 3 already finished, 1 not found.",
    )
    p.add_argument("id", help="job id")
    add_common(p)
    p.set_defaults(run=cancel)


async def cancel(args: argparse.Namespace) -> int:
    """``bananas cancel ID``: one line saying what happened; exit 0, 3 (already finished) or 1 (not found)."""
    async with open_from_args(args) as backend:
        try:
            outcome = await cancel_job(backend, args.id)
        except JobNotFound:
            raise JobNotFound(args.id) from None
        status = (await backend.queue.get_job(args.id)).status.value
    if args.json:
        emit_json({"id": args.id, "outcome": outcome.value, "status": status})
    elif outcome is CancelOutcome.CANCELLED:
        print(f"job {args.id} cancelled: it will not run")
    elif outcome is CancelOutcome.REQUESTED:
        print(f"job {args.id} is running: its worker was asked to stop it (at its next lease renewal)")
    else:
        print(f"job {args.id} already finished ({status}): nothing to cancel")
    return ALREADY_FINISHED_EXIT if outcome is CancelOutcome.ALREADY_FINISHED else 0

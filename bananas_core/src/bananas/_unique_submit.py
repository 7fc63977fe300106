"""How the clients (and ``bananas submit``) write one job: seen by the observers, with or
without a unique key (see :mod:`bananas.unique`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from bananas import observe
from bananas.backend import Backend
from bananas.capabilities import Capability, require
from bananas.errors import InvalidJob
from bananas.job import Job
from bananas.protocols import UniqueEnqueue
from bananas.unique import JobId, UniqueKey, unique_key

__all__ = ["enqueue_one", "enqueue_unique", "spec_unique"]


async def enqueue_one(backend: Backend, job: Job, unique: UniqueKey | None = None) -> JobId:
    """Write ``job`` (through :func:`enqueue_unique` with a key), seen by the registered
    observers (:func:`bananas.observe.submitting`); its id, or the key holder's. A job with a
    group raises :class:`~bananas.errors.CapabilityNotSupported` on a backend without ``groups``."""
    if job.group is not None:
        backend.require(Capability.GROUPS, "group=")
    if unique is not None:
        return (await enqueue_unique(backend, [(job, unique)]))[0]
    if observe.OBSERVERS:
        with observe.submitting((job,)) as written:
            await backend.queue.enqueue(written[0])
    else:
        await backend.queue.enqueue(job)
    return JobId(job.id)


async def enqueue_unique(backend: Backend, entries: Sequence[tuple[Job, UniqueKey | None]]) -> list[JobId]:
    """Store ``entries`` through the backend's :class:`~bananas.protocols.UniqueEnqueue`; the id
    each stands for, marked :attr:`~bananas.unique.JobId.duplicate` where a held key wrote nothing.

    Raises :class:`~bananas.errors.CapabilityNotSupported` if the backend does not declare
    ``unique_jobs``.
    """
    require(backend.capabilities, Capability.UNIQUE_JOBS, backend=backend.name, operation="unique_key")
    queue = cast(UniqueEnqueue, backend.queue)  # declared, so offered: the conformance suite checks it
    if observe.OBSERVERS:
        with observe.submitting([job for job, _ in entries]) as written:
            entries = list(zip(written, (unique for _, unique in entries), strict=True))
            answers = await queue.enqueue_unique(entries)
    else:
        answers = await queue.enqueue_unique(entries)
    return [JobId(answer, answer != job.id) for answer, (job, _) in zip(answers, entries, strict=True)]


def spec_unique(spec: Job | Mapping[str, Any], index: int) -> UniqueKey | None:
    """The checked unique key of one :meth:`~bananas.AsyncClient.submit_many` spec (a
    :class:`Job` has none)."""
    if (type(spec) is not dict and not isinstance(spec, Mapping)) or (
        "unique_key" not in spec and "unique_for" not in spec
    ):
        return None  # the common case, kept cheap: submit_many asks once per job
    try:
        return unique_key(spec.get("unique_key"), spec.get("unique_for"))
    except InvalidJob as exc:
        raise InvalidJob(f"job #{index}: {exc}") from None

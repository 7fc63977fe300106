"""Submitting jobs and reading their outcome: :class:`AsyncClient` and the synchronous :class:`Client`.

Every submission is validated completely (name, JSON payload, priority, routing key, time
zone) before anything is written, so a rejected call leaves nothing behind. The checks are the
limits of :mod:`bananas.job` (nesting, numbers, times, field types), the ones every decode
applies: a job the client takes is a job a worker can read.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import threading
import weakref
from collections.abc import Callable, Container, Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import Future
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

import attrs

from bananas import observe
from bananas._unique_submit import enqueue_one, enqueue_unique, spec_unique
from bananas.backend import Backend
from bananas.cancel import CancelOutcome, cancel_job
from bananas.capabilities import Capability
from bananas.config import EMBEDDED_DEFAULT_URL, connect_resolved, default_max_retries
from bananas.errors import HandlerNotFound, InvalidJob, JobNotFound, ResultNotReady
from bananas.groups import GroupLimit, Rate, validate_limit_target
from bananas.job import DEFAULT_ROUTING_KEY, JSON, Job, JobPriority, JobResult, JobStatus, time_after
from bananas.plugins.types import SchemaMigrator
from bananas.protocols import BlockingEnqueue, GroupLimits
from bananas.timefmt import from_timestamp
from bananas.timeouts import check_timeout, with_timeout
from bananas.unique import JobId, UniqueKey
from bananas.unique import unique_key as _unique_key
from bananas.workflows.canvas import Node
from bananas.workflows.submit import cancel_workflow, get_workflow, job_maker, submit_workflow, wait_for_workflow
from bananas.workflows.view import WorkflowInfo

__all__ = ["AsyncClient", "Client", "JobSpec"]

T = TypeVar("T")

JobSpec = Job | Mapping[str, Any]
"""What :meth:`AsyncClient.submit_many` takes: a :class:`Job`, or a mapping of the arguments
of :meth:`Job.create` (``name``, ``payload``, ``priority``, ``routing_key``, ``description``,
``scheduled_for``, ``max_retries``, ``job_id``), and the ``unique_key``, ``unique_for``,
``timeout`` and ``group`` of :meth:`AsyncClient.submit_job`."""

_SPEC_KEYS = frozenset(
    {"name", "payload", "priority", "routing_key", "description", "scheduled_for", "max_retries", "job_id"}
    | {"unique_key", "unique_for", "timeout", "group"}
)
Delay = datetime | timedelta | float
Seconds = float | timedelta
"""A duration: a number of seconds or a :class:`~datetime.timedelta`."""

_PLAIN = frozenset({dict, list, str, int, float, bool, type(None)})
_FINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


def _seconds(value: float | timedelta | None) -> float | None:
    return value.total_seconds() if isinstance(value, timedelta) else value


def _timeout(value: Seconds) -> float:
    """``value`` in seconds if it is a finite duration >= 0; ``ValueError`` naming it otherwise."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
        raise ValueError(f"timeout must be a finite number of seconds (or a timedelta) >= 0, got {value!r}")
    return value


def _plain(payload: Any) -> Any:
    """A dataclass or attrs instance unstructured with cattrs (what :meth:`Job.payload_as`
    structures back); anything else unchanged. One set lookup for plain JSON values."""
    if type(payload) in _PLAIN:
        return payload
    kind = type(payload)
    if (dataclasses.is_dataclass(kind) or attrs.has(kind)) and not isinstance(payload, type):
        import cattrs  # imported on use, like payload_as does

        return cattrs.unstructure(payload)
    return payload


def _ttl_aliases(options: dict[str, Any], success: Seconds | None, failure: Seconds | None) -> None:
    """The original SDK's ``success_ttl`` / ``failure_ttl`` names, as our result TTL options."""
    for alias, field in (("success_ttl", "result_success_ttl"), ("failure_ttl", "result_failure_ttl")):
        if alias in options:
            if (success if field == "result_success_ttl" else failure) is not None:
                raise TypeError(f"pass {field} or {alias}, not both")
            options[field] = options.pop(alias)


class AsyncClient:
    """Submit jobs and read results from coroutines.

    Built from a URL (``AsyncClient("redis://localhost:6379/0")``; ``None`` means
    ``$BANANAS_URL``, then ``$REDIS_URL``, then the embedded default) or from an existing
    ``backend``, which the client then does not close. Result TTLs (seconds or timedelta;
    ``success_ttl`` / ``failure_ttl`` are accepted as the original SDK's names; unset, they
    come from ``$RESULT_BACKEND_TTL_SUCCESS`` / ``_FAILURE``), ``connect_timeout`` (seconds
    an unreachable server is waited for before ``BackendUnavailable``; default: the
    backend's own, 30 s for Redis, 15 s for PostgreSQL) and the backend's declared options
    go to :func:`bananas.connect`; any other keyword raises ``TypeError`` naming the
    accepted ones. With ``registry`` (a :class:`~bananas.worker.Registry` or any container
    of job names) a submit of a name it lacks raises :class:`~bananas.errors.HandlerNotFound`
    before writing. Submits that give no ``max_retries`` use ``$MAX_RETRIES`` (default 3).
    Use ``async with`` or call :meth:`close`.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        backend: Backend | None = None,
        result_success_ttl: Seconds | None = None,
        result_failure_ttl: Seconds | None = None,
        registry: Container[str] | None = None,
        **options: Any,
    ) -> None:
        self._migrate: SchemaMigrator | None = None
        self._migrating: asyncio.Lock | None = None
        self._ready = False
        self._closed = False
        self._handlers = registry
        self._max_retries = default_max_retries()
        if backend is not None:
            if url is not None:
                raise TypeError("pass either a url or a backend, not both")
            given = sorted(
                k
                for k, v in {
                    **options,
                    "result_success_ttl": result_success_ttl,
                    "result_failure_ttl": result_failure_ttl,
                }.items()
                if v is not None
            )
            if given:
                raise TypeError(f"{', '.join(given)} cannot be used with backend=: set them where the backend is made")
            self._backend, self._owned = backend, False
            return
        _ttl_aliases(options, result_success_ttl, result_failure_ttl)
        for key, ttl in (("result_success_ttl", result_success_ttl), ("result_failure_ttl", result_failure_ttl)):
            if ttl is not None:
                options[key] = _seconds(ttl)
        self._backend, self._migrate = connect_resolved(url, **options)
        self._owned = True

    @property
    def backend(self) -> Backend:
        """The connected backend (queue, results, ...)."""
        return self._backend

    async def _prepared(self) -> Backend:
        if self._closed:
            raise RuntimeError("this client is closed")
        if not self._ready:
            if self._migrate is None:
                self._ready = True
            else:
                self._migrating = self._migrating or asyncio.Lock()
                async with self._migrating:  # concurrent first calls create the schema once
                    if not self._ready:
                        await self._migrate(EMBEDDED_DEFAULT_URL, self._backend.options)
                        self._ready = True
        return self._backend

    def _now(self) -> datetime:
        return from_timestamp(self._backend.clock())

    # -- submitting ----------------------------------------------------------------------

    def _job(
        self,
        name: str,
        payload: JSON,
        priority: JobPriority | str,
        description: str | None,
        *,
        routing_key: str = DEFAULT_ROUTING_KEY,
        scheduled_for: Delay | None = None,
        max_retries: int | None = None,
        job_id: str | None = None,
        now: datetime | None = None,
        timeout: Seconds | None = None,
        group: str | None = None,
    ) -> Job:
        if self._handlers is not None and name not in self._handlers:
            raise HandlerNotFound(f"no handler is registered for job name {name!r}, so no worker of this app runs it")
        own_timeout = check_timeout(timeout)
        now = now or self._now()
        job = Job.create(
            name,
            _plain(payload),
            priority=priority,
            routing_key=routing_key,
            description=description,
            scheduled_for=self._when(scheduled_for, now),
            max_retries=self._max_retries if max_retries is None else max_retries,
            job_id=job_id,
            now=now,
            group=group,
        )
        if group is not None:
            self._require_groups()
        return with_timeout(job, own_timeout)

    def _require_groups(self) -> None:
        """Raise :class:`~bananas.errors.CapabilityNotSupported` unless the backend declares ``groups``."""
        self._backend.require(Capability.GROUPS, "group=")

    @staticmethod
    def _when(value: Delay | None, now: datetime) -> datetime | None:
        if value is None or isinstance(value, datetime):
            return value  # Job.create rejects a naive datetime and one out of range
        return time_after(now, value)  # InvalidJob for NaN, infinity, or a time out of range

    async def submit_job(
        self,
        name: str,
        payload: JSON = None,
        priority: JobPriority | str = JobPriority.NORMAL,
        description: str | None = None,
        *,
        routing_key: str = DEFAULT_ROUTING_KEY,
        max_retries: int | None = None,
        job_id: str | None = None,
        unique_key: str | None = None,
        unique_for: Seconds | None = None,
        timeout: Seconds | None = None,
        group: str | None = None,
    ) -> JobId:
        """Enqueue a job (on the ``default`` routing key unless ``routing_key`` says otherwise); return its id.

        The payload is JSON, or a dataclass or attrs instance (unstructured with cattrs;
        :meth:`Job.payload_as` turns it back). Raises :class:`~bananas.errors.InvalidJob` (or
        its subclass ``PayloadError``) before writing anything if the name, payload or
        priority is not acceptable.

        With ``unique_key``, nothing is written while another job with that key is pending,
        scheduled, running or retrying, or completed less than ``unique_for`` seconds (or a
        timedelta; default 0) ago: the id returned is that job's, and its
        :attr:`~bananas.unique.JobId.duplicate` is True. Needs the ``unique_jobs`` capability.

        ``timeout`` (seconds or a timedelta, more than 0, at most a week) is this job's handler
        timeout: it overrides the worker's ``--job-timeout`` for this job.

        ``group`` puts the job in a group: it runs within the limits stored for the group
        (:meth:`set_group_limit`), and groups take turns (see :mod:`bananas.groups`). Needs the
        ``groups`` capability: without it, :class:`~bananas.errors.CapabilityNotSupported` is
        raised and nothing is written.
        """
        unique = _unique_key(unique_key, unique_for)
        job = self._job(
            name,
            payload,
            priority,
            description,
            routing_key=routing_key,
            max_retries=max_retries,
            job_id=job_id,
            timeout=timeout,
            group=group,
        )
        return await self._enqueue(job, unique)

    async def submit_job_with_route(
        self,
        name: str,
        payload: JSON,
        priority: JobPriority | str,
        routing_key: str,
        description: str | None = None,
        *,
        max_retries: int | None = None,
        job_id: str | None = None,
        unique_key: str | None = None,
        unique_for: Seconds | None = None,
        timeout: Seconds | None = None,
        group: str | None = None,
    ) -> JobId:
        """Enqueue a job for workers serving ``routing_key``; raises ``InvalidRoutingKey`` for a bad key.
        ``unique_key``, ``unique_for``, ``timeout`` and ``group`` as for :meth:`submit_job`."""
        unique = _unique_key(unique_key, unique_for)
        job = self._job(
            name,
            payload,
            priority,
            description,
            routing_key=routing_key,
            max_retries=max_retries,
            job_id=job_id,
            timeout=timeout,
            group=group,
        )
        return await self._enqueue(job, unique)

    async def submit_job_scheduled(
        self,
        name: str,
        payload: JSON,
        priority: JobPriority | str,
        scheduled_for: Delay,
        description: str | None = None,
        *,
        routing_key: str = DEFAULT_ROUTING_KEY,
        max_retries: int | None = None,
        job_id: str | None = None,
        unique_key: str | None = None,
        unique_for: Seconds | None = None,
        timeout: Seconds | None = None,
        group: str | None = None,
    ) -> JobId:
        """Enqueue a job that becomes claimable at ``scheduled_for``: an aware datetime, a
        timedelta or a delay in seconds. A time in the past means "run now"; a naive
        datetime raises :class:`~bananas.errors.InvalidJob`. ``unique_key``, ``unique_for``,
        ``timeout`` and ``group`` as for :meth:`submit_job` (a scheduled job holds its key)."""
        unique = _unique_key(unique_key, unique_for)
        job = self._job(
            name,
            payload,
            priority,
            description,
            routing_key=routing_key,
            scheduled_for=scheduled_for,
            max_retries=max_retries,
            job_id=job_id,
            timeout=timeout,
            group=group,
        )
        return await self._enqueue(job, unique)

    async def submit_many(self, jobs: Iterable[JobSpec], *, batch_size: int = 500) -> list[str]:
        """Enqueue many jobs with one round trip per ``batch_size`` jobs; return their ids in order.

        Every job is validated before the first batch is written; each batch is stored
        all or nothing. A mapping may carry ``unique_key`` and ``unique_for`` (see
        :meth:`submit_job`): its job is not written while the key is held, and its place in
        the answer is the holder's id, a :class:`~bananas.unique.JobId` marked ``duplicate``.
        """
        specs = list(jobs)
        uniques = [spec_unique(spec, i) for i, spec in enumerate(specs)]
        built, batches = self._batches(specs, batch_size)
        backend = await self._prepared()
        if any(unique is not None for unique in uniques):
            entries = list(zip(built, uniques, strict=True))
            answers: list[str] = []
            for start in range(0, len(entries), batch_size):
                answers += await enqueue_unique(backend, entries[start : start + batch_size])
            return answers
        for batch in batches:
            if observe.OBSERVERS:
                with observe.submitting(batch) as written:
                    await backend.queue.enqueue_many(written)
            else:
                await backend.queue.enqueue_many(batch)
        return [job.id for job in built]

    def _batches(self, jobs: Iterable[JobSpec], batch_size: int) -> tuple[list[Job], list[list[Job]]]:
        """Every job of a :meth:`submit_many` call built and validated, and cut into batches."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        now = self._now()  # one submission time for the whole call (and one time text to format)
        built = [self._from_spec(spec, i, now) for i, spec in enumerate(jobs)]
        return built, [built[start : start + batch_size] for start in range(0, len(built), batch_size)]

    def _from_spec(self, spec: JobSpec, index: int, now: datetime | None = None) -> Job:
        if isinstance(spec, Job):
            if spec.group is not None:
                self._require_groups()
            return spec
        if not isinstance(spec, Mapping):
            raise InvalidJob(f"job #{index} must be a Job or a mapping, not {type(spec).__name__}")
        unknown = sorted(set(spec) - _SPEC_KEYS)
        if unknown:
            known = ", ".join(sorted(_SPEC_KEYS))
            raise InvalidJob(f"job #{index} has unknown field(s) {', '.join(unknown)}; known: {known}")
        if "name" not in spec:
            raise InvalidJob(f"job #{index} has no 'name'")
        try:
            return self._job(
                spec["name"],
                spec.get("payload"),
                spec.get("priority", JobPriority.NORMAL),
                spec.get("description"),
                routing_key=spec.get("routing_key", DEFAULT_ROUTING_KEY),
                scheduled_for=spec.get("scheduled_for"),
                max_retries=spec.get("max_retries"),
                job_id=spec.get("job_id"),
                now=now,
                timeout=spec.get("timeout"),
                group=spec.get("group"),
            )
        except InvalidJob as exc:
            raise type(exc)(f"job #{index}: {exc}") from None

    async def _enqueue(self, job: Job, unique: UniqueKey | None = None) -> JobId:
        return await enqueue_one(await self._prepared(), job, unique)

    async def _write(self, jobs: Sequence[Job], *, many: bool) -> None:
        """Write ``jobs`` as they are (observers already had their say): one enqueue, or ``enqueue_many``."""
        backend = await self._prepared()
        if many:
            await backend.queue.enqueue_many(jobs)
        else:
            await backend.queue.enqueue(jobs[0])

    # -- workflows -----------------------------------------------------------------------

    async def submit(self, workflow: Node) -> str:
        """Submit a workflow built with :func:`~bananas.task`, :func:`~bananas.chain`,
        :func:`~bananas.group` and :func:`~bananas.chord`; return its id.

        Every step is validated before anything is written; then the workflow and its first
        steps are stored in one atomic write. Raises
        :class:`~bananas.errors.CapabilityNotSupported` if the backend does not declare the
        ``workflows`` capability.
        """
        backend = await self._prepared()
        return await submit_workflow(backend, workflow, job_maker(self._job, self._now()))

    async def get_workflow(self, workflow_id: str) -> WorkflowInfo:
        """Each step's state and the workflow's; raises :class:`~bananas.errors.JobNotFound`
        (its subclass ``WorkflowNotFound``) for an unknown id."""
        return await get_workflow(await self._prepared(), workflow_id)

    async def wait_for_workflow(self, workflow_id: str, timeout: Seconds = 30.0) -> WorkflowInfo:
        """:meth:`get_workflow` once the workflow completed or failed, waiting up to ``timeout``;
        raises :class:`~bananas.errors.Timeout`."""
        seconds = _timeout(timeout)
        return await wait_for_workflow(await self._prepared(), workflow_id, seconds)

    async def cancel_workflow(self, workflow_id: str) -> dict[str, CancelOutcome]:
        """Cancel every step of the workflow that has not finished: the steps not started never
        run, running ones are stopped by their workers, and the workflow ends ``cancelled`` (or
        ``failed`` if a step had ended dead); what happened to each step, by job id (empty for a
        finished workflow). Raises :class:`~bananas.errors.JobNotFound` (``WorkflowNotFound``)
        for an unknown id, :class:`~bananas.errors.CapabilityNotSupported` without the
        ``workflows`` and ``cancel`` capabilities."""
        return await cancel_workflow(await self._prepared(), workflow_id)

    # -- reading -------------------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job:
        """The job as stored now; raises :class:`~bananas.errors.JobNotFound`."""
        backend = await self._prepared()
        return await backend.queue.get_job(job_id)

    async def cancel(self, job_id: str) -> CancelOutcome:
        """Cancel the job: one not started never runs (``CANCELLED``), a running one is stopped by its
        worker at its next lease renewal (``REQUESTED``), a finished one is left alone
        (``ALREADY_FINISHED``). Raises :class:`~bananas.errors.JobNotFound` for an unknown id and
        :class:`~bananas.errors.CapabilityNotSupported` on a backend without the ``cancel`` capability."""
        return await cancel_job(await self._prepared(), job_id)

    # -- group limits --------------------------------------------------------------------

    async def _limits(self) -> GroupLimits:
        backend = await self._prepared()
        backend.require(Capability.GROUPS, "group limits")
        queue = backend.queue
        if not isinstance(queue, GroupLimits):
            raise TypeError(f"the {backend.name!r} backend declares 'groups' but its queue is not a GroupLimits")
        return queue

    async def set_group_limit(
        self, group: str, *, max_running: int | None = None, rate: Rate | str | None = None
    ) -> GroupLimit:
        """Store the limit of ``group`` (``"*"``: the default of every group without its own),
        replacing any: at most ``max_running`` of its jobs running at once across all workers
        (``0`` pauses the group) and at most ``rate`` starts per window (``"10/s"``, ``"100/m"``,
        ``"5/h"``); ``None`` leaves that kind unlimited. Returns the stored limit. Raises
        :class:`~bananas.errors.InvalidGroup` for a bad name or value (nothing stored) and
        :class:`~bananas.errors.CapabilityNotSupported` without the ``groups`` capability."""
        target = validate_limit_target(group)
        limit = GroupLimit(max_running=max_running, rate=rate)
        await (await self._limits()).set_group_limit(target, limit)
        return limit

    async def get_group_limit(self, group: str) -> GroupLimit | None:
        """The limit stored for ``group`` itself (or for ``"*"``), ``None`` if there is none."""
        target = validate_limit_target(group)
        return await (await self._limits()).get_group_limit(target)

    async def group_limits(self) -> dict[str, GroupLimit]:
        """Every stored limit by group, ``"*"`` (the default) included."""
        return await (await self._limits()).group_limits()

    async def remove_group_limit(self, group: str) -> bool:
        """Forget the limit of ``group`` (it falls back on ``"*"``'s); True if there was one."""
        target = validate_limit_target(group)
        return await (await self._limits()).remove_group_limit(target)

    async def get_result(self, job_id: str, *, missing_ok: bool = True) -> JobResult | None:
        """The job's result, or ``None`` while it has not finished (or the result expired),
        as the original ``GetResult`` does.

        With ``missing_ok=False`` there is no ``None``: an unknown id raises
        :class:`~bananas.errors.JobNotFound`, a job not in a final state raises
        :class:`~bananas.errors.ResultNotReady` naming its status, and a finished job whose
        result has expired raises ``ResultNotReady`` saying so.
        """
        backend = await self._prepared()
        result = await backend.results.get(job_id)
        if result is not None or missing_ok:
            return result
        try:
            status = (await backend.queue.get_job(job_id)).status
        except JobNotFound:
            raise JobNotFound(job_id) from None
        if status in _FINAL:
            raise ResultNotReady(f"job {job_id!r} finished ({status.value}) but its result has expired")
        raise ResultNotReady(f"job {job_id!r} has no result yet (status: {status.value})")

    async def wait_for_result(self, job_id: str, timeout: Seconds = 30.0) -> JobResult:
        """The job's result, waiting up to ``timeout`` (seconds or timedelta); raises
        :class:`~bananas.errors.Timeout` (and ``ValueError`` for a timeout that is not finite and >= 0)."""
        seconds = _timeout(timeout)
        backend = await self._prepared()
        return await backend.results.wait(job_id, seconds)

    async def submit_and_wait(
        self,
        name: str,
        payload: JSON = None,
        priority: JobPriority | str = JobPriority.NORMAL,
        timeout: Seconds = 30.0,
        *,
        routing_key: str = DEFAULT_ROUTING_KEY,
        description: str | None = None,
        max_retries: int | None = None,
    ) -> JobResult:
        """Submit a job and wait up to ``timeout`` (seconds or timedelta) for its result (success or failure).

        Raises :class:`~bananas.errors.Timeout` if it has not finished by then (the job
        stays queued and may still run); a bad ``timeout`` is refused before submitting.
        """
        seconds = _timeout(timeout)
        job = self._job(name, payload, priority, description, routing_key=routing_key, max_retries=max_retries)
        await self._enqueue(job)
        return await self.wait_for_result(job.id, seconds)

    # -- lifecycle -----------------------------------------------------------------------

    async def close(self) -> None:
        """Release the backend's connections (unless the backend was passed in). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owned:
            await self._backend.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class _LoopThread:
    """An event loop running in a daemon thread, for the synchronous client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bananas-client", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()


_CLIENTS: weakref.WeakSet[Client] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_CLIENTS):
        client._lock = threading.Lock()  # another thread may have held it at fork time


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Client:
    """The synchronous client, for scripts, WSGI apps and threads: same arguments and
    methods as :class:`AsyncClient`, each call blocking until done.

    Calls run on an event loop in a background thread, so the client may be shared by
    threads and used where an event loop already runs; submits go straight from the calling
    thread to the store where the backend's queue offers that
    (:class:`~bananas.protocols.BlockingEnqueue`, Redis). After ``os.fork()`` the child
    opens its own connections on first use (the parent's are left alone).
    """

    def __init__(self, url: str | None = None, *, backend: Backend | None = None, **kwargs: Any) -> None:
        self._args = (url, backend, kwargs)
        self._lock = threading.Lock()
        self._pid = -1
        self._runner: _LoopThread | None = None
        self._client: AsyncClient | None = None
        self._blocking_queue: BlockingEnqueue | None = None
        self._closed = False
        _CLIENTS.add(self)
        self._start()  # fail fast on a bad URL

    def _start(self) -> tuple[_LoopThread, AsyncClient]:
        with self._lock:
            if self._closed:
                raise RuntimeError("this client is closed")
            if self._pid != os.getpid() or self._runner is None or self._client is None:
                url, backend, kwargs = self._args
                runner = _LoopThread()

                async def make() -> AsyncClient:
                    return AsyncClient(url, backend=backend, **kwargs)

                try:
                    self._client = runner.run(make())
                except BaseException:
                    runner.stop()
                    raise
                self._runner, self._pid = runner, os.getpid()
                # decided once: a runtime protocol check costs several microseconds per submit
                queue = self._client.backend.queue
                self._blocking_queue = queue if isinstance(queue, BlockingEnqueue) else None
            return self._runner, self._client

    def _call(self, coro_fn: Any, *args: Any, **kwargs: Any) -> Any:
        runner, client = self._start()
        return runner.run(coro_fn(client, *args, **kwargs))

    def _blocking(self, client: AsyncClient) -> Callable[[Sequence[Job]], None] | None:
        """The queue's blocking enqueue, once the first call (on the loop) has prepared the store."""
        queue = self._blocking_queue
        return queue.enqueue_many_blocking if queue is not None and client._ready else None

    def _submit(self, build: Callable[[AsyncClient], Job], unique: UniqueKey | None = None) -> JobId:
        """Build (and validate) a job in the calling thread and enqueue it."""
        runner, client = self._start()
        job = build(client)
        if unique is not None:
            return runner.run(client._enqueue(job, unique))
        enqueue = self._blocking(client)
        if observe.OBSERVERS:  # observed in the calling thread, whose context (a current span) is the parent
            with observe.submitting((job,)) as written:
                if enqueue is None:
                    runner.run(client._write(written, many=False))
                else:
                    enqueue(written)
            return JobId(job.id)
        if enqueue is None:
            return runner.run(client._enqueue(job))
        enqueue([job])
        return JobId(job.id)

    @property
    def backend(self) -> Backend:
        """The connected backend (its methods are coroutines for this client's loop)."""
        return self._start()[1].backend

    def submit_job(
        self,
        name: str,
        payload: JSON = None,
        priority: JobPriority | str = JobPriority.NORMAL,
        description: str | None = None,
        *,
        routing_key: str = DEFAULT_ROUTING_KEY,
        max_retries: int | None = None,
        job_id: str | None = None,
        unique_key: str | None = None,
        unique_for: Seconds | None = None,
        timeout: Seconds | None = None,
        group: str | None = None,
    ) -> JobId:
        """See :meth:`AsyncClient.submit_job`."""
        unique = _unique_key(unique_key, unique_for)
        return self._submit(
            lambda c: c._job(
                name,
                payload,
                priority,
                description,
                routing_key=routing_key,
                max_retries=max_retries,
                job_id=job_id,
                timeout=timeout,
                group=group,
            ),
            unique,
        )

    def submit_job_with_route(
        self,
        name: str,
        payload: JSON,
        priority: JobPriority | str,
        routing_key: str,
        description: str | None = None,
        *,
        max_retries: int | None = None,
        job_id: str | None = None,
        unique_key: str | None = None,
        unique_for: Seconds | None = None,
        timeout: Seconds | None = None,
        group: str | None = None,
    ) -> JobId:
        """See :meth:`AsyncClient.submit_job_with_route`."""
        unique = _unique_key(unique_key, unique_for)
        return self._submit(
            lambda c: c._job(
                name,
                payload,
                priority,
                description,
                routing_key=routing_key,
                max_retries=max_retries,
                job_id=job_id,
                timeout=timeout,
                group=group,
            ),
            unique,
        )

    def submit_job_scheduled(
        self,
        name: str,
        payload: JSON,
        priority: JobPriority | str,
        scheduled_for: Delay,
        description: str | None = None,
        *,
        routing_key: str = DEFAULT_ROUTING_KEY,
        max_retries: int | None = None,
        job_id: str | None = None,
        unique_key: str | None = None,
        unique_for: Seconds | None = None,
        timeout: Seconds | None = None,
        group: str | None = None,
    ) -> JobId:
        """See :meth:`AsyncClient.submit_job_scheduled`."""
        unique = _unique_key(unique_key, unique_for)
        return self._submit(
            lambda c: c._job(
                name,
                payload,
                priority,
                description,
                routing_key=routing_key,
                scheduled_for=scheduled_for,
                max_retries=max_retries,
                job_id=job_id,
                timeout=timeout,
                group=group,
            ),
            unique,
        )

    def submit_many(self, jobs: Iterable[JobSpec], *, batch_size: int = 500) -> list[str]:
        """See :meth:`AsyncClient.submit_many`."""
        specs: Sequence[JobSpec] = list(jobs)
        runner, client = self._start()
        enqueue = self._blocking(client)
        observed = bool(observe.OBSERVERS)
        if (enqueue is None and not observed) or any(spec_unique(s, i) is not None for i, s in enumerate(specs)):
            result: list[str] = runner.run(client.submit_many(specs, batch_size=batch_size))
            return result
        built, batches = client._batches(specs, batch_size)
        for batch in batches:
            with observe.submitting(batch) if observed else contextlib.nullcontext(batch) as written:
                if enqueue is None:
                    runner.run(client._write(written, many=True))
                else:
                    enqueue(written)
        return [job.id for job in built]

    def submit(self, workflow: Node) -> str:
        """:meth:`AsyncClient.submit`: submit a workflow; return its id."""
        workflow_id: str = self._call(AsyncClient.submit, workflow)
        return workflow_id

    def get_workflow(self, workflow_id: str) -> WorkflowInfo:
        """:meth:`AsyncClient.get_workflow`."""
        info: WorkflowInfo = self._call(AsyncClient.get_workflow, workflow_id)
        return info

    def wait_for_workflow(self, workflow_id: str, timeout: Seconds = 30.0) -> WorkflowInfo:
        """:meth:`AsyncClient.wait_for_workflow`."""
        info: WorkflowInfo = self._call(AsyncClient.wait_for_workflow, workflow_id, timeout)
        return info

    def cancel_workflow(self, workflow_id: str) -> dict[str, CancelOutcome]:
        """:meth:`AsyncClient.cancel_workflow`."""
        outcomes: dict[str, CancelOutcome] = self._call(AsyncClient.cancel_workflow, workflow_id)
        return outcomes

    def get_job(self, job_id: str) -> Job:
        """See :meth:`AsyncClient.get_job`."""
        result: Job = self._call(AsyncClient.get_job, job_id)
        return result

    def cancel(self, job_id: str) -> CancelOutcome:
        """See :meth:`AsyncClient.cancel`."""
        outcome: CancelOutcome = self._call(AsyncClient.cancel, job_id)
        return outcome

    def set_group_limit(
        self, group: str, *, max_running: int | None = None, rate: Rate | str | None = None
    ) -> GroupLimit:
        """:meth:`AsyncClient.set_group_limit`."""
        limit: GroupLimit = self._call(AsyncClient.set_group_limit, group, max_running=max_running, rate=rate)
        return limit

    def get_group_limit(self, group: str) -> GroupLimit | None:
        """:meth:`AsyncClient.get_group_limit`."""
        limit: GroupLimit | None = self._call(AsyncClient.get_group_limit, group)
        return limit

    def group_limits(self) -> dict[str, GroupLimit]:
        """:meth:`AsyncClient.group_limits`."""
        limits: dict[str, GroupLimit] = self._call(AsyncClient.group_limits)
        return limits

    def remove_group_limit(self, group: str) -> bool:
        """:meth:`AsyncClient.remove_group_limit`."""
        removed: bool = self._call(AsyncClient.remove_group_limit, group)
        return removed

    def get_result(self, job_id: str, *, missing_ok: bool = True) -> JobResult | None:
        """See :meth:`AsyncClient.get_result`."""
        result: JobResult | None = self._call(AsyncClient.get_result, job_id, missing_ok=missing_ok)
        return result

    def wait_for_result(self, job_id: str, timeout: Seconds = 30.0) -> JobResult:
        """See :meth:`AsyncClient.wait_for_result`."""
        result: JobResult = self._call(AsyncClient.wait_for_result, job_id, timeout)
        return result

    def submit_and_wait(
        self,
        name: str,
        payload: JSON = None,
        priority: JobPriority | str = JobPriority.NORMAL,
        timeout: Seconds = 30.0,
        *,
        routing_key: str = DEFAULT_ROUTING_KEY,
        description: str | None = None,
        max_retries: int | None = None,
    ) -> JobResult:
        """See :meth:`AsyncClient.submit_and_wait`."""
        timeout = _timeout(timeout)
        job_id = self._submit(
            lambda c: c._job(name, payload, priority, description, routing_key=routing_key, max_retries=max_retries)
        )
        return self.wait_for_result(job_id, timeout)

    def close(self) -> None:
        """Close the connections and stop the background loop. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            runner, client = self._runner, self._client
            self._runner = self._client = None
        if runner is not None and client is not None and self._pid == os.getpid():
            try:
                runner.run(client.close())
            finally:
                runner.stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

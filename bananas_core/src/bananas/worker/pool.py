"""The worker pool: the claim loop, named side tasks, and a graceful stop that loses nothing.

Side tasks (each named, each surviving its own errors):

- ``leases``: renews the leases of running jobs every ``lease / 3`` seconds;
- ``maintenance``: every ``scheduler_interval``, ``reap_expired`` on every worker (so jobs of
  a killed worker come back even in a fleet without a scheduler), and, when the scheduler
  is enabled, ``move_scheduled`` and one cron tick;
- ``heartbeat``: announces the worker in ``backend.workers``; the record is removed on stop;
- ``loop-lag``: notices when the event loop was blocked (a handler calling blocking code
  from an ``async def``) long enough to endanger leases, and says which async jobs ran.

Stopping gracefully (a signal, :meth:`Pool.stop`) hands unfinished jobs back
(``queue.release``, no attempt counted). A worker that crashes (SystemExit or
KeyboardInterrupt escaping its event loop, its task cancelled from outside, the claim loop
failing, the process dying) leaves every job whose handler had started to its lease: the
reaper then counts the attempt, so a job that kills workers ends in the dead letter queue
after ``max_retries`` however it kills them.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import attrs

from bananas import observe
from bananas.backend import Backend
from bananas.capabilities import Capability
from bananas.config import WorkerConfig, WorkerMode
from bananas.errors import BananasError
from bananas.job import Job
from bananas.logsafe import printable
from bananas.protocols import Cancellation, HandOff
from bananas.worker import cancelling
from bananas.worker.executor import Executor
from bananas.worker.liveness import Heartbeat, new_worker_id
from bananas.worker.loop import stop_tasks

__all__ = ["Pool"]

log = logging.getLogger("bananas.worker")

LAG_THRESHOLD = 1.0
"""Seconds of event-loop blocking that earn a WARNING (see the ``loop-lag`` side task)."""
LAG_LEASE_FRACTION = 0.5
"""Blocking for this fraction of the lease or more earns an ERROR: leases may have expired."""


class Pool:
    """Claims jobs for ``config`` and runs them on ``executor`` until stopped.

    At most ``config.concurrency`` jobs run at once; each claim asks for as many jobs as
    there are free slots, so slots never idle while jobs wait. With ``prefetch`` > 0 the
    pool also holds up to that many claimed jobs waiting for a slot (under lease, renewed
    like running ones), and claims again only once fewer than half of them are left, so a
    busy worker claims in batches instead of one job per freed slot. On stop it claims no
    more, waits up to ``grace_period`` seconds for running jobs, then cancels the rest and
    hands them back (``queue.release``) so another worker runs them; prefetched jobs that
    never started are handed back at once. ``job_timeout``, ``grace_period`` and ``lease``
    default to the config's values. A crash (see the module docs) hands back only jobs
    that never started; the others are left to their leases.

    ``lag_threshold``: a blocked event loop (measured every ``lag_interval`` seconds) is
    reported once it was blocked this long.

    An idle worker waits for work with ``queue.wait_for_work``, or, where the queue offers
    :class:`~bananas.protocols.HandOff` (Redis, PostgreSQL, memory), by registering as a waiter
    that the next enqueue hands its jobs to, already claimed: one hop from producer to worker.

    ``max_jobs``: claim at most this many jobs in all, let them finish, then stop gracefully
    (a supervisor starts a fresh process in its place: ``--max-jobs-per-child``).
    """

    def __init__(
        self,
        executor: Executor,
        backend: Backend,
        config: WorkerConfig,
        *,
        job_timeout: float | None = None,
        grace_period: float | None = None,
        lease: float | None = None,
        poll_interval: float = 1.0,
        heartbeat_interval: float = 5.0,
        worker_id: str | None = None,
        prefetch: int = 0,
        lag_threshold: float = LAG_THRESHOLD,
        lag_interval: float = 0.25,
        max_jobs: int | None = None,
    ) -> None:
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0 jobs, got {prefetch}")
        if max_jobs is not None and max_jobs < 1:
            raise ValueError(f"max_jobs must be >= 1 job, got {max_jobs}")
        self.max_jobs = max_jobs
        self._claimed = 0  # jobs claimed and kept, counted against max_jobs
        self._retiring = False  # max_jobs claimed: stop once they are finished
        self.lag_threshold = lag_threshold
        self.lag_interval = lag_interval
        executor.slow_after = min(executor.slow_after, lag_threshold)
        self.prefetch = prefetch
        self.executor = executor
        self.backend = backend
        self.queue = backend.queue
        self.config = config
        self.job_timeout = config.job_timeout if job_timeout is None else job_timeout
        self.grace_period = config.grace_period if grace_period is None else grace_period
        self.lease = config.lease if lease is None else lease
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self.worker_id = worker_id or new_worker_id()
        executor.worker_id = self.worker_id
        self.heartbeat = Heartbeat(
            backend.workers, config, clock=backend.clock, worker_id=self.worker_id, ttl=3 * heartbeat_interval
        )
        self._active: dict[asyncio.Task[None], Job] = {}
        self._recording: set[str] = set()
        self._began: set[str] = set()  # jobs of this worker whose handlers have started and not finished
        self._unfinished: list[Job] = []
        self._side: list[asyncio.Task[None]] = []
        self._claimer: asyncio.Task[None] | None = None
        self._started = False
        self._stopping = asyncio.Event()
        self._force = asyncio.Event()
        self._nap: asyncio.Future[None] | None = None  # the claim loop's current wait, if any
        self._waiting_for_work = False
        self._handing_off = False
        self._interrupt: asyncio.Task[None] | None = None
        self._names = config.job_types if config.mode is WorkerMode.JOB_SPECIALIZED else ()
        # Queues that hand jobs straight to idle workers (Redis, PostgreSQL) are a HandOff; it serves
        # workers that take every job name of their routing keys.
        self._hand_off: HandOff | None = None
        self._cancels: Cancellation | None = None  # asked at each renewal which running jobs were cancelled
        if backend.supports(Capability.CANCEL) and isinstance(self.queue, Cancellation):
            self._cancels = self.queue
        if not self._names and backend.supports(Capability.HAND_OFF) and isinstance(self.queue, HandOff):
            self._hand_off = self.queue
        self._stopped = asyncio.Event()
        self._shutdown: asyncio.Task[None] | None = None
        self._signals = 0
        self._crash = ""  # why the worker is not stopping gracefully ("" while it is)
        self._started_at_crash: set[str] = set()  # jobs whose handlers had started: left to their leases
        self._unguard: Callable[[], None] | None = None
        self._lost: set[tuple[str, str]] = set()  # (id, lease token) of claims lost while held here

    @property
    def in_flight(self) -> int:
        """Jobs claimed by this worker and not yet finished."""
        return len(self._active)

    @property
    def running(self) -> bool:
        """True between :meth:`start` and the end of :meth:`stop`."""
        return self._started and not self._stopped.is_set()

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Announce the worker and start claiming (unless scheduler-only) and the side tasks."""
        if self._started:
            raise RuntimeError("this pool was already started; create a new one")
        self._started = True
        self._unguard = self.executor.guard_loop(asyncio.get_running_loop())
        self.executor.on_start = self._note_start
        await self._guard("heartbeat", self._beat())
        if self.config.claims_jobs:
            self._claimer = asyncio.create_task(self._claim_loop(), name="bananas-claim")
            self._claimer.add_done_callback(self._claimer_ended)
            self._side.append(self._every("leases", max(self.lease / 3, 0.05), self._renew_leases))
            self._side.append(asyncio.create_task(self._watch_lag(), name="bananas-loop-lag"))
        self._side.append(
            self._every("maintenance", self.config.scheduler_interval, self._maintenance(), immediate=True)
        )
        self._side.append(self._every("heartbeat", self.heartbeat_interval, self._beat))
        if observe.OBSERVERS:
            observe.worker_started(self.worker_id, self.config.concurrency)
        log.info(
            "worker %s started: mode=%s concurrency=%d routing_keys=%s priorities=%s scheduler=%s",
            self.worker_id,
            self.config.mode.value,
            self.config.concurrency,
            ",".join(self.config.routing_keys),
            ",".join(p.value for p in self.config.priorities) or "-",
            "on" if self.config.enable_scheduler else "off",
        )

    def request_stop(self, *, force: bool = False) -> None:
        """Begin stopping (safe to call from a signal handler on the loop); ``force`` skips the grace period."""
        self._stopping.set()
        if force:
            self._force.set()
        self._wake()
        if self._waiting_for_work and self._claimer is not None:
            self._claimer.cancel()  # interrupts only queue.wait_for_work (see _claim_loop)
        if self._handing_off and self._interrupt is None and self._hand_off is not None:
            # ends the wait without cutting a reply that may carry jobs
            self._interrupt = asyncio.get_running_loop().create_task(self._hand_off.wake_waiter(self.worker_id))
        if self._started and self._shutdown is None:
            self._shutdown = asyncio.get_running_loop().create_task(self._shut_down(), name="bananas-shutdown")

    async def stop(self, *, force: bool = False) -> None:
        """Stop gracefully (see the class docs) and return once stopped. Idempotent."""
        if not self._started:
            return
        self.request_stop(force=force)
        await self._stopped.wait()

    async def run(self) -> None:
        """Start, then block until stopped. On the main thread, SIGINT and SIGTERM stop the
        pool gracefully; a second signal stops it at once (running jobs are handed back).

        Cancelling this coroutine from outside is not a graceful stop: the pool stops at once
        and jobs whose handlers had started are left to their leases.
        """
        await self.start()
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, self._on_signal, sig)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError):  # not available on this platform/loop
                    pass
        try:
            await self._stopped.wait()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            if not self._stopped.is_set():  # cancelled from outside, or the loop is going down
                self._crashed("the worker's task was cancelled before it stopped")
                self.request_stop(force=True)
                await asyncio.shield(self._stopped.wait())

    def run_forever(self) -> None:
        """:meth:`run` on a new event loop (for plain scripts)."""
        asyncio.run(self.run())

    def _claimer_ended(self, task: asyncio.Task[None]) -> None:
        """A claim loop that died of a bug must not leave a worker that looks alive and claims
        nothing: say why and stop (running jobs finish, the process exits)."""
        if task.cancelled() or task.exception() is None or self._stopping.is_set():
            return
        log.critical("the claim loop stopped on an unexpected error; stopping the worker", exc_info=task.exception())
        self._crashed("the claim loop failed")
        self.request_stop()

    def _note_start(self, job: Job) -> None:
        self._began.add(job.id)

    def _crashed(self, why: str) -> None:
        """Not a graceful stop: from now on only jobs that never started are handed back."""
        if self._crash:
            return
        self._crash = why
        self._started_at_crash = set(self.executor.running) | self._recording | self._began
        log.critical(
            "worker %s is stopping abnormally (%s): jobs whose handlers started are left to their leases "
            "(the attempt is counted when the lease runs out)",
            self.worker_id,
            why,
        )

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("%s received: stopping; waiting up to %gs for running jobs", sig.name, self.grace_period)
            self.request_stop()
        else:
            log.warning("%s received again: stopping now, handing running jobs back", sig.name)
            self.request_stop(force=True)

    async def _shut_down(self) -> None:
        try:
            if self._claimer is not None:
                forced = asyncio.ensure_future(self._force.wait())
                await asyncio.wait({self._claimer, forced}, return_when=asyncio.FIRST_COMPLETED)
                forced.cancel()
                self._claimer.cancel()  # a no-op unless forced while a claim hangs
                await asyncio.gather(self._claimer, forced, return_exceptions=True)
                if self._interrupt is not None:  # its empty inbox entry lands before the inbox is emptied
                    await asyncio.gather(self._interrupt, return_exceptions=True)
                await self._guard("unregistering as a waiter", self._stop_waiting())
            waiting = [t for t, job in self._active.items() if not self._started_or_recording(job)]
            await stop_tasks(waiting)  # prefetched, never started: hand back now, not after the grace period
            await self._hand_back()
            await self._wait_for_running()
            recording = {task for task, job in self._active.items() if job.id in self._recording}
            await stop_tasks([task for task in self._active if task not in recording])
            await asyncio.gather(*recording, return_exceptions=True)  # outcomes being recorded
            await self._hand_back(started=True)
            await stop_tasks(self._side)
            await self._guard("deregister", self.heartbeat.stop())
            log.info("worker %s stopped", self.worker_id)
            if observe.OBSERVERS:
                observe.worker_stopped(self.worker_id)
        finally:
            if self._unguard is not None:
                self._unguard()
            self._stopped.set()

    async def _hand_back(self, *, started: bool = False) -> None:
        """Release unfinished jobs (``started``: their handlers ran); after a crash, only never-started ones."""
        unfinished, self._unfinished = self._unfinished, []
        left: list[Job] = []
        if self._crash:
            began = self._started_at_crash | self._began
            left = [job for job in unfinished if started or job.id in began]
        self._began.difference_update(job.id for job in unfinished)
        back = [job for job in unfinished if job not in left] if left else unfinished
        for job in back:
            await self._guard(f"release of job {printable(job.id)}", self.queue.release(job))
        if back:
            log.info("handed %d unfinished job(s) back to the queue", len(back))
        if left:
            log.warning(
                "left %d started job(s) to their leases (%s): %s",
                len(left),
                self._crash,
                _list_jobs((job.id, job.name) for job in left),
            )

    def _started_or_recording(self, job: Job) -> bool:
        return job.id in self.executor.running or job.id in self._recording

    async def _wait_for_running(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace_period
        while self._active and not self._force.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning("grace period over: %d job(s) still running", len(self._active))
                return
            forced = asyncio.ensure_future(self._force.wait())
            await asyncio.wait({*self._active, forced}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            forced.cancel()

    # -- claiming ------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        config = self.config
        names = self._names
        filtered = bool(names) and self.backend.supports(Capability.JOB_NAME_FILTER)
        pushed = self.backend.supports(Capability.PUSH_WAKEUP)
        handed = self._hand_off is not None
        capacity = config.concurrency + self.prefetch
        low_water = config.concurrency + self.prefetch // 2  # claim again below this many in flight
        idle = False  # the last claim left slots free: the next one may wait for work
        while not self._stopping.is_set():
            # A job whose outcome is being written needs no slot: claim its successor meanwhile
            # (with a bound, should the store take long to write outcomes).
            held = len(self._active) - len(self._recording)
            if held >= capacity or (self.prefetch and held > low_water) or len(self._active) >= 2 * capacity:
                await self._sleep(self.poll_interval)  # woken early when a job finishes
                continue
            free = capacity - held
            if self.max_jobs is not None:
                free = min(free, self.max_jobs - self._claimed)
                if free <= 0:
                    await self._retire()
                    break
            try:
                if idle and handed:
                    jobs = await self._claim_or_wait(free)
                else:
                    jobs = await self.queue.claim(
                        config.routing_keys,
                        config.priorities,
                        limit=free,
                        lease=self.lease,
                        job_names=names if filtered else None,
                    )
            except BananasError as exc:  # e.g. the store is unreachable: say so without a traceback
                log.warning("claim failed (%s); retrying in %gs", printable(exc, 1000), self.poll_interval)
                await self._sleep(self.poll_interval)
                continue
            except Exception:
                log.exception("claim failed; retrying in %gs", self.poll_interval)
                await self._sleep(self.poll_interval)
                continue
            foreign = [job for job in jobs if names and job.name not in names]
            for job in foreign:  # a backend without JOB_NAME_FILTER: leave them for other workers
                await self._guard(f"release of job {printable(job.id)}", self.queue.release(job))
            mine = [job for job in jobs if job not in foreign] if foreign else jobs
            if self._stopping.is_set():
                for job in mine:
                    await self._guard(f"release of job {printable(job.id)}", self.queue.release(job))
                break
            if mine and observe.OBSERVERS:
                observe.claimed(mine, self.worker_id, self.backend.clock())
            for job in mine:
                self._launch(job)
            self._claimed += len(mine)
            idle = not jobs or len(jobs) < free
            if foreign and not mine:
                await self._sleep(self.poll_interval)
            elif handed:  # the next claim waits for work itself, if there is none
                if mine and idle:
                    # Jobs handed to an idle worker: let them reach their handlers (two loop turns:
                    # executor, then handler task) before the next claim's Python runs.
                    await asyncio.sleep(0)
                    await asyncio.sleep(0)
            elif not jobs or (pushed and len(jobs) < free):
                # The ready lists ran dry during this claim: wait for the next enqueue. With push
                # wake-ups (a subscription kept open) nothing enqueued meanwhile is missed.
                await self._wait_for_work()
                if not jobs:  # a wait_for_work that returned at once (work other workers' only)
                    await asyncio.sleep(0)  # must not starve the event loop

    async def _retire(self) -> None:
        """``max_jobs`` claimed: claim no more (jobs handed over meanwhile go back at once) and
        stop gracefully once the running ones are finished."""
        self._retiring = True
        log.info(
            "worker %s claimed its %d jobs (max jobs per process): finishing them, then stopping to be replaced",
            self.worker_id,
            self.max_jobs,
        )
        await self._guard("unregistering as a waiter", self._stop_waiting())
        await self._hand_back()
        if not self._active:
            self.request_stop()

    async def _claim_or_wait(self, free: int) -> list[Job]:
        """The queue's ``claim_or_wait``: claim, or wait for jobs handed over by an enqueue."""
        assert self._hand_off is not None
        self._handing_off = True
        try:
            return await self._hand_off.claim_or_wait(
                self.config.routing_keys,
                self.config.priorities,
                limit=free,
                lease=self.lease,
                waiter=self.worker_id,
                timeout=self.poll_interval,
            )
        finally:
            self._handing_off = False

    async def _stop_waiting(self) -> None:
        """Unregister as a waiter; jobs handed over meanwhile go back to the queue."""
        if self._hand_off is not None:
            self._unfinished.extend(await self._hand_off.stop_waiting(self.worker_id))

    async def _wait_for_work(self) -> None:
        """``queue.wait_for_work``, awaited directly (no helper task on the wake-up path);
        a stop request cancels the claim loop only while it waits here."""
        self._waiting_for_work = True
        try:
            await self.queue.wait_for_work(self.config.routing_keys, self.poll_interval)
        except asyncio.CancelledError:
            if not self._stopping.is_set():
                raise
        except Exception as exc:
            log.warning("waiting for work failed: %s", printable(exc, 1000))
            self._waiting_for_work = False
            await self._sleep(min(self.poll_interval, 1.0))
        finally:
            self._waiting_for_work = False

    async def _sleep(self, timeout: float) -> None:
        """Wait ``timeout`` seconds, until a job finishes or until a stop request, whichever is first."""
        if self._stopping.is_set():
            return
        loop = asyncio.get_running_loop()
        nap = self._nap = loop.create_future()
        timer = loop.call_later(timeout, self._wake)
        try:
            await nap
        finally:
            timer.cancel()
            self._nap = None

    def _wake(self) -> None:
        nap = self._nap
        if nap is not None and not nap.done():
            nap.set_result(None)

    def _launch(self, job: Job) -> None:
        task = asyncio.create_task(self._execute(job), name=f"bananas-job-{job.id}")
        self._active[task] = job
        task.add_done_callback(self._finished)

    async def _execute(self, job: Job) -> None:
        outcome = await self.executor.run(job, timeout=self.job_timeout)
        self._recording.add(job.id)
        self._wake()  # a slot is free for claiming
        await self.executor.record(job, outcome)  # in this task, which the pool never cancels from here on

    def _finished(self, task: asyncio.Task[None]) -> None:
        job = self._active.pop(task)
        lost = False
        if self._lost and (job.id, job.lease_token) in self._lost:
            self._lost.discard((job.id, job.lease_token))
            lost = True
        if task.cancelled() and job.id not in self._recording:
            if not lost:  # a job whose lease was lost is no longer this worker's to hand back
                self._unfinished.append(job)  # whether it began decides, after a crash, if it goes back
            else:
                self._began.discard(job.id)
        else:
            self._began.discard(job.id)
        if not task.cancelled() and task.exception() is not None:
            # Neither recorded nor handed back: its lease runs out and the reaper counts the attempt.
            log.error(
                "job %s (%s): unexpected error in the worker; the job is left to its lease",
                printable(job.id),
                printable(job.name),
                exc_info=task.exception(),
            )
        self._recording.discard(job.id)
        self._wake()
        if self._retiring and not self._active and not self._stopping.is_set():
            self.request_stop()

    # -- side tasks ----------------------------------------------------------------------

    def _every(
        self, name: str, interval: float, step: Callable[[], Awaitable[None]], *, immediate: bool = False
    ) -> asyncio.Task[None]:
        async def loop() -> None:
            if not immediate:
                await asyncio.sleep(interval)
            while True:
                await self._guard(name, step())
                await asyncio.sleep(interval)

        return asyncio.create_task(loop(), name=f"bananas-{name}")

    async def _guard(self, what: str, action: Awaitable[None]) -> None:
        try:
            await action
        except asyncio.CancelledError:
            raise
        except BananasError as exc:  # an error we raise on purpose says what is wrong: one line
            log.error("%s failed (the worker carries on): %s", what, printable(str(exc), 1000))
        except Exception:
            log.exception("%s failed (the worker carries on)", what)

    async def _renew_leases(self) -> None:
        lost = self._lost
        claimed = list(self._active.items())
        if lost:
            claimed = [(task, job) for task, job in claimed if (job.id, job.lease_token) not in lost]
        if not claimed:
            return
        held = await self.queue.renew([job for _, job in claimed], self.lease)
        if self._cancels is not None:  # jobs client.cancel asked to stop learn it here, once per renewal
            await cancelling.stop_requested(self._cancels, self.executor, [c for c in claimed if c[1].id in held])
        if len(held) == len(claimed):
            return
        for task, job in claimed:
            if job.id in held or task.done() or (job.id, job.lease_token) in lost:
                continue
            lost.add((job.id, job.lease_token))  # said once; no longer renewed
            ctx = self.executor.running.get(job.id)
            if ctx is not None and ctx.job is job:
                ctx.cancel("lease lost: the job was taken back and will run again")
                log.warning(
                    "job %s (%s) lost its lease while its handler runs (another worker may run it now); "
                    "asking the handler to stop, its outcome will be discarded",
                    printable(job.id),
                    printable(job.name),
                )
            elif job.id not in self._recording:  # claimed ahead, never started: drop it
                log.warning(
                    "job %s (%s) lost its lease before it started; it will not run here",
                    printable(job.id),
                    printable(job.name),
                )
                task.cancel()

    def _maintenance(self) -> Callable[[], Awaitable[None]]:
        cron: Any = None
        schedules = self.executor.registry.schedules
        if self.config.enable_scheduler and schedules:
            from bananas.scheduler import CronScheduler  # only workers with schedules need croniter

            cron = CronScheduler(self.backend, schedules)

        async def reap() -> None:
            reaped = await self.queue.reap_expired()
            if reaped:
                log.warning("took back %d job(s) whose lease ran out (an attempt counted for each)", reaped)
                if observe.OBSERVERS:
                    observe.reaped(reaped)

        async def move() -> None:
            await self.queue.move_scheduled()

        async def step() -> None:
            await self._guard("reap_expired", reap())
            if self.config.enable_scheduler:
                await self._guard("move_scheduled", move())
                if cron is not None:
                    await self._guard("cron tick", cron.tick())

        return step

    async def _beat(self) -> None:
        heartbeat, executor = self.heartbeat, self.executor
        info = heartbeat.info(len(self._active))  # with the counts the dashboard's throughput is sampled from
        info = attrs.evolve(info, completed=executor.completed, failed=executor.failed)
        await heartbeat.registry.heartbeat(info, heartbeat.ttl)

    async def _watch_lag(self) -> None:
        """Sleep ``lag_interval`` again and again; a wake-up late by ``lag_threshold`` or more
        means something blocked the event loop that long: say so, naming the async jobs that ran."""
        loop = asyncio.get_running_loop()
        interval = self.lag_interval
        while True:
            before = loop.time()
            await asyncio.sleep(interval)
            now = loop.time()
            lag = now - before - interval
            if lag >= self.lag_threshold:
                self._report_lag(lag, since=before)

    def _report_lag(self, lag: float, *, since: float) -> None:
        executor = self.executor
        suspects: dict[str, str] = {}
        for end, job_id, name in executor.slow:  # async attempts that ended during the block
            if end >= since:
                suspects[job_id] = name
        for job_id, ctx in executor.running.items():
            if ctx._thread is None:  # plain def handlers run on threads: they cannot block the loop
                suspects[job_id] = ctx.job.name
        jobs = _list_jobs((job_id, name) for job_id, name in suspects.items()) if suspects else "none"
        if lag >= LAG_LEASE_FRACTION * self.lease:
            log.error(
                "the event loop was blocked for %.1fs (lease %gs): leases may have expired and jobs may run twice; "
                "a handler is blocking the loop (use a plain def or await); async jobs running: %s",
                lag,
                self.lease,
                jobs,
            )
        else:
            log.warning(
                "the event loop was blocked for %.1fs (lease %gs): a handler is blocking the loop "
                "(use a plain def or await); async jobs running: %s",
                lag,
                self.lease,
                jobs,
            )


def _list_jobs(jobs: Iterable[tuple[str, str]], limit: int = 10) -> str:
    """``name id, name id, ... and N more`` for a log line, escaped."""
    shown: list[str] = []
    more = 0
    for job_id, name in jobs:
        if len(shown) < limit:
            shown.append(f"{printable(name)} {printable(job_id)}")
        else:
            more += 1
    return ", ".join(shown) + (f" and {more} more" if more else "")

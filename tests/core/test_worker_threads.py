"""The daemon threads that run plain-``def`` handlers: reused, never starving a callable."""

import threading

from bananas.worker.executor import _DaemonThreads
from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 12), min_size=1, max_size=6))
def test_every_submitted_callable_gets_a_thread_at_once(bursts: list[int]) -> None:
    pool = _DaemonThreads(idle_timeout=0.05)
    for n in bursts:
        # n callables that can only finish together: one left without a thread would time out
        barrier = threading.Barrier(n, timeout=5)
        done = threading.Semaphore(0)
        failures: list[BaseException] = []

        def work(
            barrier: threading.Barrier = barrier,
            done: threading.Semaphore = done,
            failures: list[BaseException] = failures,
        ) -> None:
            try:
                barrier.wait()
            except BaseException as exc:
                failures.append(exc)
            done.release()

        for _ in range(n):
            pool.submit(work)
        for _ in range(n):
            assert done.acquire(timeout=10)
        assert not failures


def test_threads_are_reused_and_daemonic() -> None:
    pool = _DaemonThreads(idle_timeout=5)
    seen: set[int] = set()
    daemon: list[bool] = []
    for _ in range(50):
        finished = threading.Event()

        def work(finished: threading.Event = finished) -> None:
            seen.add(threading.get_ident())
            daemon.append(threading.current_thread().daemon)
            finished.set()

        pool.submit(work)
        assert finished.wait(5)
    assert len(seen) <= 2  # one thread, or two if a finishing one was not yet idle again
    assert all(daemon)


def test_a_hung_callable_does_not_hold_up_the_others() -> None:
    pool = _DaemonThreads(idle_timeout=5)
    release = threading.Event()
    pool.submit(lambda: release.wait(10) and None)
    ran = threading.Event()
    pool.submit(ran.set)
    assert ran.wait(5)
    release.set()

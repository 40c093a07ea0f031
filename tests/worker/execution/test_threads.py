"""The session threads (worker/execution/threads.py): every call runs once and answers its caller, an
exception reaches the caller, no more than the pool's size run at once, and threads are reused."""

from __future__ import annotations

import threading

import pytest

from worker.execution.threads import SessionThreads


def test_each_call_answers_its_caller_and_an_error_is_raised_to_it() -> None:
    pool = SessionThreads(4)

    def fail() -> int:
        raise ValueError("bad session")

    pending = [pool.submit(lambda n=n: n * n) for n in range(50)]
    failed = pool.submit(fail)
    assert [p.result() for p in pending] == [n * n for n in range(50)]
    with pytest.raises(ValueError, match="bad session"):
        failed.result()


def test_no_more_than_its_size_run_at_once_and_the_rest_wait_their_turn() -> None:
    pool = SessionThreads(3)
    release = threading.Event()
    lock = threading.Lock()
    running = peak = 0

    def session(n: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(30)
        with lock:
            running -= 1
        return n

    pending = [pool.submit(session, n) for n in range(10)]
    while True:  # the first three are running, the other seven wait
        with lock:
            if running == 3:
                break
    release.set()
    assert [p.result() for p in pending] == list(range(10))
    assert peak == 3
    # threads are reused: a second round starts none
    started = pool._started
    assert [p.result() for p in [pool.submit(session, n) for n in range(6)]] == list(range(6))
    assert pool._started == started == 3

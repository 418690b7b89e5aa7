"""The threads that run synchronous attempts, and the flag their callers wait on."""
from __future__ import annotations

import threading
import time

import pytest

from formrelay.delivery.attempts import AttemptThreads, Done


def test_done_waits_until_set_or_the_timeout() -> None:
    done = Done()
    started = time.monotonic()
    assert done.wait(0.05) is False and not done.is_set()
    assert time.monotonic() - started >= 0.04
    threading.Timer(0.05, done.set).start()
    assert done.wait(5) is True and done.is_set()
    done.set()  # a second set is harmless
    assert done.wait(0) and done.wait()  # and every later wait passes at once


def test_calls_run_on_reused_named_threads_never_more_than_the_size() -> None:
    pool = AttemptThreads(3, "formrelay-attempt")
    seen: list[str] = []
    for _ in range(20):  # one at a time: the one thread, idle again, takes each
        done = Done()
        pool.submit(lambda done=done: (seen.append(threading.current_thread().name), done.set()))
        assert done.wait(5)
        deadline = time.monotonic() + 5
        while pool._idle < 1 and time.monotonic() < deadline:  # the thread is back waiting once counted idle
            time.sleep(0.001)
    assert set(seen) == {"formrelay-attempt_0"}
    release, entered = threading.Event(), threading.Semaphore(0)

    def hold() -> None:
        entered.release()
        release.wait(5)

    for _ in range(5):
        pool.submit(hold)
    for _ in range(3):
        assert entered.acquire(timeout=5)
    assert not entered.acquire(timeout=0.1)  # three threads at most: the other two calls wait for one
    release.set()
    for _ in range(2):
        assert entered.acquire(timeout=5)
    assert len(pool._threads) == 3
    pool.shutdown()
    for thread in pool._threads:
        thread.join(5)
        assert not thread.is_alive()
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


def test_a_call_that_raises_leaves_its_thread_working(caplog: pytest.LogCaptureFixture) -> None:
    pool = AttemptThreads(1, "formrelay-attempt")
    pool.submit(lambda: 1 / 0)
    done = Done()
    pool.submit(done.set)
    assert done.wait(5)
    assert "an attempt thread's call failed" in caplog.text
    pool.shutdown()

"""The guards around provider calls, on their own: the circuit breaker's states and its single probe, the bulkhead."""
from __future__ import annotations

import threading
import time

from formrelay.delivery.attempts import CLOSED, HALF_OPEN, OPEN, Breaker, Bulkhead


def breaker(failures: int = 2, reset_after: float = 0.05, probe_timeout: float = 10.0):
    changes: list[tuple[str, str]] = []
    return Breaker("ngp", failures, reset_after, probe_timeout,
                   on_change=lambda b, before, after: changes.append((before, after))), changes


def test_opens_after_failures_in_a_row_and_a_success_resets_the_count():
    b, changes = breaker(failures=3)
    b.failed("x")
    b.failed("x")
    b.succeeded()
    b.failed("x")
    b.failed("x")
    assert b.state == CLOSED and b.allow()
    b.failed("ngp: HTTP 503")
    assert b.state == OPEN and not b.allow() and b.retry_in() > 0
    assert b.view()["problem"] == "ngp: HTTP 503" and changes == [(CLOSED, OPEN)]


def test_half_open_lets_one_probe_through_at_a_time():
    b, changes = breaker()
    b.failed("x")
    b.failed("x")
    time.sleep(0.06)
    allowed = []
    threads = [threading.Thread(target=lambda: allowed.append(b.allow())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(allowed) == [False] * 7 + [True] and b.state == HALF_OPEN
    b.succeeded()
    assert b.state == CLOSED and all(b.allow() for _ in range(5))
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_a_failed_probe_opens_it_again_and_an_abandoned_probe_frees_the_slot():
    b, changes = breaker()
    b.failed("x")
    b.failed("x")
    time.sleep(0.06)
    assert b.allow()
    b.failed("still down")
    assert b.state == OPEN and not b.allow()
    time.sleep(0.06)
    assert b.allow() and not b.allow()  # the probe is out
    b.abandon()  # our own budget or bug: says nothing about the provider
    assert b.allow() and b.state == HALF_OPEN
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (OPEN, HALF_OPEN)]


def test_a_probe_that_never_reports_back_is_replaced_after_its_timeout():
    b, _ = breaker(probe_timeout=0.05)
    b.failed("x")
    b.failed("x")
    time.sleep(0.06)
    assert b.allow() and not b.allow()
    time.sleep(0.06)
    assert b.allow()


def test_the_bulkhead_refuses_without_waiting_when_full():
    bulkhead = Bulkhead("ngp", 2)
    assert bulkhead.try_enter() and bulkhead.try_enter()
    started = time.monotonic()
    assert not bulkhead.try_enter() and time.monotonic() - started < 0.5
    assert bulkhead.in_use == 2
    bulkhead.leave()
    assert bulkhead.in_use == 1 and bulkhead.try_enter()

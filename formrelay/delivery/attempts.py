"""Guards around every call to a provider: a bulkhead (bounded concurrency) and a circuit breaker, per provider.

Both are per process and shared by all its threads (request threads, attempt threads, queue workers). With
several gunicorn workers or hosts each process keeps its own: a CRM that fails is noticed by every process within
`breaker_failures` of its own calls, which is quick enough and needs no shared state on the hot path.
"""
from __future__ import annotations

import _thread
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from formrelay import metrics

if TYPE_CHECKING:
    from formrelay.core.config import RelaySettings

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class Bulkhead:
    """At most `size` calls to one provider at once; a caller that finds it full does not wait (it queues)."""

    def __init__(self, name: str, size: int) -> None:
        self.name = name
        self.size = size
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self.in_use = 0

    def try_enter(self) -> bool:
        if not self._slots.acquire(blocking=False):
            return False
        with self._lock:
            self.in_use += 1
        return True

    def leave(self) -> None:
        with self._lock:
            self.in_use -= 1
        self._slots.release()


class Breaker:
    """A circuit breaker: closed -> open after `failures` failures in a row -> after `reset_after` seconds one probe
    at a time (half-open) -> closed when a probe succeeds, open again when it fails.

    Written here rather than taken from pybreaker or circuitbreaker: pybreaker holds one lock around the whole
    guarded call (every call to a slow CRM would wait for the one before it, so the bulkhead would shrink to one),
    and circuitbreaker keeps no lock and lets every caller through once the timeout has passed, not one probe.
    Outcomes are also reported later than the call starts (an attempt that outlives the supporter's deadline),
    which neither library's call-wrapping API allows.
    """

    def __init__(self, name: str, failures: int, reset_after: float, probe_timeout: float,
                 on_change: Callable[[Breaker, str, str], None] | None = None) -> None:
        self.name = name
        self.threshold = failures
        self.reset_after = reset_after
        # A probe whose result never comes (a bug, a killed thread) must not keep the breaker half-open for ever.
        self.probe_timeout = probe_timeout
        self.on_change = on_change
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.last_problem: str | None = None
        self._probe_started: float | None = None
        self._lock = threading.Lock()
        # Wall-clock time since when it has not been closed (open and half-open alike); None while closed.
        self.down_since: float | None = None

    def allow(self) -> bool:
        """Whether a call may go now. In half-open state only one caller (the probe) gets True at a time."""
        with self._lock:
            if self.state == CLOSED:
                return True
            now = time.monotonic()
            if self.state == OPEN:
                if now - self.opened_at < self.reset_after:
                    return False
                self._set(HALF_OPEN)
            if self._probe_started is not None and now - self._probe_started < self.probe_timeout:
                return False
            self._probe_started = now
            return True

    def retry_in(self) -> float:
        """Seconds until the breaker lets a probe through (0 when closed)."""
        with self._lock:
            if self.state == CLOSED:
                return 0.0
            if self.state == OPEN:
                return max(0.0, self.reset_after - (time.monotonic() - self.opened_at))
            return 1.0

    def succeeded(self) -> None:
        with self._lock:
            self.failures = 0
            self._probe_started = None
            if self.state != CLOSED:
                self.last_problem = None
                self._set(CLOSED)

    def failed(self, problem: str) -> None:
        with self._lock:
            self.failures += 1
            self.last_problem = problem
            self._probe_started = None
            if self.state == HALF_OPEN or (self.state == CLOSED and self.failures >= self.threshold):
                self.opened_at = time.monotonic()
                self._set(OPEN)

    def abandon(self) -> None:
        """A call that says nothing about the provider (our own budget, our own bug): free the probe slot."""
        with self._lock:
            self._probe_started = None

    def _set(self, state: str) -> None:
        before, self.state = self.state, state
        if state == CLOSED:
            self.down_since = None
        elif before == CLOSED:
            self.down_since = time.time()
        if before != state and self.on_change is not None:
            self.on_change(self, before, state)

    def view(self) -> dict[str, Any]:
        """For readiness: the state, and while not closed, why and until when."""
        with self._lock:
            out: dict[str, Any] = {"state": self.state}
            if self.state != CLOSED:
                out["failures"] = self.failures
                out["problem"] = self.last_problem
                if self.state == OPEN:
                    out["probe_in"] = round(max(0.0, self.reset_after - (time.monotonic() - self.opened_at)), 1)
                if self.down_since is not None:
                    out["down_for"] = round(max(0.0, time.time() - self.down_since), 1)
            return out

    # -- an operator's reset (issue 28): `formrelay breaker reset PROVIDER` writes the time into the queue store,
    # which every process shares; formrelay.alerts.breakers reads it (on a thread of its own, never a request's)
    # while this breaker is not closed, and hands it in here.
    def operator_reset(self, asked: float | None) -> bool:
        """Close now if an operator asked for it after the breaker opened; True when it closed."""
        with self._lock:
            if asked is None or self.down_since is None or asked < self.down_since:
                return False
            log.warning("provider %s: circuit breaker closed by an operator (formrelay breaker reset)", self.name)
            self.failures, self._probe_started, self.last_problem = 0, None, None
            self._set(CLOSED)
            return True


def log_change(breaker: Breaker, before: str, after: str) -> None:
    """Logged once per change, counted, and nothing else: the breaker's state is the news, not each call."""
    metrics.BREAKER_CHANGES.labels(breaker.name, after).inc()
    if after == OPEN and before == HALF_OPEN:
        log.warning("provider %s: circuit breaker probe failed (%s); open again for %.1f s", breaker.name,
                    breaker.last_problem, breaker.reset_after)
    elif after == OPEN:
        log.error("provider %s: circuit breaker open after %d failure(s) (%s); submissions go straight to the "
                  "queue, a probe in %.1f s", breaker.name, breaker.failures, breaker.last_problem, breaker.reset_after)
    elif after == HALF_OPEN:
        log.warning("provider %s: circuit breaker half-open; one probe at a time", breaker.name)
    else:
        log.warning("provider %s: circuit breaker closed (was %s); the provider answers again", breaker.name, before)


class Guard:
    """One provider's bulkhead and breaker."""

    def __init__(self, name: str, concurrency: int, failures: int, reset_after: float, probe_timeout: float) -> None:
        self.bulkhead = Bulkhead(name, concurrency)
        self.breaker = Breaker(name, failures, reset_after, probe_timeout, on_change=log_change)


def guards_for(names: Iterable[str], relay: RelaySettings, probe_timeout: float) -> dict[str, Guard]:
    """A bulkhead and a breaker for each provider, sized by [relay] provider_concurrency and breaker_*."""
    return {name: Guard(name, relay.provider_concurrency, relay.breaker_failures, relay.breaker_reset, probe_timeout)
            for name in names}


class Done:
    """A one-shot "finished" flag to wait on with a timeout: threading.Event's behaviour for one waiter, on one
    plain lock (an Event is a Condition, an RLock and a fresh waiter lock per wait, twice the work per attempt)."""

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()
        self._lock.acquire()  # held until set(): a waiter blocks on it
        self._set = False
        self._guard = _thread.allocate_lock()

    def set(self) -> None:
        with self._guard:
            if not self._set:
                self._set = True
                self._lock.release()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        if self._set:
            return True
        if self._lock.acquire(timeout=-1 if timeout is None else max(0.0, timeout)):
            self._lock.release()  # let any later wait() pass at once
        return self._set


class AttemptThreads:
    """The threads that run synchronous attempts: a thread per bulkhead slot, started when first needed.

    What ThreadPoolExecutor does for these fire-and-forget calls, without a Future (a Condition, its notify and
    its bookkeeping) per call: measured at 62 us of CPU per hand-over with an executor and an Event, 28 us with
    these (docs/performance.md). The caller waits on a Done of its own.
    """

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._jobs: queue.SimpleQueue[Callable[[], Any] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, call: Callable[[], Any]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("attempt threads are shut down")
            if self._idle:
                self._idle -= 1  # one waiting thread will take it
            elif len(self._threads) < self._size:
                thread = threading.Thread(target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
            # else: every thread is busy; the call waits for the first free one (the bulkhead keeps this rare)
        self._jobs.put(call)

    def _work(self) -> None:
        while True:
            call = self._jobs.get()
            if call is None:
                return
            try:
                call()
            except BaseException:  # the call reports its own result; a stray error must not end the thread
                log.exception("an attempt thread's call failed")
            finally:
                del call
            with self._lock:
                self._idle += 1

    def shutdown(self) -> None:
        """Let every thread end once its current call is done (none is waited for)."""
        with self._lock:
            self._closed = True
            count = len(self._threads)
        for _ in range(count):
            self._jobs.put(None)

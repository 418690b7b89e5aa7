"""Per-provider call budgets (e.g. Action Network 4/second, ENS 200 per 5 minutes), shared via Redis when set.

Built on `limits` (Flask-Limiter's engine): the same moving-window counters work in memory for one process and in
Redis for several hosts, so a relay fleet spends one budget, not one per process.
"""
from __future__ import annotations

import logging
import threading
import time

from limits import parse
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from formrelay.core.errors import TryLater

log = logging.getLogger(__name__)
# While the shared storage is away, count in memory and look again after this many seconds.
RECHECK = 5.0


class BudgetSpent(TryLater):
    """The relay's own budget for a provider is spent: not a failure of the provider (its breaker ignores it)."""


class Budget:
    """A moving-window budget of upstream calls. take() waits briefly for a slot, else raises TryLater."""

    def __init__(self, name: str, rate: str, storage_uri: str = "memory://") -> None:
        self.name = name
        self.rate = rate
        self.item = parse(rate)
        remote = not storage_uri.startswith("memory://")
        options = {"socket_connect_timeout": 1, "socket_timeout": 1} if remote else {}
        self.storage = storage_from_string(storage_uri, **options)
        self.limiter = MovingWindowRateLimiter(self.storage)
        # Redis away: this process spends the budget alone until it is back (like Flask-Limiter's fallback).
        self._fallback = MovingWindowRateLimiter(MemoryStorage()) if remote else None
        self._down_until = 0.0
        self._lock = threading.Lock()

    def _call(self, method: str) -> object:
        if self._fallback is not None and time.monotonic() < self._down_until:
            return getattr(self._fallback, method)(self.item, "formrelay-budget", self.name)
        try:
            result = getattr(self.limiter, method)(self.item, "formrelay-budget", self.name)
        except Exception as exc:
            if self._fallback is None:
                raise
            if not self._down_until:
                log.error("budget %s: shared storage unavailable (%s); counting in this process",
                          self.name, exc.__class__.__name__)
            self._down_until = time.monotonic() + RECHECK
            return getattr(self._fallback, method)(self.item, "formrelay-budget", self.name)
        if self._down_until:
            self._down_until = 0.0
            log.warning("budget %s: shared storage is back", self.name)
        return result

    def seconds_until_free(self) -> float:
        stats = self._call("get_window_stats")
        if stats.remaining > 0:  # type: ignore[attr-defined]
            return 0.0
        return max(0.0, stats.reset_time - time.time())  # type: ignore[attr-defined]

    def try_take(self) -> bool:
        """Spend one call if the window has room."""
        return bool(self._call("hit"))

    def take(self, wait: float = 0.0) -> None:
        """Spend one call, waiting up to `wait` seconds for room; beyond that, TryLater with a retry time."""
        deadline = time.monotonic() + wait
        while True:
            if self.try_take():
                return
            pause = self.seconds_until_free()
            if time.monotonic() + pause > deadline:
                raise BudgetSpent(f"{self.name}: the relay's own budget of {self.rate} is spent", retry_after=max(1.0, pause))
            time.sleep(min(max(pause, 0.01), 0.25))

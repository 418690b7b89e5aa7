"""Per-provider call budgets (e.g. Action Network 4/second, ENS 200 per 5 minutes), shared via Redis when set.

Built on `limits` (Flask-Limiter's engine): the same moving-window counters work in memory for one process and in
Redis for several hosts, so a relay fleet spends one budget, not one per process.
"""
from __future__ import annotations

import threading
import time

from limits import parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from formrelay.core.errors import TryLater


class BudgetSpent(TryLater):
    """The relay's own budget for a provider is spent: not a failure of the provider (its breaker ignores it)."""


class Budget:
    """A moving-window budget of upstream calls. take() waits briefly for a slot, else raises TryLater."""

    def __init__(self, name: str, rate: str, storage_uri: str = "memory://") -> None:
        self.name = name
        self.rate = rate
        self.item = parse(rate)
        self.storage = storage_from_string(storage_uri)
        self.limiter = MovingWindowRateLimiter(self.storage)
        self._lock = threading.Lock()

    def seconds_until_free(self) -> float:
        stats = self.limiter.get_window_stats(self.item, "formrelay-budget", self.name)
        if stats.remaining > 0:
            return 0.0
        return max(0.0, stats.reset_time - time.time())

    def try_take(self) -> bool:
        """Spend one call if the window has room."""
        return bool(self.limiter.hit(self.item, "formrelay-budget", self.name))

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

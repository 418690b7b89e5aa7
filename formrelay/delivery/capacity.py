"""The outbox as the relay sees it: the store, opened on first use, and how full it is (depth, bytes, the cap)."""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from formrelay.delivery.settings import QueueSettings
from formrelay.delivery.stores import Store, open_store


class Outbox:
    """The queue store of one relay, opened on first use, and its counts, refreshed at most once per `max_age`."""

    def __init__(self, settings: QueueSettings, redis_url: str | None, config_source: str) -> None:
        self.settings = settings
        self._where = (redis_url, config_source)
        self._store: Store | None = None
        self._lock = threading.Lock()
        self._stats: tuple[float, dict[str, Any]] | None = None
        self._stats_lock = threading.Lock()
        self._dead_seen: deque[tuple[float, int]] = deque(maxlen=4096)

    @property
    def store(self) -> Store:
        """The store, opened on first use (a description touches it once, for the shared time-trap key)."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = open_store(self.settings, *self._where)
        return self._store

    def stats(self, max_age: float = 0.0) -> dict[str, Any]:
        """Depth, oldest waiting age, dead letters, bytes and how full the queue is: counts only, refreshed from
        the store at most once per `max_age` seconds (one thread refreshes; the others take the last copy)."""
        cached = self._stats
        if cached is not None and time.monotonic() - cached[0] <= max_age:
            return cached[1]
        if cached is not None and not self._stats_lock.acquire(blocking=False):
            return cached[1]
        if cached is None:
            self._stats_lock.acquire()
        try:
            stats = self.store.stats(time.time())
            settings = self.settings
            now = time.monotonic()
            self._dead_seen.append((now, stats.dead))
            while len(self._dead_seen) > 1 and now - self._dead_seen[0][0] > settings.alert_after:
                self._dead_seen.popleft()
            view = {"depth": stats.depth, "oldest_age": stats.oldest_age, "dead": stats.dead,
                    "inflight": stats.inflight, "bytes": stats.bytes,
                    "capacity_used": round(max(stats.depth / settings.max_jobs, stats.bytes / settings.max_bytes), 4),
                    # as seen by this process within alert_after (an operator's drop lowers the baseline)
                    "dead_growing": stats.dead > min(dead for _, dead in self._dead_seen)}
            self._stats = (time.monotonic(), view)
            return view
        finally:
            self._stats_lock.release()

    def full(self) -> bool:
        """Whether a new deferral would go past max_jobs or max_bytes (then it is refused with 503)."""
        try:
            # a count at most a second old: a burst may overshoot the cap by a second's worth, never the disk
            return bool(self.stats(max_age=1.0)["capacity_used"] >= 1.0)
        except Exception:
            return False  # the store does not answer: the put that follows will say so

    def close(self) -> None:
        if self._store is not None:
            self._store.close()

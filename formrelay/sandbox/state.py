"""The sandbox's shared state: what each fake CRM received and the failures it was told to answer with.

Its own module so that the fake CRMs (ngp, ens, ...) and the package that mounts them never import each other.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from flask import current_app


@dataclass
class SandboxState:
    """What each fake provider received, and the failures it has been told to answer with."""

    received: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failures: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    delay: dict[str, float] = field(default_factory=dict)
    # A CRM that takes the request and never answers (until told to recover): nothing is recorded.
    hang: dict[str, float] = field(default_factory=dict)
    # provider -> how many calls it takes before answering its documented "limit exceeded" (ENS: per API user)
    limits: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, provider: str, item: dict[str, Any]) -> None:
        with self.lock:
            self.received[provider].append(item)

    def count_call(self, provider: str, kind: str) -> None:
        with self.lock:
            self.calls[f"{provider}:{kind}"] += 1

    def hung(self, provider: str) -> bool:
        """Hold the request while `hang` is set for the provider (at most its seconds); True if it was held."""
        limit = self.hang.get(provider)
        if not limit:
            return False
        deadline = time.monotonic() + limit
        while self.hang.get(provider) and time.monotonic() < deadline:
            time.sleep(0.02)
        return True
    def over_limit(self, provider: str) -> bool:
        """Count one call against a limit set with /_control/limit; True once it is spent."""
        with self.lock:
            if provider not in self.limits:
                return False
            self.calls[f"{provider}:limited"] += 1
            return self.calls[f"{provider}:limited"] > self.limits[provider]

    def next_failure(self, provider: str) -> int | None:
        with self.lock:
            queue = self.failures.get(provider)
            return queue.pop(0) if queue else None


def state() -> SandboxState:
    """The state of the sandbox app handling this request."""
    sandbox: SandboxState = current_app.extensions["sandbox"]
    return sandbox

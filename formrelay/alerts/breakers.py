"""`formrelay breaker reset PROVIDER`, across processes: the time of the reset in the queue store, which every
process's breaker for that provider reads while it is not closed (formrelay.delivery.attempts.Breaker)."""
from __future__ import annotations

import threading
import time
from collections.abc import Collection
from dataclasses import replace
from typing import Any

from formrelay.delivery.attempts import CLOSED
from formrelay.delivery.jobs import PENDING
from formrelay.delivery.stores import Store

RESET_KEY = "breaker:reset:{}"
KEEP = 86400.0  # a breaker that opened after the reset is not closed by it, so a day is plenty
HELD_BACK = "circuit breaker open"  # how the relay words a job it rescheduled or queued behind an open breaker


def ask_reset(store: Store, provider: str, at: float) -> None:
    store.kv_set(RESET_KEY.format(provider), repr(at), KEEP)


def reset_asked(store: Store, provider: str) -> float | None:
    """When an operator last asked to close this provider's breaker (None: not within a day)."""
    value = store.kv_get(RESET_KEY.format(provider))
    try:
        return float(value) if value else None
    except ValueError:
        return None


def attach(relay: Any, every: float = 1.0) -> threading.Thread:
    """Let this relay's breakers hear `formrelay breaker reset`: a thread reads the store once a second for each
    breaker that is not closed (none while all are closed), so no request ever waits for the store here."""

    def poll() -> None:
        while True:
            time.sleep(every)
            for name, guard in list(relay.guards.items()):
                if guard.breaker.state == CLOSED:
                    continue
                try:
                    if guard.breaker.operator_reset(reset_asked(relay.store, name)):
                        # what this process's worker put off behind the breaker meanwhile is due now too
                        forms = {slug for slug, form in relay.forms.items() if form.config.provider == name}
                        due_now(relay.store, forms, time.time())
                except Exception:  # the store does not answer: the breaker's own probes still close it
                    continue

    thread = threading.Thread(target=poll, name="formrelay-breaker-reset", daemon=True)
    thread.start()
    return thread


def due_now(store: Store, forms: Collection[str], now: float) -> int:
    """Make the waiting jobs of these forms that a breaker held back due now (each only if still waiting), so a
    reset delivers them at once rather than at the breaker's own next probe. Their attempts and age are kept."""
    count = 0
    for job in list(store.scan(PENDING)):
        if job.form in forms and job.target == "primary" and job.due_at > now \
                and HELD_BACK in (job.last_error or ""):
            count += store.swap(job.id, (PENDING,), replace(job, due_at=now))
    return count

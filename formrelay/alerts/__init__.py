"""The relay's own alerts ([alerts]): email, chat and a signed webhook when something needs a person.

A floor above delivery: it reads the relay's queue, breakers and providers, and the web and CLI floors start it
in every server or worker process (`start`). See docs/alerts.md.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from formrelay.alerts import breakers
from formrelay.alerts.monitor import Monitor, storage_lost
from formrelay.alerts.settings import AlertsSettings

__all__ = ["AlertsSettings", "Monitor", "start", "storage_lost"]

log = logging.getLogger("formrelay.alerts")
_started: dict[int, Monitor] = {}
_attached: set[int] = set()
_lock = threading.Lock()
_hearing = False


def start(relay: Any) -> Monitor | None:
    """Breakers that hear `formrelay breaker reset`, and (when [alerts] names a channel) the monitor thread;
    once per relay per process."""
    settings: AlertsSettings = relay.config.alerts or AlertsSettings()
    with _lock:
        if id(relay) in _attached:
            return _started.get(id(relay))
        _attached.add(id(relay))
        breakers.attach(relay)
        if not settings.enabled:
            return None
        monitor = _started[id(relay)] = Monitor(relay, settings).start()
        hear_storage()
    log.info("alerts: watching the queue and the providers every %.0f s (%s)", settings.check_every,
             ", ".join(s.name for s in monitor.outbox.channels))
    return monitor


def hear_storage() -> None:
    """Jobs the queue storage watch finds lost (formrelay.delivery.storage_check) become the storage alert."""
    global _hearing
    if _hearing:
        return
    from formrelay.delivery.storage_check import subscribe

    subscribe(lambda event: storage_lost(event.count) if event.kind == "lost" else None)
    _hearing = True

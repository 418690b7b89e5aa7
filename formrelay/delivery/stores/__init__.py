"""The durable outbox: what the relay answered `queued` is kept (SQLite or Redis) until a provider has it.

Jobs are claimed with a lease. A worker that dies mid-delivery leaves its lease to expire; the next claim hands
the job back marked `uncertain`, and the provider's rule decides whether to retry it (upstream deduplicates)
or hold it for an operator (a retry could double it). Idempotency records live in the same store.

`base` is the interface every store has; `sqlite` and `redis` implement it (`scripts` holds the Redis Lua).
"""
from __future__ import annotations

import logging
from pathlib import Path

from formrelay.delivery.settings import QueueSettings
from formrelay.delivery.stores.base import Stats, Store, storage_down
from formrelay.delivery.stores.sqlite import SQLiteStore

__all__ = ["SQLiteStore", "Stats", "Store", "open_store", "storage_down"]

log = logging.getLogger(__name__)


def open_store(settings: QueueSettings, redis_url: str | None, config_source: str) -> Store:
    """Redis when the relay is scaled out; else a SQLite file next to the config (or a temp one for a mapping)."""
    if redis_url:
        # Imported here: the redis client library takes a noticeable share of start-up, and one host needs none.
        from formrelay.delivery.stores.redis import RedisStore

        return RedisStore(redis_url)
    if settings.path:
        return SQLiteStore(settings.path)
    if config_source and config_source != "<mapping>":
        return SQLiteStore(str(Path(config_source).resolve().parent / "formrelay-queue.sqlite3"))
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="formrelay-")) / "queue.sqlite3"
    log.warning("queue: no [queue] path and no config file; using %s, which is not kept across restarts", path)
    return SQLiteStore(str(path))

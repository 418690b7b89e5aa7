"""[queue] settings: where jobs live, how hard the worker tries, how long data is kept, and the caps."""
from __future__ import annotations

from dataclasses import dataclass

from marshmallow import validate

from formrelay.core import config
from formrelay.core.settings import schema_for, setting

Range = validate.Range


@dataclass(frozen=True)
class QueueSettings:
    """[queue]: where jobs live and how hard the worker tries."""

    path: str | None = setting(None, "the SQLite queue file (default: formrelay-queue.sqlite3 beside the config, "
                                     "or $FORMRELAY_QUEUE_PATH); unused with [relay] redis_url")
    max_attempts: int = setting(50, "delivery attempts before a job becomes a dead letter",
                                validate=Range(min=1, max=10_000))
    max_age: float = setting(7 * 24 * 3600.0, "seconds after which an undelivered job becomes a dead letter",
                             validate=Range(min=1))
    backoff_base: float = setting(5.0, "seconds before the first retry; doubled on each further one",
                                  validate=Range(min=0.001))
    backoff_cap: float = setting(3600.0, "the longest wait between two attempts, in seconds (during a queue storage "
                                         "outage, workers look again every min(10 s, backoff_cap))",
                                 validate=Range(min=0.001))
    lease: float = setting(120.0, "seconds a worker holds a job it is delivering before another may take it over",
                           validate=Range(min=0.5))
    poll_interval: float = setting(0.5, "seconds an idle worker waits before it looks for due jobs again",
                                   validate=Range(min=0.01, max=60))
    workers: int = setting(2, "worker threads delivering queued jobs, per process", validate=Range(min=1, max=64))
    embedded_worker: bool = setting(True, "run the worker inside the web process (false: only `formrelay worker` "
                                          "delivers)")
    idempotency_ttl: float = setting(24 * 3600.0, "seconds an Idempotency-Key's first answer is remembered",
                                     validate=Range(min=1))
    # Personal data of a delivered submission is erased as soon as every job of it is done; keep_done > 0 keeps
    # it that many seconds (for debugging only). The metadata (form, times, outcome, ids) stays keep_metadata.
    keep_done: float = setting(0.0, "seconds a delivered submission's personal data is kept (0: erased at once; "
                                    "for debugging only)", validate=Range(min=0))
    keep_metadata: float = setting(7 * 24 * 3600.0, "seconds a finished job's metadata (form, times, outcome, ids) "
                                                     "is kept", validate=Range(min=0))
    # The disk is the one hard stop: beyond either cap a submission that would be queued is answered 503.
    max_jobs: int = setting(100_000, "waiting submissions the queue holds; beyond, 503 with Retry-After",
                            validate=Range(min=1))
    max_bytes: int = setting(256 * 1024 * 1024, "bytes of waiting submissions the queue holds; beyond, 503",
                             validate=Range(min=1024))
    # Readiness says "degraded" from this fraction of a cap, before the 503s start.
    warn_at: float = setting(0.8, "readiness says degraded from this fraction of either cap",
                             validate=Range(min=0.01, max=1))
    # Readiness says "degraded" when the oldest waiting job is older, or a dead letter appeared within this time.
    alert_after: float = setting(900.0, "seconds: readiness says degraded when the oldest waiting job is older, or "
                                        "a dead letter appeared within this time", validate=Range(min=1))


QueueSchema = schema_for(QueueSettings)

config.register_section("queue", QueueSchema)  # the config reads [queue] with it (core never imports up)

"""[queue] settings: where jobs live, how hard the worker tries, how long data is kept, and the caps."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from marshmallow import RAISE, Schema, fields, post_load, validate

from formrelay.core import config


@dataclass(frozen=True)
class QueueSettings:
    """[queue]: where jobs live and how hard the worker tries."""

    path: str | None = None
    max_attempts: int = 50
    max_age: float = 7 * 24 * 3600.0
    backoff_base: float = 5.0
    backoff_cap: float = 3600.0
    lease: float = 120.0
    poll_interval: float = 0.5
    workers: int = 2
    embedded_worker: bool = True
    idempotency_ttl: float = 24 * 3600.0
    # Personal data of a delivered submission is erased as soon as every job of it is done; keep_done > 0 keeps
    # it that many seconds (for debugging only). The metadata (form, times, outcome, ids) stays keep_metadata.
    keep_done: float = 0.0
    keep_metadata: float = 7 * 24 * 3600.0
    # The disk is the one hard stop: beyond either cap a submission that would be queued is answered 503.
    max_jobs: int = 100_000
    max_bytes: int = 256 * 1024 * 1024
    # Readiness says "degraded" from this fraction of a cap, before the 503s start.
    warn_at: float = 0.8
    # Readiness says "degraded" when the oldest waiting job is older, or a dead letter appeared within this time.
    alert_after: float = 900.0


class QueueSchema(Schema):
    class Meta:
        unknown = RAISE

    path = fields.String(load_default=None)
    max_attempts = fields.Integer(load_default=50, validate=validate.Range(min=1, max=10_000))
    max_age = fields.Float(load_default=7 * 24 * 3600.0, validate=validate.Range(min=1))
    backoff_base = fields.Float(load_default=5.0, validate=validate.Range(min=0.001))
    backoff_cap = fields.Float(load_default=3600.0, validate=validate.Range(min=0.001))
    lease = fields.Float(load_default=120.0, validate=validate.Range(min=0.5))
    poll_interval = fields.Float(load_default=0.5, validate=validate.Range(min=0.01, max=60))
    workers = fields.Integer(load_default=2, validate=validate.Range(min=1, max=64))
    embedded_worker = fields.Boolean(load_default=True)
    idempotency_ttl = fields.Float(load_default=24 * 3600.0, validate=validate.Range(min=1))
    keep_done = fields.Float(load_default=0.0, validate=validate.Range(min=0))
    keep_metadata = fields.Float(load_default=7 * 24 * 3600.0, validate=validate.Range(min=0))
    max_jobs = fields.Integer(load_default=100_000, validate=validate.Range(min=1))
    max_bytes = fields.Integer(load_default=256 * 1024 * 1024, validate=validate.Range(min=1024))
    warn_at = fields.Float(load_default=0.8, validate=validate.Range(min=0.01, max=1))
    alert_after = fields.Float(load_default=900.0, validate=validate.Range(min=1))

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> QueueSettings:
        return QueueSettings(**data)


config.register_section("queue", QueueSchema)  # the config reads [queue] with it (core never imports up)

"""What became of a submission, and the HTTP status and status word that say so (contract section 3)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

STATUS_HTTP: Mapping[str, int] = {
    "delivered": 200,
    "queued": 202,
    "bad_request": 400,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "too_large": 413,
    "conflict": 409,
    "unsupported_media_type": 415,
    "invalid": 422,
    "rate_limited": 429,
    "error": 500,
    "rejected": 502,
    "unavailable": 503,
}
HTTP_STATUS: Mapping[int, str] = {code: word for word, code in STATUS_HTTP.items()}
OK_STATUSES = frozenset({"delivered", "queued"})


@dataclass(frozen=True)
class Outcome:
    """The answer for one submission: a status word, and what the public may be told."""

    status: str
    message: str | None = None
    redirect: str | None = None
    errors: Mapping[str, list[str]] | None = None
    retry_after: int | None = None
    # Upstream detail for logs and the queue, never shown to the public.
    upstream_status: int | None = None
    upstream_ms: float | None = None  # time spent in upstream calls by the attempt that gave this outcome
    reference: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in OK_STATUSES

    @property
    def http_status(self) -> int:
        return STATUS_HTTP.get(self.status, 500)

    def public(self) -> dict[str, Any]:
        """The JSON body the contract promises."""
        body: dict[str, Any] = {"ok": self.ok, "status": self.status}
        if self.message:
            body["message"] = self.message
        if self.redirect:
            body["redirect"] = self.redirect
        if self.errors:
            body["errors"] = {k: list(v) for k, v in self.errors.items()}
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        return body

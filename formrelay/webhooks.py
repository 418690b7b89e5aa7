"""Signed webhooks (Standard Webhooks): the event body, its signature, and one HTTP attempt to a receiver.

Transport floor, beside the providers: it knows HTTP and the Standard Webhooks rules, nothing of the relay or
its queue (the delivery floor makes each event a job and calls `WebhookSender.send` from the worker).

The signature is the `standardwebhooks` library's own (`Webhook.sign`), so it is byte for byte what every
receiver library verifies: `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, keyed with the
base64-decoded part of the `whsec_` secret.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import socket
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from standardwebhooks import Webhook

from formrelay import metrics
from formrelay.budget import Budget
from formrelay.core.config import RelaySettings, WebhookConfig
from formrelay.core.errors import TryLater
from formrelay.core.outcome import Outcome
from formrelay.forms import attribution
from formrelay.transport import Upstream

USER_AGENT = "formrelay-webhooks/0.1"
EVENT_TYPE = "submission.{event}"
# Statuses after which a receiver asks to be left alone: the job goes to the dead letters at once.
GONE = frozenset({410})


def message_id(job_id: str) -> str:
    """The `webhook-id`: derived from the job's id (submission + webhook + event), so the same on every retry."""
    return "msg_" + hashlib.sha256(job_id.encode()).hexdigest()[:32]


def event_body(event: str, at: float, form: str, submission: Mapping[str, Any], outcome: Mapping[str, Any],
               include_personal_data: bool) -> bytes:
    """The JSON body of one event (pure): the same bytes on every retry, so a signature can be checked again."""
    data: dict[str, Any] = {"form": form, "submission_id": submission.get("id"), "outcome": dict(outcome)}
    credited = attribution.touches(submission.get("context") or {})
    if credited:  # campaign codes only, for every receiver (forms/attribution.py keeps personal data out)
        data["attribution"] = credited
    if include_personal_data:
        data["fields"] = dict(submission.get("values") or {})
        data["context"] = dict(submission.get("context") or {})
    body = {
        "type": EVENT_TYPE.format(event=event),
        "timestamp": dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": data,
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


def sign(secret: str, msg_id: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for a body sent now."""
    stamp = int(now if now is not None else time.time())
    signature = Webhook(secret).sign(msg_id, dt.datetime.fromtimestamp(stamp, dt.UTC), body.decode("utf-8"))
    return {"webhook-id": msg_id, "webhook-timestamp": str(stamp), "webhook-signature": signature}


class WebhookSender:
    """Sends signed events: one pooled HTTP session, the relay's timeouts, one call budget per receiver.

    Calls go through requests' Session.send (formrelay/transport.py): no redirects (a receiver may not send the
    body on to a URL the config does not name), only the answer's status is read, and each attempt has a
    wall-clock deadline of connect_timeout + timeout, so a receiver dripping its answer cannot hold a worker.
    """

    def __init__(self, relay: RelaySettings, storage_uri: str = "memory://") -> None:
        self.timeout = (relay.connect_timeout, relay.timeout)
        self.storage_uri = storage_uri
        self.upstream = Upstream("webhooks", relay.connect_timeout, relay.timeout, USER_AGENT, pool_maxsize=16,
                                 setting=lambda url: "the webhook's url in [[forms.<form>.webhooks]]")
        self._budgets: dict[tuple[str, str], Budget] = {}

    def _budget(self, form: str, hook: WebhookConfig) -> Budget:
        key = (form, hook.name)
        budget = self._budgets.get(key)
        if budget is None:
            budget = self._budgets[key] = Budget(f"webhook:{form}:{hook.name}", hook.rate, self.storage_uri)
        return budget

    def send(self, form: str, hook: WebhookConfig, msg_id: str, body: bytes) -> Outcome:
        """One attempt: delivered on 2xx, rejected on 410 Gone, TryLater otherwise (never the URL in a message)."""
        self._budget(form, hook).take(wait=1.0)
        headers = {"Content-Type": "application/json", **sign(hook.secret, msg_id, body)}
        where = f"webhook {hook.name}"
        started = time.perf_counter()
        status: int | None = None
        try:
            answer = self.upstream.call("POST", hook.url, data=body, headers=headers, read_body=False, where=where)
            status = answer.status_code
        finally:
            metrics.UPSTREAM_SECONDS.labels("webhook", metrics.upstream_result(status)).observe(
                time.perf_counter() - started)
        if 200 <= status < 300:
            return Outcome("delivered", upstream_status=status)
        if status in GONE:
            return Outcome("rejected", message=f"{where}: the receiver answered HTTP {status}", upstream_status=status)
        retry_after = _retry_after(answer.headers.get("Retry-After"))
        raise TryLater(f"{where}: HTTP {status}", retry_after=retry_after, may_have_arrived=status >= 500)

    def close(self) -> None:
        self.upstream.close()


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: the queue's own backoff will do


def reachable(url: str, timeout: float = 3.0) -> tuple[bool, str]:
    """Whether the URL's host accepts a TCP connection (nothing is sent): (ok, what happened, in words)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    started = time.perf_counter()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except socket.timeout:
        return False, f"no answer within {timeout:g}s"
    except OSError as exc:
        return False, f"does not answer ({exc.__class__.__name__})"
    return True, f"answers (TCP connect in {(time.perf_counter() - started) * 1000:.0f} ms)"

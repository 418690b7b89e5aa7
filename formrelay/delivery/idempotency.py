"""Idempotency keys (the IETF draft's semantics): a repeat with the same body gets the first answer, another
body 422, a repeat while the first is still in flight 409 once the first's deadline has passed.

Records live in the queue store under a hash of the form and the key; the key itself is never stored, and the
body's fingerprint is keyed with it, so whoever reads the store cannot match it against guessed details.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from formrelay import metrics
from formrelay.core.i18n import Msg
from formrelay.core.i18n import gettext as _
from formrelay.core.outcome import Outcome
from formrelay.delivery.capacity import Outbox
from formrelay.delivery.stores import storage_down
from formrelay.forms.submission import Submission

log = logging.getLogger(__name__)

KEY_REUSED = Msg("This Idempotency-Key was already used for a different submission, so nothing new was sent. "
                 "Please send the form again.")
IN_PROGRESS = Msg("This submission is still being sent. Please wait a moment before trying again.")
# The answers a repeat is given again; any other (invalid, unavailable) lets the supporter fix it and send again.
KEPT = ("delivered", "queued", "rejected")


def fingerprint(submission: Submission) -> str:
    """What "the same body" means for an idempotency key: the validated values, canonically (controls and
    one-use values such as the `_started` token or a CAPTCHA answer are not the supporter's data)."""
    canonical = json.dumps(dict(submission.values), sort_keys=True, separators=(",", ":"), default=str)
    # Keyed with the idempotency key itself, which the store never holds (only its hash): the stored fingerprint
    # cannot be matched against guessed details (an email address) by whoever reads the store.
    secret = (submission.idempotency_key or "").encode("utf-8", "replace")
    return hmac.new(secret, canonical.encode("utf-8"), hashlib.sha256).hexdigest()


def record_key(slug: str, submission: Submission) -> str | None:
    """The store's key for a submission's idempotency record (None without an Idempotency-Key)."""
    if not submission.idempotency_key:
        return None
    digest = hashlib.sha256(submission.idempotency_key.encode("utf-8", "replace")).hexdigest()
    return f"{slug}:{digest}"


class Idempotency:
    """Answers repeats from the store's records, and records each first answer."""

    def __init__(self, outbox: Outbox, ttl: float, answer_within: float) -> None:
        self.outbox = outbox
        self.ttl = ttl
        # The first request answers within answer_within (then its answer is stored): a repeat waits that long.
        self.answer_within = answer_within

    def submit(self, slug: str, submission: Submission, deliver: Callable[[], Outcome]) -> Outcome:
        """The first answer for a repeat; else `deliver()`, its answer recorded for the repeats to come."""
        key = record_key(slug, submission)
        fp = marker = ""
        if key is not None:
            fp = fingerprint(submission)
            marker = json.dumps({"fp": fp})
            try:
                prior = self._claim(slug, key, fp, marker)
            except Exception as exc:
                if not storage_down(exc):
                    raise
                # A healthy CRM still gets the submission: a rare duplicate beats turning a supporter away.
                log.warning("form %s: idempotency records unavailable (%s); delivering without one",
                            slug, exc.__class__.__name__)
                key, prior = None, None
            if prior is not None:
                return prior
        try:
            outcome = deliver()
        except BaseException:
            if key is not None:
                self._forget(key, marker)
            raise
        if key is not None:
            try:
                if outcome.status in KEPT:
                    self.outbox.store.idem_store(key, json.dumps({"fp": fp, "answer": outcome.public()}), self.ttl)
                else:  # invalid or unavailable: the supporter may fix it and send again
                    self.outbox.store.idem_release(key, marker)
            except Exception as exc:
                if not storage_down(exc):
                    raise
                log.warning("form %s: could not record the answer for its idempotency key (%s)",
                            slug, exc.__class__.__name__)
        return outcome

    def _forget(self, key: str, marker: str = "") -> None:
        try:
            self.outbox.store.idem_release(key, marker)
        except Exception as exc:
            if not storage_down(exc):
                raise
            log.warning("could not release an idempotency key (%s)", exc.__class__.__name__)

    def _claim(self, slug: str, key: str, fp: str, marker: str) -> Outcome | None:
        """None when this request owns the key; else what a repeat gets (first answer, 422 or 409)."""
        deadline = time.monotonic() + self.answer_within + 1.0
        while True:
            prior = self.outbox.store.idem_claim(key, self.ttl, marker)
            if prior is None:
                return None
            record = read_record(prior)
            if record.get("fp") and record["fp"] != fp:
                return _repeat(slug, "another body", Outcome(
                    "invalid", message=_(KEY_REUSED), errors={"_idempotency_key": [_(KEY_REUSED)]}))
            answer = record.get("answer")
            if isinstance(answer, dict):
                return _repeat(slug, "first answer", Outcome(
                    answer["status"], message=answer.get("message"), redirect=answer.get("redirect"),
                    errors=answer.get("errors"), retry_after=answer.get("retry_after")))
            if time.monotonic() > deadline:
                return _repeat(slug, "in progress", Outcome("conflict", message=_(IN_PROGRESS), retry_after=1))
            time.sleep(0.05)


def _repeat(slug: str, kind: str, outcome: Outcome) -> Outcome:
    metrics.REPEATS.labels(slug, kind).inc()
    return Outcome(outcome.status, message=outcome.message, redirect=outcome.redirect, errors=outcome.errors,
                   retry_after=outcome.retry_after, detail={"repeat": kind})


def read_record(stored: str) -> dict[str, Any]:
    """An idempotency record: {"fp", "answer"} (a first answer), {"fp"} (in flight), or older shapes."""
    if not stored:
        return {}
    try:
        record = json.loads(stored)
    except ValueError:
        return {}
    if not isinstance(record, dict):
        return {}
    if "status" in record:  # written before fingerprints: the answer itself
        return {"answer": record}
    return record

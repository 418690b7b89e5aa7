"""Abuse protection: honeypot, signed time-trap, CAPTCHA verification and origin checks, with counters.

A caught bot gets the same answer as a person whose submission went through, and nothing is delivered:
telling bots which trap they fell into only teaches them.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from itsdangerous import BadSignature, Signer
from marshmallow import RAISE, Schema, fields, post_load, validate

from formrelay import metrics
from formrelay.core import config
from formrelay.core.i18n import Msg

log = logging.getLogger(__name__)

CAPTCHA_SERVICES: Mapping[str, tuple[str, str]] = {
    # provider -> (verification URL, the field its widget posts)
    "turnstile": ("https://challenges.cloudflare.com/turnstile/v0/siteverify", "cf-turnstile-response"),
    "hcaptcha": ("https://api.hcaptcha.com/siteverify", "h-captcha-response"),
    "recaptcha": ("https://www.google.com/recaptcha/api/siteverify", "g-recaptcha-response"),
}
CAPTCHA_FIELDS = frozenset(field for _, field in CAPTCHA_SERVICES.values())
CAPTCHA_MESSAGE = Msg("Please complete the verification and send the form again.")

_counts: Counter[tuple[str, str]] = Counter()
_counts_lock = threading.Lock()


def count(form: str, reason: str) -> None:
    """Count a discarded or refused submission (no personal data: form and reason only)."""
    with _counts_lock:
        _counts[(form, reason)] += 1
    metrics.REJECTIONS.labels(form, reason).inc()


def counts() -> dict[tuple[str, str], int]:
    with _counts_lock:
        return dict(_counts)


@dataclass(frozen=True)
class Captcha:
    provider: str
    secret: str
    verify_url: str
    field: str
    on_error: str = "reject"  # when the CAPTCHA service itself is down: "reject" (503) or "accept"


class CaptchaSchema(Schema):
    class Meta:
        unknown = RAISE

    provider = fields.String(required=True, validate=validate.OneOf(list(CAPTCHA_SERVICES)))
    secret = fields.String(required=True, validate=validate.Length(min=1))
    verify_url = fields.Url(schemes={"http", "https"}, require_tld=False, load_default=None)
    field = fields.String(load_default=None)
    on_error = fields.String(load_default="reject", validate=validate.OneOf(["reject", "accept"]))

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> Captcha:
        url, field_name = CAPTCHA_SERVICES[data["provider"]]
        return Captcha(provider=data["provider"], secret=data["secret"], verify_url=data["verify_url"] or url,
                       field=data["field"] or field_name, on_error=data["on_error"])


config.register_section("captcha", CaptchaSchema)  # the config reads [forms.x.captcha] with it


class TimeTrap:
    """Signed `_started` tokens: issued with the form's description, checked on submission.

    The token is `<slug>.<issued at, in milliseconds>.<signature>`. itsdangerous' TimestampSigner keeps whole
    seconds only, which would make a two-second minimum anything from one to two seconds; so the time is
    ours, and only the signing is the library's.
    """

    def __init__(self, secret_key: str | None, min_seconds: float, max_age: float) -> None:
        if not secret_key:
            # Fine for one process; several hosts or workers must share [relay] secret_key.
            log.warning("no [relay] secret_key: time-trap tokens are signed with a per-process key")
            secret_key = secrets.token_urlsafe(32)
        self.signer = Signer(secret_key, salt="formrelay-started")
        self.min_seconds = min_seconds
        self.max_age = max_age

    def issue(self, slug: str, now: float | None = None) -> str:
        issued_ms = int((time.time() if now is None else now) * 1000)
        return self.signer.sign(f"{slug}.{issued_ms}").decode("ascii")

    def verdict(self, slug: str, token: str | None, required: bool) -> str | None:
        """None when the token is fine (or absent and not required), else the reason to discard."""
        if not token:
            return "no time-trap token" if required else None
        try:
            value = self.signer.unsign(token).decode("utf-8", "replace")
        except BadSignature:
            return "time-trap token forged"
        signed_slug, _, issued = value.rpartition(".")
        if not issued.isdigit():
            return "time-trap token forged"
        if signed_slug != slug:
            return "time-trap token for another form"
        age = time.time() - int(issued) / 1000
        if age > self.max_age:
            return "time-trap token too old"
        if age < self.min_seconds:
            return "sent too fast"
        return None


def verify_captcha(captcha: Captcha, token: str | None, remote_ip: str | None, timeout: float) -> str:
    """'ok', 'failed' (missing or refused token) or 'unavailable' (the service could not say)."""
    if not token:
        return "failed"
    try:
        response = requests.post(captcha.verify_url, data={"secret": captcha.secret, "response": token,
                                                           **({"remoteip": remote_ip} if remote_ip else {})},
                                 timeout=timeout)
        body = response.json()
    except (requests.RequestException, ValueError):
        return "unavailable"
    if response.status_code >= 500 or not isinstance(body, dict) or "success" not in body:
        return "unavailable"
    return "ok" if body.get("success") is True else "failed"


def origin_of(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def origin_allowed(origin: str | None, referer: str | None, own: str, allowed: Sequence[str],
                   require: bool) -> bool:
    """Browser posts must come from an allowed origin (Origin, else Referer); server-to-server posts carry neither."""
    claimed = origin if origin else origin_of(referer)
    if origin == "null":
        return "*" in allowed
    if not claimed:
        return not require
    claimed = claimed.rstrip("/")
    return claimed == own.rstrip("/") or "*" in allowed or claimed in {a.rstrip("/") for a in allowed}

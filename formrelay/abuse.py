"""Abuse protection: honeypot, signed time-trap, CAPTCHA verification and origin checks, with counters.

A caught bot gets the same answer as a person whose submission went through, and nothing is delivered:
telling bots which trap they fell into only teaches them.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from itsdangerous import BadSignature, Signer
from marshmallow import validate

from formrelay import metrics
from formrelay.core import config
from formrelay.core.settings import schema_for, setting, url_field
from formrelay.core.errors import TryLater
from formrelay.core.i18n import Msg
from formrelay.transport import Upstream

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
    """[forms.x.captcha]: the service a form's CAPTCHA token is verified with."""

    provider: str = setting(meaning="the CAPTCHA service: turnstile, hcaptcha or recaptcha",
                            validate=validate.OneOf(list(CAPTCHA_SERVICES)))
    secret: str = setting(meaning="the service's secret key for verifying tokens", validate=validate.Length(min=1))
    # None in the file: the service's own (filled in by _captcha below).
    verify_url: str = setting(None, "the verification endpoint (default: the service's own)", field=url_field)
    field: str = setting(None, "the form field holding the token (default: the service's own, e.g. "
                               "cf-turnstile-response)")
    on_error: str = setting("reject", "when the CAPTCHA service itself is down: reject (503) or accept",
                            validate=validate.OneOf(["reject", "accept"]))


def _captcha(data: dict[str, Any]) -> Captcha:
    url, field_name = CAPTCHA_SERVICES[data["provider"]]
    return Captcha(provider=data["provider"], secret=data["secret"], verify_url=data["verify_url"] or url,
                   field=data["field"] or field_name, on_error=data["on_error"])


CaptchaSchema = schema_for(Captcha, make=_captcha)
config.register_section("captcha", CaptchaSchema)  # the config reads [forms.x.captcha] with it


@dataclass(frozen=True)
class TrapCheck:
    """What the time-trap makes of a token: deliver, fake a success (a bot), or ask the person again."""

    reason: str | None = None  # why the submission is not delivered now; None: deliver
    fake: bool = False  # a bot's token (forged, another form's): answer as a person would be answered
    wait: float | None = None  # sent too fast: seconds left before the same token is good
    nonce: str | None = None  # a good token: used once (the relay keeps it in the shared store)
    ttl: float = 0.0  # how long the nonce must be remembered: the token's remaining life


STORE_RETRY_SECONDS = 30.0
TOO_FAST_MESSAGE = Msg("That was quick! Please wait a moment and send the form again.")
RELOAD_MESSAGE = Msg("This page is out of date. Please reload it and send the form again.")


class TimeTrap:
    """Signed `_started` tokens: issued with the form's description, checked on submission.

    The token is `<slug>.<issued at, in ms>.<nonce>.<key id>.<signature>`. itsdangerous' TimestampSigner keeps
    whole seconds only, which would make a two-second minimum anything from one to two seconds; so the time is
    ours, and only the signing is the library's. The nonce makes every token single-use (the relay keeps used
    ones in the shared store); the key id tells a token signed with another key (a host that does not share
    this one's key) from a forged one, so that a person is never dropped for the relay's own configuration.
    """

    def __init__(self, secret_key: str | None, min_seconds: float, max_age: float,
                 shared_key: Callable[[], str] | None = None) -> None:
        self._configured = secret_key
        self._shared_key = shared_key
        self._signer: Signer | None = None
        self._retry_store_at: float | None = None  # set while signing with a stand-in key (the store was down)
        self.key_id = ""
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self.min_seconds = min_seconds
        self.max_age = max_age

    @property
    def signer(self) -> Signer:
        """The signer: [relay] secret_key, else the key kept in the shared store, else (store down) a stand-in key
        of this process, until the store answers again."""
        retry = self._retry_store_at
        if self._signer is None or (retry is not None and time.monotonic() >= retry):
            with self._lock:
                retry = self._retry_store_at
                if self._signer is None or (retry is not None and time.monotonic() >= retry):
                    key = self._configured or self._key_from_store()
                    self.key_id = hmac.new(key.encode(), b"formrelay-time-trap-key-id", hashlib.sha256).hexdigest()[:8]
                    self._signer = Signer(key, salt="formrelay-started")
        return self._signer

    def _key_from_store(self) -> str:
        if self._shared_key is None:
            log.warning("no [relay] secret_key and no shared store: time-trap tokens are signed with a per-process key")
            return secrets.token_urlsafe(32)
        try:
            key = self._shared_key()
        except Exception as exc:  # the store is down: tokens still work, and other processes won't drop them
            log.warning("time-trap: the shared key cannot be read (%s); signing with a key of this process for now",
                        exc.__class__.__name__)
            self._retry_store_at = time.monotonic() + STORE_RETRY_SECONDS
            return secrets.token_urlsafe(32) if self._signer is None else self._current_key()
        self._retry_store_at = None
        return key

    def _current_key(self) -> str:
        assert self._signer is not None
        return self._signer.secret_keys[-1].decode()

    def issue(self, slug: str, now: float | None = None) -> str:
        signer = self.signer
        issued_ms = int((time.time() if now is None else now) * 1000)
        return signer.sign(f"{slug}.{issued_ms}.{secrets.token_urlsafe(9)}.{self.key_id}").decode("ascii")

    def check(self, slug: str, token: str | None, required: bool) -> TrapCheck:
        """What to do with a submission carrying this token (see TrapCheck)."""
        if not token:
            return TrapCheck("no time-trap token", fake=True) if required else TrapCheck()
        signer = self.signer
        value, _, _ = token.rpartition(".")
        parts = value.split(".")
        if len(parts) == 4 and parts[3] != self.key_id and re.fullmatch(r"[0-9a-f]{8}", parts[3]):
            # Signed with another key: another host's, or this relay's before a key change. The token cannot
            # be verified, which is never a reason to drop a person: it counts as no token at all.
            if parts[3] not in self._warned and len(self._warned) < 100:
                self._warned.add(parts[3])
                log.warning("time-trap: a token signed with another key (id %s): do all hosts share "
                            "[relay] secret_key or redis_url?", parts[3])
            if required:
                return TrapCheck("time-trap token signed with another key")
            return TrapCheck()
        try:
            signer.unsign(token)
        except BadSignature:
            return TrapCheck("time-trap token forged", fake=True)
        if len(parts) not in (2, 4) or not parts[1].isdigit():
            return TrapCheck("time-trap token forged", fake=True)
        if parts[0] != slug:
            return TrapCheck("time-trap token for another form", fake=True)
        age = time.time() - int(parts[1]) / 1000
        if age > self.max_age:
            # Signed by us, for this form: a person who left the page open for days. Ask again, don't drop.
            return TrapCheck("time-trap token too old")
        if age < self.min_seconds:
            return TrapCheck("sent too fast", wait=self.min_seconds - age)
        nonce = parts[2] if len(parts) == 4 else hashlib.sha256(token.encode()).hexdigest()
        return TrapCheck(nonce=f"{slug}:{nonce}", ttl=self.max_age - age + 60)

    def verdict(self, slug: str, token: str | None, required: bool) -> str | None:
        """None when the token is fine (or absent and not required), else the reason it is not."""
        return self.check(slug, token, required).reason


CAPTCHA_USER_AGENT = "formrelay-captcha/0.1"
CAPTCHA_MAX_BYTES = 64_000  # a verdict is a small JSON object; anything larger is not one


@functools.lru_cache(maxsize=8)
def _verifier(timeout: float) -> Upstream:
    """The CAPTCHA services' upstream: like every other call, through Session.send, no redirects followed, the
    answer read within the bound and the whole exchange within the time the form allows."""
    return Upstream("captcha", min(3.05, timeout), timeout, CAPTCHA_USER_AGENT, max_bytes=CAPTCHA_MAX_BYTES,
                    pool_maxsize=8, setting=lambda url: "[forms.x.captcha] verify_url")


def verify_captcha(captcha: Captcha, token: str | None, remote_ip: str | None, timeout: float) -> str:
    """'ok', 'failed' (missing or refused token) or 'unavailable' (the service could not say)."""
    if not token:
        return "failed"
    try:
        answer = _verifier(timeout).call("POST", captcha.verify_url, data={
            "secret": captcha.secret, "response": token, **({"remoteip": remote_ip} if remote_ip else {})})
        body = answer.json()
    except (TryLater, ValueError):
        return "unavailable"
    if answer.status_code >= 500 or not isinstance(body, dict) or "success" not in body:
        return "unavailable"
    return "ok" if body.get("success") is True else "failed"


def client_network(address: str | None, ipv6_prefix: int = 64) -> str:
    """The key a client is limited by: its IPv4 address, or its IPv6 network (/64 by default).

    A single home or server is given a whole /64 (2^64 addresses), so limiting an IPv6 client per address
    would not limit it at all. IPv4-mapped addresses (::ffff:192.0.2.1) count as the IPv4 address.
    """
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop a zone id (fe80::1%eth0)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))
    return str(ip)


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

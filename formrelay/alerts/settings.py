"""[alerts] settings: where the relay's own alerts go (email, Slack-style chat, a signed webhook) and which events.

The dataclass is the one place each key's default and meaning is written (core/settings.py's `setting`); the
marshmallow schema that reads the TOML is derived from it, and registers itself with the config the way [queue]
does (core/config.py reads [alerts] when it is registered: the cli and web floors import this package).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from marshmallow import ValidationError, fields, validate

from formrelay.core import config
from formrelay.core.settings import schema_for, setting, url_field
from formrelay.core.webhook_settings import webhook_key

# The event kinds, in the words the messages and docs/alerts.md use.
DEAD_LETTERS = "dead_letters"
BREAKER_OPEN = "breaker_open"
WAITING = "queue_waiting"
NEAR_CAP = "queue_near_cap"
STORAGE = "queue_storage"
CREDENTIALS = "credentials_refused"
EVENTS = (DEAD_LETTERS, BREAKER_OPEN, WAITING, NEAR_CAP, STORAGE, CREDENTIALS)
SMTP_SCHEMES = ("smtp", "smtps")


def _smtp_ok(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in SMTP_SCHEMES or not parts.hostname:
        raise ValidationError("an SMTP URL such as smtp://mail.example.org:587 or smtps://mail.example.org:465")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValidationError("the port is not a number from 1 to 65535") from None
    if smtp_parts(value)["tls"] == "none" and not _loopback(parts.hostname):
        raise ValidationError("starttls=no only for a mail server on this host (127.0.0.1, ::1, localhost): "
                              "over a network the password and the alerts would travel in clear")


def _secret_ok(value: str) -> None:
    try:
        webhook_key(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def _addresses(**kwargs: Any) -> fields.Field:
    return fields.List(fields.Email(), **kwargs)


def _url(**kwargs: Any) -> fields.Field:
    return url_field(allow_none=True, **kwargs)


@dataclass(frozen=True)
class AlertsSettings:
    """[alerts]: relay-wide; nothing is sent unless email_to, slack_webhook_url or webhook_url is set."""

    email_to: tuple[str, ...] = setting((), "addresses that get alert emails (needs smtp_url)", field=_addresses,
                                        validate=validate.Length(max=20))
    email_from: str = setting("formrelay@localhost", "the From address of alert emails", field=fields.Email)
    smtp_url: str | None = setting(None, "smtp://host:587 (STARTTLS, required), smtps://host:465 (TLS), or "
                                         "smtp://127.0.0.1:25?starttls=no for a mail server on this host",
                                   validate=_smtp_ok)
    smtp_user: str | None = setting(None, "the SMTP login; ${NAME} takes it from the environment")
    smtp_password: str | None = setting(None, "the SMTP password; ${NAME} takes it from the environment")
    slack_webhook_url: str | None = setting(None, "a Slack incoming-webhook URL (Mattermost, Rocket.Chat and others "
                                                  "take the same JSON); a secret", field=_url)
    webhook_url: str | None = setting(None, "a URL that gets each alert as a Standard Webhooks signed event "
                                            "(alert.firing, alert.resolved)", field=_url)
    webhook_secret: str | None = setting(None, "the whsec_ secret that signs webhook_url's events",
                                         validate=_secret_ok)
    events: tuple[str, ...] = setting(EVENTS, "which events alert (default: all)",
                                      validate=validate.ContainsOnly(EVENTS), allowed="any of " + ", ".join(EVENTS))
    alert_every: float = setting(900.0, "seconds: at most one message per event kind and provider in this time, "
                                        "with the counts since", validate=validate.Range(min=1, max=7 * 86400))
    alert_after_open: float = setting(300.0, "seconds a provider's circuit breaker must stay open (or probing) "
                                             "before it alerts", validate=validate.Range(min=0, max=7 * 86400))
    check_every: float = setting(5.0, "seconds between two looks at the queue and the breakers",
                                 validate=validate.Range(min=0.2, max=3600))
    timeout: float = setting(10.0, "seconds one send (SMTP, chat, webhook) may take in all",
                             validate=validate.Range(min=0.5, max=120))

    @property
    def enabled(self) -> bool:
        return bool((self.email_to and self.smtp_url) or self.slack_webhook_url or self.webhook_url)

    @property
    def secrets(self) -> frozenset[str]:
        """What logs must never show: the chat URL (its path is the token), passwords, the signing secret."""
        found = {s for s in (self.smtp_password, self.slack_webhook_url, self.webhook_secret) if s}
        if self.slack_webhook_url:
            path = urlsplit(self.slack_webhook_url).path
            if len(path) >= 8:
                found.add(path)
        if self.webhook_secret and self.webhook_secret.startswith("whsec_"):
            found.add(self.webhook_secret[len("whsec_"):])
        if self.smtp_url:
            password = urlsplit(self.smtp_url).password
            if password:
                found |= {password, unquote(password)}
        return frozenset(found)


def smtp_parts(url: str) -> dict[str, Any]:
    """host, port, tls ("starttls" | "tls" | "none"), user, password of an smtp_url."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    plain = query.get("starttls", "yes").lower() in ("no", "off", "false")
    tls = "tls" if parts.scheme == "smtps" else "none" if plain else "starttls"
    return {"host": parts.hostname or "", "port": parts.port or (465 if parts.scheme == "smtps" else 587),
            "tls": tls, "user": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None}


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _make(data: dict[str, Any]) -> AlertsSettings:
    if data.get("email_to") and not data.get("smtp_url"):
        raise ValidationError("email_to needs smtp_url", "smtp_url")
    if bool(data.get("webhook_url")) != bool(data.get("webhook_secret")):
        raise ValidationError("webhook_url and webhook_secret go together", "webhook_secret")
    return AlertsSettings(**data)


AlertsSchema = schema_for(AlertsSettings, make=_make)

config.register_section("alerts", AlertsSchema)  # the config reads [alerts] with it (core never imports up)

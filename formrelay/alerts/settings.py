"""[alerts] settings: where the relay's own alerts go (email, Slack-style chat, a signed webhook) and which events.

The dataclass is the one place each key's default and meaning is written; the marshmallow schema that reads the
TOML is derived from it (field types, defaults, each field's metadata["description"]), and registers itself
with the config the way [queue] does.
"""
from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates_schema

from formrelay.core import config

# The event kinds, in the words the messages and docs/alerts.md use.
DEAD_LETTERS = "dead_letters"
BREAKER_OPEN = "breaker_open"
WAITING = "queue_waiting"
NEAR_CAP = "queue_near_cap"
STORAGE = "queue_storage"
CREDENTIALS = "credentials_refused"
EVENTS = (DEAD_LETTERS, BREAKER_OPEN, WAITING, NEAR_CAP, STORAGE, CREDENTIALS)
SMTP_SCHEMES = ("smtp", "smtps")


def _about(text: str) -> dict[str, Any]:
    return {"description": text}


@dataclass(frozen=True)
class AlertsSettings:
    """[alerts]: relay-wide; nothing is sent unless email_to, slack_webhook_url or webhook_url is set."""

    email_to: tuple[str, ...] = field(default=(), metadata=_about(
        "Addresses that get alert emails (needs smtp_url)."))
    email_from: str = field(default="formrelay@localhost", metadata=_about(
        "The From address of alert emails."))
    smtp_url: str | None = field(default=None, metadata=_about(
        "smtp://host:587 (STARTTLS, required), smtps://host:465 (TLS), or smtp://127.0.0.1:25?starttls=no for a "
        "mail server on this host."))
    smtp_user: str | None = field(default=None, metadata=_about(
        "SMTP login; use ${NAME} to take it from the environment."))
    smtp_password: str | None = field(default=None, metadata=_about(
        "SMTP password; use ${NAME} to take it from the environment (never written to the config)."))
    slack_webhook_url: str | None = field(default=None, metadata=_about(
        "A Slack incoming-webhook URL (Mattermost, Rocket.Chat and others take the same JSON); a secret."))
    webhook_url: str | None = field(default=None, metadata=_about(
        "A URL that gets each alert as a Standard Webhooks signed JSON event (type alert.firing / alert.resolved)."))
    webhook_secret: str | None = field(default=None, metadata=_about(
        "The whsec_ secret that signs webhook_url's events."))
    events: tuple[str, ...] = field(default=EVENTS, metadata=_about(
        "Which events alert: " + ", ".join(EVENTS) + " (default: all)."))
    alert_every: float = field(default=900.0, metadata=_about(
        "Seconds: at most one message per event kind and provider in this time, with the counts since."))
    alert_after_open: float = field(default=300.0, metadata=_about(
        "Seconds a provider's circuit breaker must stay open (or probing) before it alerts."))
    check_every: float = field(default=5.0, metadata=_about(
        "Seconds between two looks at the queue and the breakers."))
    timeout: float = field(default=10.0, metadata=_about(
        "Seconds one send (SMTP, chat, webhook) may take in all."))

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
        config.webhook_key(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


_VALIDATE: dict[str, Any] = {
    "email_to": validate.Length(max=20),
    "smtp_url": _smtp_ok,
    "webhook_secret": _secret_ok,
    "events": validate.ContainsOnly(EVENTS),
    "alert_every": validate.Range(min=1, max=7 * 86400),
    "alert_after_open": validate.Range(min=0, max=7 * 86400),
    "check_every": validate.Range(min=0.2, max=3600),
    "timeout": validate.Range(min=0.5, max=120),
}


def _field(item: dataclasses.Field[Any]) -> fields.Field:
    """A marshmallow field for one dataclass field: its type, its default, its description, its check."""
    default = item.default
    kwargs: dict[str, Any] = {"metadata": dict(item.metadata), "validate": _VALIDATE.get(item.name)}
    if isinstance(default, tuple):
        kwargs["load_default"] = list(default)
        inner = fields.Email() if item.name == "email_to" else fields.String()
        return fields.List(inner, **kwargs)
    kwargs["load_default"] = default
    if item.name in ("slack_webhook_url", "webhook_url"):
        return fields.Url(schemes={"http", "https"}, require_tld=False, allow_none=True, **kwargs)
    if item.name == "email_from":
        return fields.Email(**kwargs)
    if isinstance(default, float):
        return fields.Float(**kwargs)
    return fields.String(allow_none=True, **kwargs)


class _Checks(Schema):
    class Meta:
        unknown = RAISE

    @validates_schema
    def _complete(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("email_to") and not data.get("smtp_url"):
            raise ValidationError("email_to needs smtp_url", "smtp_url")
        if bool(data.get("webhook_url")) != bool(data.get("webhook_secret")):
            raise ValidationError("webhook_url and webhook_secret go together", "webhook_secret")

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> AlertsSettings:
        return AlertsSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


# [alerts], derived from AlertsSettings: one field per dataclass field.
AlertsSchema = _Checks.from_dict({item.name: _field(item) for item in dataclasses.fields(AlertsSettings)},
                                 name="AlertsSchema")


config.register_section("alerts", AlertsSchema)  # the config reads [alerts] with it (core never imports up)

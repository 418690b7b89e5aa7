"""Where an alert goes: an email over SMTP (STARTTLS or TLS), a Slack-style chat webhook, a signed webhook.

Each sender takes one finished Message (subject and text, no supporter's data) and sends it once, within
[alerts] timeout; retrying is the dispatcher's business (formrelay.alerts.monitor). The chat and webhook posts go
through `requests.Session.send` like every other outbound call, follow no redirect, and read at most
ANSWER_LIMIT bytes of the receiver's answer (only the status matters). Errors name the kind of failure and the
status, never a URL (a chat URL is its own token) or a password.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import smtplib
import ssl
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Protocol

import requests
from standardwebhooks import Webhook

from formrelay.alerts.settings import AlertsSettings, smtp_parts
from formrelay.core.version import __version__

ANSWER_LIMIT = 4096
USER_AGENT = f"formrelay-alerts/{__version__}"


@dataclass(frozen=True)
class Message:
    """One alert as sent: kind and provider (for dedup and the webhook's data), subject, text, counts."""

    kind: str
    provider: str
    state: str  # "firing" | "resolved"
    subject: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


class SendFailed(Exception):
    """A send did not go through; the message says how, in words safe for a log."""


class Sender(Protocol):
    name: str

    def send(self, message: Message) -> None: ...


class EmailSender:
    name = "email"

    def __init__(self, settings: AlertsSettings) -> None:
        self.settings = settings
        self.smtp = smtp_parts(settings.smtp_url or "")

    def send(self, message: Message) -> None:
        s, parts = self.settings, self.smtp
        mail = EmailMessage()
        mail["Subject"] = message.subject
        mail["From"] = s.email_from
        mail["To"] = ", ".join(s.email_to)
        mail["Date"] = format_datetime(dt.datetime.fromtimestamp(message.at, dt.UTC))
        mail["Message-ID"] = make_msgid(domain=s.email_from.rpartition("@")[2] or None)
        mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to the relay
        mail.set_content(message.text)
        user = s.smtp_user or parts["user"]
        password = s.smtp_password or parts["password"]
        context = ssl.create_default_context()  # the server's certificate is checked, like a browser would
        try:
            if parts["tls"] == "tls":
                client: smtplib.SMTP = smtplib.SMTP_SSL(parts["host"], parts["port"], timeout=s.timeout,
                                                        context=context)
            else:
                client = smtplib.SMTP(parts["host"], parts["port"], timeout=s.timeout)
            with client:
                client.ehlo()
                if parts["tls"] == "starttls":
                    client.starttls(context=context)  # refuses to go on in clear if the server cannot
                    client.ehlo()
                if user and password:
                    client.login(user, password)
                client.send_message(mail)
        except smtplib.SMTPResponseException as exc:
            raise SendFailed(f"SMTP server answered {exc.smtp_code}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise SendFailed(f"SMTP: {exc.__class__.__name__}") from None


class _HTTPSender:
    name = "http"

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # no proxy from the environment sees the chat token

    def post(self, body: bytes, headers: dict[str, str]) -> None:
        request = requests.Request("POST", self.url, data=body, headers={
            "Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}).prepare()
        started = time.monotonic()
        try:
            answer = self.session.send(request, timeout=(min(5.0, self.timeout), self.timeout), allow_redirects=False,
                                       stream=True)
        except requests.RequestException as exc:
            raise SendFailed(f"{self.name}: {exc.__class__.__name__}") from None
        try:
            read = 0
            for chunk in answer.iter_content(1024):  # the answer itself is not needed: bounded, then dropped
                read += len(chunk)
                if read >= ANSWER_LIMIT or time.monotonic() - started > self.timeout:
                    break
        except requests.RequestException:
            pass
        finally:
            answer.close()
        if not 200 <= answer.status_code < 300:
            raise SendFailed(f"{self.name}: HTTP {answer.status_code}")


class ChatSender(_HTTPSender):
    """Slack's incoming-webhook JSON ({"text": ...}), which Mattermost, Rocket.Chat, Discord's /slack and
    Microsoft's Slack-compatible connectors accept too."""

    name = "chat"

    def send(self, message: Message) -> None:
        text = f"*{message.subject}*\n{message.text}"
        self.post(json.dumps({"text": text}, ensure_ascii=False).encode("utf-8"), {})


class WebhookSender(_HTTPSender):
    """A Standard Webhooks event, signed like the per-form webhooks (formrelay/webhooks.py)."""

    name = "webhook"

    def __init__(self, url: str, secret: str, timeout: float) -> None:
        super().__init__(url, timeout)
        self.signer = Webhook(secret)

    def send(self, message: Message) -> None:
        body = json.dumps({
            "type": f"alert.{message.state}",
            "timestamp": dt.datetime.fromtimestamp(message.at, dt.UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "data": {"kind": message.kind, "provider": message.provider or None, "subject": message.subject,
                     "text": message.text, **message.data},
        }, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")
        msg_id = "msg_" + hashlib.sha256(f"{message.kind}:{message.provider}:{message.state}:{message.at}"
                                         .encode()).hexdigest()[:32]
        stamp = dt.datetime.fromtimestamp(int(message.at), dt.UTC)
        signature = self.signer.sign(msg_id, stamp, body.decode("utf-8"))
        self.post(body, {"webhook-id": msg_id, "webhook-timestamp": str(int(message.at)),
                         "webhook-signature": signature})


def senders(settings: AlertsSettings) -> list[Sender]:
    out: list[Sender] = []
    if settings.email_to and settings.smtp_url:
        out.append(EmailSender(settings))
    if settings.slack_webhook_url:
        out.append(ChatSender(settings.slack_webhook_url, settings.timeout))
    if settings.webhook_url and settings.webhook_secret:
        out.append(WebhookSender(settings.webhook_url, settings.webhook_secret, settings.timeout))
    return out

"""[[forms.x.webhooks]]: where a form's signed events go, which ones, and the `whsec_` secret's format.

The settings of formrelay/webhooks.py (which sends the events), kept on the bottom floor so the config can read
them. May import: core.settings only (core.config imports this module).
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from marshmallow import ValidationError, fields, validate

from formrelay.core.settings import rate_limit_ok, schema_for, setting, url_field

WEBHOOK_EVENTS = ("delivered", "queued", "dead")
WEBHOOK_SECRET_PREFIX = "whsec_"
WEBHOOK_NAME = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def webhook_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_` secret; ValueError (never naming the secret) when it is not one."""
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError("must start with whsec_ (a Standard Webhooks secret)")
    encoded = secret[len(WEBHOOK_SECRET_PREFIX):]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("whsec_ must be followed by base64") from None
    # The specification asks for 24 to 64 random bytes; fewer would be a weak key.
    if not 24 <= len(key) <= 64:
        raise ValueError(f"the key after whsec_ must be 24 to 64 bytes (it is {len(key)})")
    return key


def _secret_ok(value: str) -> None:
    try:
        webhook_key(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


@dataclass(frozen=True)
class WebhookConfig:
    """One [[forms.x.webhooks]] entry: where to send which events, signed with which secret."""

    url: str = setting(meaning="the receiver's URL (it may hold a token: it is masked like a secret and never shown)",
                       field=url_field, repr=False)
    secret: str = setting(meaning='the Standard Webhooks signing secret: "whsec_" + base64 of 24 to 64 random bytes',
                          validate=_secret_ok, allowed="whsec_ + base64 of 24 to 64 bytes", repr=False)
    events: tuple[str, ...] = setting(
        WEBHOOK_EVENTS, "the events sent: delivered (the CRM has it), queued (kept for later), dead (given up)",
        field=lambda **kw: fields.List(fields.String(validate=validate.OneOf(WEBHOOK_EVENTS)), **kw),
        validate=validate.Length(min=1), convert=lambda events: tuple(dict.fromkeys(events)))
    include_personal_data: bool = setting(True, "whether the event carries the submitted fields and page context "
                                                "(false: form, submission id, outcome and campaign codes only)")
    # In the queue, logs and metrics (the URL may hold a token, so it is never shown); the loader fills it in.
    name: str | None = setting(None, "the receiver's name in the queue, logs and metrics (default: the URL's host, "
                            "then host-2, ...)",
                        validate=validate.Regexp(WEBHOOK_NAME, error="letters, digits, '.', ':', '_' and '-' "
                                                                     "(at most 64)"))
    rate: str = setting("10/second", "the most events sent to this receiver (per form) per second, minute, ...; "
                                     '"" for no limit', validate=rate_limit_ok)

    @property
    def host(self) -> str:
        """host[:port] of the URL: what `formrelay check` and the default name show."""
        parts = urlsplit(self.url)
        return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else "?"


WebhookSchema = schema_for(WebhookConfig)


def request_target(url: str) -> str:
    """The URL's path and query: what an HTTP library's debug line shows without the host."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def named(hooks: list[WebhookConfig]) -> tuple[WebhookConfig, ...]:
    """Give each receiver without a name its host's, -2, -3 ... for a second one on a host; ValueError(index, name)
    when a given name is used twice."""
    out: list[WebhookConfig] = []
    for i, hook in enumerate(hooks):
        name = hook.name
        if name is None:
            # Two receivers on one host: the second is host-2, and so on (name them to keep them apart for good).
            taken = {h.name for h in out}
            base = name = hook.host
            n = 1
            while name in taken:
                n += 1
                name = f"{base}-{n}"
        elif any(h.name == name for h in out):
            raise ValueError(i, name)
        out.append(WebhookConfig(name=name, url=hook.url, secret=hook.secret, events=hook.events,
                                 include_personal_data=hook.include_personal_data, rate=hook.rate))
    return tuple(out)

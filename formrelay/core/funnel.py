"""Settings of what surrounds a submission: which campaign touch a form credits, and its thank-you ladder.

`[forms.<slug>] attribution` and `[forms.<slug>.thanks]`, kept apart from core/config.py so that the form's
table only names them. The relay-side logic lives above: forms/attribution.py (touches) and web/thanks.py
(the ladder's links). May import: core.i18n only.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate

from formrelay.core import i18n

# Which touch reaches the CRM's own source fields: the first one the browser remembers, or the latest.
ATTRIBUTION = ("first", "last")
DEFAULT_ATTRIBUTION = "last"
# Share channels, in the order a ladder shows them.
CHANNELS = ("facebook", "x", "whatsapp", "email", "copy")
EVERY_LANGUAGE = "*"
_TAG = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
_PARAM = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


@dataclass(frozen=True)
class ThanksSettings:
    """[forms.x.thanks]: the ladder shown after a success. Texts are {language tag or "*": text}."""

    message: Mapping[str, str] = field(default_factory=dict)
    share_url: str | None = None  # None: the page the form was on, without its query
    channels: tuple[str, ...] = ()
    source_param: str = "source"
    donate_url: str | None = None
    donate_label: Mapping[str, str] = field(default_factory=dict)

    def text(self, table: Mapping[str, str], language: str, tag: str | None = None) -> str | None:
        """A text in the answer's language: the exact tag (fr-ca), the language (fr), else the one for all."""
        for key in ((tag or "").lower(), language, EVERY_LANGUAGE):
            if key and key in table:
                return table[key]
        return None


def _texts(value: Any) -> dict[str, str]:
    """A string (every language) or a table of language tag = text (shipped languages only)."""
    if isinstance(value, str):
        return {EVERY_LANGUAGE: value}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValidationError("a text, or a table of language = text")
    out: dict[str, str] = {}
    for tag, text in value.items():
        if not _TAG.match(tag) or i18n.language_of(tag) is None:
            raise ValidationError(f"{tag!r}: not a shipped language ({', '.join(i18n.available())})")
        out[tag.lower().replace("_", "-")] = text
    return out


class _Texts(fields.Field):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, str]:
        return _texts(value)


_DEFAULT = ThanksSettings()  # each default is written once, in the dataclass


def _url() -> fields.Url:
    return fields.Url(schemes={"http", "https"}, require_tld=False, load_default=None)


class ThanksSchema(Schema):
    class Meta:
        unknown = RAISE

    message = _Texts(load_default=dict)
    share_url = _url()
    channels = fields.List(fields.String(validate=validate.OneOf(CHANNELS)), load_default=list)
    source_param = fields.String(load_default=_DEFAULT.source_param, validate=validate.Regexp(
        _PARAM, error="a query parameter name: letters, digits, '_', '.', '-' (at most 40)"))
    donate_url = _url()
    donate_label = _Texts(load_default=dict)

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> ThanksSettings:
        # Shown in the CHANNELS order whatever order the config lists them in, each once.
        data["channels"] = tuple(c for c in CHANNELS if c in data["channels"])
        return ThanksSettings(**data)

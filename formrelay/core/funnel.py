"""Settings of what surrounds a submission: which campaign touch a form credits, and its thank-you ladder.

`[forms.<slug>] attribution` and `[forms.<slug>.thanks]`, kept apart from core/config.py so that the form's
table only names them. The relay-side logic lives above: forms/attribution.py (touches) and web/thanks.py
(the ladder's links). May import: core.i18n and core.settings.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError, fields, validate

from formrelay.core import i18n
from formrelay.core.settings import schema_for, setting, url_field

# Which touch reaches the CRM's own source fields: the first one the browser remembers, or the latest.
ATTRIBUTION = ("first", "last")
DEFAULT_ATTRIBUTION = "last"
# Share channels, in the order a ladder shows them.
CHANNELS = ("facebook", "x", "whatsapp", "email", "copy")
EVERY_LANGUAGE = "*"
_TAG = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
_PARAM = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


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


def _channels(given: tuple[str, ...]) -> tuple[str, ...]:
    # Shown in the CHANNELS order whatever order the config lists them in, each once.
    return tuple(c for c in CHANNELS if c in given)


_LANGUAGES = 'a text, or a table of shipped language tag (or "*") = text'


@dataclass(frozen=True)
class ThanksSettings:
    """[forms.x.thanks]: the ladder shown after a success. Texts are {language tag or "*": text}."""

    message: Mapping[str, str] = setting(meaning="the thank-you text (per language: a table of tag = text)",
                                         default_factory=dict, field=_Texts, allowed=_LANGUAGES)
    share_url: str | None = setting(None, "the page the share links point to (default: the page the form was on, "
                                          "without its query)", field=url_field)
    channels: tuple[str, ...] = setting(
        (), "the share links offered, shown in the order facebook, x, whatsapp, email, copy",
        field=lambda **kw: fields.List(fields.String(validate=validate.OneOf(CHANNELS)), **kw), convert=_channels)
    source_param: str = setting("source", "the query parameter each share link carries: <share_url>?<source_param>=share-<channel>",
                                validate=validate.Regexp(_PARAM, error="a query parameter name: letters, digits, "
                                                                       "'_', '.', '-' (at most 40)"))
    donate_url: str | None = setting(None, "a donation page the ladder links to", field=url_field)
    donate_label: Mapping[str, str] = setting(meaning="the donation link's text (per language: a table)",
                                              default_factory=dict, field=_Texts, allowed=_LANGUAGES)

    def text(self, table: Mapping[str, str], language: str, tag: str | None = None) -> str | None:
        """A text in the answer's language: the exact tag (fr-ca), the language (fr), else the one for all."""
        for key in ((tag or "").lower(), language, EVERY_LANGUAGE):
            if key and key in table:
                return table[key]
        return None


ThanksSchema = schema_for(ThanksSettings)

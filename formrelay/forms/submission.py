"""A submission: its values, relay controls and page context split apart, and the card-data guard (web/body.py reads the body)."""
from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from formrelay.core.errors import BadRequest, Invalid
from formrelay.forms import attribution
from formrelay.forms.cards import contains_card_number
from formrelay.core.i18n import Msg
from formrelay.core.i18n import gettext as _

CONTROL_PREFIX = "_"
# Values the snippet copies from the page URL; providers may pass them on (ENS txn1-5, AN referrer_data).
CONTEXT_KEYS = (
    "utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term", "source", "referrer",
)
CONTEXT_MAX_LENGTH = 500
# `_page_url`: the address of the page the form was on (the snippet sends location.href), kept as context
# "page_url" so a provider can read attribution parameters from it (NGP hidden elements with a queryString).
PAGE_URL = "page_url"
PAGE_URL_MAX_LENGTH = 2000
Value = str | bool | list[str | bool]


@dataclass(frozen=True)
class Submission:
    """A validated submission, ready for a provider: only the form's own fields, never a control."""

    form: str
    values: Mapping[str, Any]
    context: Mapping[str, str] = field(default_factory=dict)
    idempotency_key: str | None = None
    # The supporter's language tag as negotiated (e.g. fr-CA), for CRMs that take one (ENS `locale`).
    locale: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    received_at: float = field(default_factory=time.time)
    # What an OSDI body asked for and the form's [forms.x.osdi] allows: add_tags, remove_tags, autoresponse.
    page_options: Mapping[str, Any] = field(default_factory=dict)


class OSDIBody(dict[str, Value]):
    """A JSON body with a `person` object (an OSDI helper body, as the OSDI jQuery plugin posts).

    As a mapping it holds the body's top-level scalars (relay controls such as `_hp`, page context, a CAPTCHA
    token), so the relay screens it like any body; `doc` keeps the whole document, which the form reads
    against its person mapping (forms/osdi.py) before validating it exactly like a flat body.
    """

    def __init__(self, doc: Mapping[str, Any]) -> None:
        super().__init__({k: scalar(v) for k, v in doc.items() if isinstance(v, str | int | float)})  # type: ignore[misc]
        self.doc = doc

    @property
    def size(self) -> int:
        """What counts against max_fields: top-level scalars, custom fields and the items of every list."""
        person = self.doc["person"]
        custom = person.get("custom_fields")
        lists = [v for v in (*person.values(), *self.doc.values()) if isinstance(v, list)]
        return len(self) + (len(custom) if isinstance(custom, dict) else 0) + sum(len(v) for v in lists)


def scalar(value: Any) -> str | bool | None:
    """One JSON value as a form value (numbers as their JSON text); 400 for a nested object."""
    if value is None:
        return None
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return json.dumps(value)
    raise BadRequest(_("A JSON body must be one flat object: nested objects are not accepted."))


def split_controls(body: Mapping[str, Value], field_names: set[str], credit: str = "last",
                   page_params: Collection[str] = ()) -> tuple[dict[str, Value], dict[str, str], dict[str, str]]:
    """(values, controls, context): `_` names are controls, URL context is set apart unless the form has such a field.

    `_page_url` keeps only the attribution parameters and `page_params` (those the provider reads): the rest of
    its query can carry an email address or a session token, and the context is stored with queued jobs.

    The snippet's remembered touches (`_first_touch`, `_last_touch`) join the context, and the one the form
    credits (`credit`: its `attribution`) takes the place of the page's own URL context (forms/attribution.py).
    """
    values: dict[str, Value] = {}
    controls: dict[str, str] = {}
    context: dict[str, str] = {}
    for key, value in body.items():
        if key.startswith(CONTROL_PREFIX):
            bare = key[len(CONTROL_PREFIX):]
            if bare in CONTEXT_KEYS and key not in field_names:
                _put_context(context, bare, value)
            elif bare == PAGE_URL:
                page = _first_text(value).strip()
                if page.startswith(("https://", "http://")) and len(page) <= PAGE_URL_MAX_LENGTH:
                    context[PAGE_URL] = attribution.trim_page_url(page, page_params)
            elif bare in (attribution.FIRST, attribution.LAST):
                touch = attribution.clean(_first_text(value))
                if touch:
                    context[bare] = touch
            else:
                controls[bare] = _first_text(value)
        elif key in CONTEXT_KEYS and key not in field_names:
            _put_context(context, key, value)
        else:
            values[key] = value
    return values, controls, attribution.settle(context, credit, CONTEXT_KEYS)


def _first_text(value: Value) -> str:
    if isinstance(value, list):
        value = value[0] if value else ""
    return "" if isinstance(value, bool) else str(value)


def _put_context(context: dict[str, str], key: str, value: Value) -> None:
    text = _first_text(value).strip()[:CONTEXT_MAX_LENGTH]
    if text:
        context[key] = text


# Payment card data must never be relayed, stored, queued or logged (PCI DSS scope).
CARD_FIELD = re.compile(
    r"(^|[^a-z])(cc|card|credit ?card|pan)[ _-]?(num(ber)?|no|cvv2?|cvc2?|csc|exp(iry|iration)?)|"
    r"(^|[^a-z])(cvv2?|cvc2?|ccv|ccvv|ccnumber|cardnumber|creditcardnumber|securitycode)($|[^a-z])",
    re.IGNORECASE,
)
CARD_MESSAGE = Msg(
    "Card details cannot be sent through this form. Please use the secure payment page instead."
)
FORM_ERRORS = "_form"


def _texts(value: Value) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [v for v in items if isinstance(v, str) and v.strip()]


def reject_card_data(values: Mapping[str, Value], phone_fields: set[str]) -> None:
    """422 when a submission carries card data, before anything could store, queue or log it.

    Every value of every field (declared or not) is scanned for card numbers however they are written
    (forms/cards.py); a field whose name says "card number" or "CVV" is refused whatever it holds.
    """
    errors: dict[str, list[str]] = {}
    for key, value in values.items():
        texts = _texts(value)
        if contains_card_number(key):
            errors[FORM_ERRORS] = [_(CARD_MESSAGE)]  # never echo or log a name that holds a card number
            continue
        if not texts:
            continue
        by_name = CARD_FIELD.search(key.replace("[", " ").replace("]", " "))
        if by_name or any(contains_card_number(t, phone=key in phone_fields) for t in texts):
            errors[key] = [_(CARD_MESSAGE)]
    if errors:
        raise Invalid(_("Card details cannot be sent through this form."), errors=errors)


def without_card_numbers(entries: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """(entries, dropped keys): page context and controls holding a card number are dropped, not refused.

    The person did not type them (they come from the page's URL or the snippet), so a 422 would leave them
    stuck; dropping them keeps the card number out of the CRM, the queue and the logs all the same.
    """
    kept: dict[str, str] = {}
    dropped: list[str] = []
    for key, text in entries.items():
        if contains_card_number(key) or contains_card_number(text):
            dropped.append("(a name holding a card number)" if contains_card_number(key) else key)
        else:
            kept[key] = text
    return kept, dropped

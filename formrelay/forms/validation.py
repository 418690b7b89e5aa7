"""Validation: a parsed body and what a form says about its fields in, a Submission or Invalid (422) out.

A pure function: no I/O, no clock, no logging, no counters. What it needs of the form is gathered by the
caller into FormRules (the relay's Form does, from its cached definition and its config), and how much it
dropped for holding a card number comes back as counts, for the caller to count and log.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from marshmallow import ValidationError, fields

from formrelay.core.errors import Invalid
from formrelay.core.i18n import Msg
from formrelay.core.i18n import gettext as _
from formrelay.forms.cards import contains_card_number
from formrelay.forms.fields import WIDGET, Definition, FormSchema, flatten_errors
from formrelay.forms.osdi import read_osdi
from formrelay.forms.person import PersonMapping
from formrelay.forms.submission import (
    OSDIBody,
    Submission,
    Value,
    reject_card_data,
    split_controls,
    without_card_numbers,
)

ONE_VALUE = Msg("Only one value is accepted.")
IDEMPOTENCY_HEADER = "Idempotency-Key"


@dataclass(frozen=True)
class FormRules:
    """What validating a body needs to know of one form."""

    slug: str
    schema: FormSchema
    definition: Definition
    aliases: Mapping[str, str]  # another name a page may use -> the field's own name
    attribution: str  # which remembered touch the context credits ([forms.x] attribution)
    person: PersonMapping  # for OSDI bodies: which field holds which part of the person
    osdi: Any  # [forms.x.osdi]: what an OSDI body may decide (OSDISettings)
    labels: Callable[[], Mapping[str, str]]  # each field's label in the answer's language (asked only when needed)
    # The `_page_url` query parameters the provider reads (forms/attribution.py page_refs): the rest is trimmed.
    page_params: Collection[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Validated:
    """A valid submission, and how many page values and controls were dropped for holding a card number (counts,
    not names: a control's name is the client's, and may hold the card number itself)."""

    submission: Submission
    dropped_context: int = 0
    dropped_controls: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_context + self.dropped_controls


def validate(rules: FormRules, body: Mapping[str, Value], idempotency_key: str | None = None,
             locale: str | None = None) -> Validated:
    """Body -> Validated, or Invalid (422) with messages keyed by field name (an OSDI body's name its path)."""
    if isinstance(body, OSDIBody):
        read = read_osdi(body, rules.person, rules.osdi)
        try:
            checked = validate(rules, read.values, idempotency_key, locale)
        except Invalid as exc:
            raise Invalid(exc.message, errors=read.annotate(exc.errors or {})) from None
        return replace(checked, submission=replace(checked.submission, page_options=read.page_options))
    schema = rules.schema
    declared = schema.fields
    values, controls, context = split_controls(body, set(declared), rules.attribution, rules.page_params)
    for alias, name in rules.aliases.items():
        if alias in values and alias not in declared:
            aliased = values.pop(alias)
            values.setdefault(name, aliased)
    phone_fields = {n for n, f in declared.items() if f.metadata.get(WIDGET) == "tel"}
    reject_card_data(values, phone_fields)
    context, dropped = without_card_numbers(context)
    # The time-trap token is ours (signed, never stored); every other control is scanned.
    controls, dropped_controls = without_card_numbers({k: v for k, v in controls.items() if k != "started"})
    if idempotency_key and contains_card_number(idempotency_key):
        idempotency_key, dropped_controls = None, [*dropped_controls, IDEMPOTENCY_HEADER]
    cleaned, errors = normalise(values, declared)
    try:
        data = schema.load(cleaned)
    except ValidationError as err:
        messages = flatten_errors(err.messages if isinstance(err.messages, dict) else {"_form": err.messages})
        errors.update({k: v for k, v in messages.items() if k not in errors})
        data = None
    if rules.definition.one_of:  # the labels (translated per request) only name the fields of a group
        errors.update(missing_one_of(rules.definition, data if data is not None else cleaned, rules.labels()))
    if errors:
        raise Invalid(_("Some fields need attention."), errors=errors)
    key = idempotency_key or controls.get("idempotency_key") or None
    # The answer's language tag goes with the submission, so a CRM that takes one hears it even from the queue.
    submission = Submission(form=rules.slug, values=data or {}, context=context, idempotency_key=key, locale=locale)
    return Validated(submission, len(dropped), len(dropped_controls))


def missing_one_of(definition: Definition, data: Mapping[str, Any],
                   labels: Mapping[str, str]) -> dict[str, list[str]]:
    """For each group of which at least one field is wanted and none was given: a message on each of its fields."""
    errors: dict[str, list[str]] = {}
    for group in definition.one_of:
        if not any(data.get(name) not in (None, "", []) for name in group):
            message = Msg("Enter at least one of: {fields}.").format(fields=", ".join(labels.get(n, n) for n in group))
            for name in group:
                errors[name] = [message]
    return errors


def normalise(values: Mapping[str, Value],
              declared: Mapping[str, fields.Field]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Trim text, treat blank as absent, and give list fields lists and single fields one value."""
    out: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name, value in values.items():
        field = declared.get(name)
        if field is None:
            continue  # unknown fields are dropped, never forwarded
        items = value if isinstance(value, list) else [value]
        items = [v.strip() if isinstance(v, str) else v for v in items]
        items = [v for v in items if v != ""]
        if isinstance(field, fields.List):
            if items:
                out[name] = items
        elif len(items) == 1:
            out[name] = items[0]
        elif len(items) > 1:
            errors[name] = [_(ONE_VALUE)]
    return out, errors

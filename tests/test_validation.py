"""forms/validation.py: a pure function from a body and a form's rules to a Submission or a 422's messages."""
from __future__ import annotations

import pytest

from formrelay.core.errors import Invalid
from formrelay.forms.fields import Definition, FieldSpec, build_schema
from formrelay.forms.person import PersonMapping
from formrelay.forms.submission import OSDIBody
from formrelay.forms.validation import FormRules, validate

CARD = "4111 1111 1111 1111"


def rules(*specs: FieldSpec, one_of: tuple[tuple[str, ...], ...] = (), aliases: dict[str, str] | None = None,
          labels: dict[str, str] | None = None) -> FormRules:
    definition = Definition(title="t", fields=specs, one_of=one_of)
    asked: list[int] = []

    def label_table() -> dict[str, str]:
        asked.append(1)
        return labels or {}

    made = FormRules(slug="join", schema=build_schema("join", specs)(), definition=definition,
                     aliases={**definition.aliases(), **(aliases or {})}, attribution="last",
                     person=PersonMapping(), osdi=None, labels=label_table)
    object.__setattr__(made, "asked", asked)  # how often the labels were asked for (frozen dataclass)
    return made


EMAIL = FieldSpec("email", "Email", type="email", required=True)
NAME = FieldSpec("name", "Name", aliases=("full_name",))


def test_a_valid_body_gives_its_values_trimmed_with_the_locale_and_key():
    checked = validate(rules(EMAIL, NAME), {"email": "  ann@example.org ", "name": "Ann", "stray": "x"},
                       idempotency_key="k-1", locale="fr-CA")
    submission = checked.submission
    assert submission.form == "join" and submission.values == {"email": "ann@example.org", "name": "Ann"}
    assert submission.idempotency_key == "k-1" and submission.locale == "fr-CA" and checked.dropped == 0


def test_an_alias_fills_its_field_and_the_form_alias_table_counts_too():
    checked = validate(rules(EMAIL, NAME, aliases={"mail": "email"}), {"mail": "ann@example.org", "full_name": "Ann"})
    assert checked.submission.values == {"email": "ann@example.org", "name": "Ann"}


def test_errors_are_keyed_by_field_and_two_values_for_one_field_are_refused():
    with pytest.raises(Invalid) as caught:
        validate(rules(EMAIL, NAME), {"name": ["Ann", "Bea"]})
    assert set(caught.value.errors) == {"email", "name"}
    assert caught.value.errors["name"] == ["Only one value is accepted."]


def test_one_of_names_the_group_by_label_and_asks_for_labels_only_then():
    phone = FieldSpec("phone", "Phone")
    email = FieldSpec("email", "Email")
    with_group = rules(email, phone, one_of=(("email", "phone"),), labels={"email": "E-mail", "phone": "Tel"})
    with pytest.raises(Invalid) as caught:
        validate(with_group, {})
    assert caught.value.errors == {"email": ["Enter at least one of: E-mail, Tel."],
                                   "phone": ["Enter at least one of: E-mail, Tel."]}
    without = rules(EMAIL)
    validate(without, {"email": "ann@example.org"})
    assert without.asked == []  # type: ignore[attr-defined]


def test_card_numbers_in_context_controls_or_the_key_are_dropped_and_named_never_kept():
    checked = validate(rules(EMAIL), {"email": "ann@example.org", "utm_source": CARD, "_note": CARD},
                       idempotency_key=CARD)
    assert (checked.dropped_context, checked.dropped_controls) == (1, 2)  # utm_source; _note and the key
    assert checked.submission.idempotency_key is None
    assert CARD not in repr(checked.submission)


def test_a_card_number_in_a_field_is_a_422():
    with pytest.raises(Invalid):
        validate(rules(EMAIL, NAME), {"email": "ann@example.org", "name": CARD})


def test_the_same_input_gives_the_same_answer_and_nothing_is_changed_in_place():
    body = {"email": " ann@example.org ", "name": ["Ann"]}
    before = {k: (list(v) if isinstance(v, list) else v) for k, v in body.items()}
    first = validate(rules(EMAIL, NAME), body)
    second = validate(rules(EMAIL, NAME), body)
    assert body == before
    assert first.submission.values == second.submission.values


def test_an_osdi_body_names_the_osdi_path_in_its_errors():
    from formrelay.core.config import OSDISettings
    from formrelay.forms.person import match_fields, COMMON_NAMES, BY_TYPE

    definition = Definition(title="t", fields=(EMAIL,))
    osdi_rules = FormRules(slug="join", schema=build_schema("join", (EMAIL,))(), definition=definition, aliases={},
                           attribution="last", person=match_fields(definition, COMMON_NAMES, custom="{key}",
                                                                   by_type=BY_TYPE),
                           osdi=OSDISettings(), labels=dict)
    body = OSDIBody({"person": {"email_addresses": [{"address": "not an email"}]}})
    with pytest.raises(Invalid) as caught:
        validate(osdi_rules, body)
    assert "email_addresses" in " ".join(caught.value.errors["email"])
    ok = validate(osdi_rules, OSDIBody({"person": {"email_addresses": [{"address": "ann@example.org"}]}}))
    assert ok.submission.values == {"email": "ann@example.org"}


def test_the_page_url_keeps_only_what_the_provider_reads_and_the_campaign_parameters():
    from dataclasses import replace

    page = "https://www.example.org/join?pid=spring&email=ann%40example.org&utm_source=news"
    body = {"email": "ann@example.org", "_page_url": page}
    reads_pid = replace(rules(EMAIL), page_params=frozenset({"pid"}))
    kept = validate(reads_pid, body).submission.context["page_url"]
    assert "pid=spring" in kept and "utm_source=news" in kept and "ann" not in kept
    assert "pid=spring" not in validate(rules(EMAIL), body).submission.context["page_url"]

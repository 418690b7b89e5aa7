"""Fuzzing: arbitrary bodies never give a 5xx or a traceback; arbitrary NGP definitions derive or fail cleanly;
and the OpenAPI document holds against Schemathesis with the sandbox NGP as the provider."""
from __future__ import annotations

import json

import pytest
import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from formrelay import create_app
from formrelay.core.errors import DefinitionError
from formrelay.forms.fields import build_schema, describe_schema
from formrelay.providers.ngp import definition_from_ngp
from formrelay.sandbox.ngp import PETITION
from tests.conftest import NGP_FORM_URL, NGP_SUCCESS, base_config

FIELD_NAMES = ["FirstName", "LastName", "EmailAddress", "PostalCode", "Phone", "StateProvince", "SmsOptIn",
               "Comments", "_hp", "_started", "_idempotency_key", "type", "utm_source", "card_number", "x"]
scalars = st.one_of(st.text(max_size=60), st.integers(), st.floats(allow_nan=True), st.booleans(), st.none())
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
CONTENT_TYPES = ["application/json", "application/x-www-form-urlencoded", "multipart/form-data", "text/plain",
                 "application/json; charset=latin-1", "application/vnd.api+json", "", "multipart/form-data; boundary=x"]


@pytest.fixture(scope="module")
def fuzz_client():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(NGP_FORM_URL, json=PETITION)
        rsps.post(NGP_FORM_URL, json=NGP_SUCCESS)
        app = create_app(base_config(max_body_bytes=4096, global_rate_limit=""))
        yield app.test_client()


def no_server_error(answer) -> None:
    text = answer.get_data(as_text=True)
    assert answer.status_code < 500 or answer.status_code in (502, 503), answer.status_code
    assert "Traceback" not in text and 'File "' not in text
    if answer.mimetype == "application/json":
        body = answer.get_json()
        assert isinstance(body, dict) and {"ok", "status"} <= set(body)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=12), json_values, max_size=12))
def test_arbitrary_json_objects(fuzz_client, body):
    no_server_error(fuzz_client.post("/v1/forms/join", data=json.dumps(body), content_type="application/json"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=6000), content_type=st.sampled_from(CONTENT_TYPES), accept=st.sampled_from(
    ["application/json", "text/html", "*/*", ""]))
def test_arbitrary_bytes_and_content_types(fuzz_client, raw, content_type, accept):
    no_server_error(fuzz_client.post("/v1/forms/join", data=raw, content_type=content_type,
                                     headers={"Accept": accept} if accept else {}))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(st.sampled_from(FIELD_NAMES) | st.text(max_size=10), st.text(max_size=40)), max_size=30))
def test_arbitrary_form_posts(fuzz_client, pairs):
    from urllib.parse import urlencode

    no_server_error(fuzz_client.post("/v1/forms/join", data=urlencode(pairs),
                                     content_type="application/x-www-form-urlencoded"))


elements = st.recursive(
    st.fixed_dictionaries({}, optional={
        "type": st.sampled_from(["textfield", "textarea", "select", "checkbox", "checkboxes", "radios", "hidden",
                                 "markup", "submit", "hologram", "", "fieldset"]) | st.text(max_size=6),
        "name": st.text(max_size=12) | st.integers() | st.none(),
        "title": st.text(max_size=12) | st.none(),
        "required": st.booleans() | st.text(max_size=3),
        "maxlength": st.integers(-5, 10_000) | st.text(max_size=4) | st.none(),
        "validation": st.sampled_from(["email", "phone", "postalCode", "luhn"]) | st.none(),
        "options": st.sampled_from(["states", "countries"]) | st.lists(st.text(max_size=5) | st.fixed_dictionaries(
            {"val": st.text(max_size=4), "label": st.text(max_size=4)}), max_size=4) | st.dictionaries(
            st.text(max_size=3), st.text(max_size=3), max_size=3),
        "value": scalars,
        "valueMin": st.integers() | st.none(), "valueMax": st.integers() | st.none(),
        "queryString": st.text(max_size=4) | st.none(),
    }),
    lambda children: st.fixed_dictionaries({"type": st.just("fieldset"), "children": st.lists(children, max_size=4)}),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(doc=st.fixed_dictionaries({"form_elements": st.lists(elements, max_size=8)}, optional={
    "type": st.sampled_from(["PetitionForm", "SignupForm", ""]) | st.integers(), "title": st.text(max_size=8) | st.none()}))
def test_arbitrary_ngp_definitions_derive_a_schema_or_a_definition_error(doc):
    try:
        definition = definition_from_ngp(doc)
    except DefinitionError:
        return
    schema = build_schema("fuzz", definition.fields)()
    described = describe_schema(schema)
    assert [f["name"] for f in described] == [f.name for f in definition.fields]
    schema.validate({})


# -- issue 20: card numbers in free text and context, lone surrogates, multipart encodings --------------------

TEST_CARDS = ["4111111111111111", "5555555555554444", "378282246310005", "6011111111111117"]
SEPARATORS = st.sampled_from([" ", ".", "/", "-", "\u00a0", "\u202f", "\u2011", "\u200b", " / ", ""])


@st.composite
def written_cards(draw):
    """A test card number cut into groups with any separators, inside free text."""
    card = draw(st.sampled_from(TEST_CARDS))
    cuts = sorted(set(draw(st.lists(st.integers(1, len(card) - 1), max_size=4))))
    pieces = [card[a:b] for a, b in zip([0, *cuts], [*cuts, len(card)])]
    written = pieces[0] + "".join(draw(SEPARATORS) + piece for piece in pieces[1:])
    words = st.text(st.characters(blacklist_categories=("Nd", "Cs")), max_size=15)
    return f"{draw(words)} {written} {draw(words)}"


@pytest.fixture(scope="module")
def card_fuzz():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(NGP_FORM_URL, json=PETITION)
        rsps.post(NGP_FORM_URL, json=NGP_SUCCESS)
        yield create_app(base_config(global_rate_limit="")).test_client(), rsps


PERSON = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009"}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=written_cards(), where=st.sampled_from(["Comments", "FirstName", "AddressLine1", "unknown_field"]),
       body_type=st.sampled_from(["json", "form", "multipart"]))
def test_card_numbers_in_free_text_are_refused_and_never_forwarded(card_fuzz, text, where, body_type):
    client, rsps = card_fuzz
    client.get("/v1/forms/join")  # the definition is fetched: from here on only a delivery would call NGP
    before = len(rsps.calls)
    body = {**PERSON, where: text}
    if body_type == "json":
        answer = client.post("/v1/forms/join", json=body)
    else:
        answer = client.post("/v1/forms/join", data=body, headers={"Accept": "application/json"},
                             content_type="multipart/form-data" if body_type == "multipart" else None)
    assert answer.status_code == 422 and where in answer.get_json()["errors"]
    assert len(rsps.calls) == before


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=written_cards(), key=st.sampled_from(["utm_source", "utm_medium", "utm_campaign", "utm_term", "_referrer",
                                                  "_source", "_idempotency_key"]), header=st.booleans())
def test_card_numbers_in_context_and_controls_are_dropped_before_anything_keeps_them(card_fuzz, text, key, header):
    """What a provider forwards (ENS txn1-5, AN referrer_data) and the queue stores is the Submission: no card in it."""
    client, _ = card_fuzz
    form = client.application.extensions["formrelay"].form("join")
    submission = form.validate({**PERSON, key: text}, idempotency_key=text if header else None)
    kept = json.dumps([dict(submission.context), submission.idempotency_key, dict(submission.values)])
    assert all(d not in kept for d in ("1111", "4444", "0005", "1117")), kept
    assert client.post("/v1/forms/join", json={**PERSON, key: text}).status_code == 200  # the person is not refused


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text(max_size=10), surrogate=st.integers(0xD800, 0xDFFF),
       where=st.sampled_from(["key", "value", "osdi"]))
def test_lone_surrogates_are_a_400_never_a_500(fuzz_client, value, surrogate, where):
    escaped = f"\\u{surrogate:04x}"
    text = json.dumps(value)[1:-1] + escaped
    raw = {"key": f'{{"{text}": "x"}}', "value": f'{{"FirstName": "{text}", "EmailAddress": "a@example.org"}}',
           "osdi": f'{{"person": {{"given_name": "{text}", "email_addresses": [{{"address": "a@example.org"}}]}}}}'}[where]
    answer = fuzz_client.post("/v1/forms/join", data=raw.encode(), content_type="application/json")
    assert answer.status_code == 400 and answer.get_json()["status"] == "bad_request"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text(max_size=20), encoding=st.sampled_from(["utf-8", "latin-1", "utf-16", "cp1252", "utf-16-le"]),
       part_charset=st.sampled_from(["", "utf-8", "iso-8859-1", "UTF-8", "us-ascii", "x-weird"]),
       raw_tail=st.binary(max_size=8))
def test_multipart_parts_in_any_encoding_are_strict_utf8(fuzz_client, value, encoding, part_charset, raw_tail):
    try:
        encoded = value.encode(encoding) + raw_tail
    except UnicodeEncodeError:
        return
    boundary = "fuzz-boundary-1234"
    header = f"Content-Type: text/plain; charset={part_charset}\r\n" if part_charset else ""
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="FirstName"\r\n{header}\r\n'.encode() + encoded
            + f"\r\n--{boundary}--\r\n".encode())
    answer = fuzz_client.post("/v1/forms/join", data=body, content_type=f"multipart/form-data; boundary={boundary}",
                              headers={"Accept": "application/json"})
    no_server_error(answer)
    try:
        encoded.decode("utf-8")
        utf8 = True
    except UnicodeDecodeError:
        utf8 = False
    if part_charset.lower() in ("iso-8859-1", "x-weird"):
        assert answer.status_code == 415
    elif not utf8:
        assert answer.status_code == 400, answer.get_json()
    else:
        assert answer.status_code in (200, 422), answer.get_json()  # parsed: valid or not is the schema's say

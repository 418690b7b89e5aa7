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

"""OSDI helper bodies at a form's URL: what is read, what is ignored, the allow-lists, errors, limits, OpenAPI."""
from __future__ import annotations

import copy
from urllib.parse import parse_qs

import pytest

from formrelay import create_app
from formrelay.core.config import ConfigError, OSDISettings, parse_config
from formrelay.forms.osdi import read_osdi
from formrelay.forms.person import PersonMapping
from formrelay.forms.submission import OSDIBody
from tests.conftest import NGP_FORM_URL, NGP_SUCCESS, base_config

AN_BASE = "https://an.test/api/v2"
AN_URL = f"{AN_BASE}/petitions/air/signatures"
PERSON = {"given_name": "Ann", "family_name": "Lee", "email_addresses": [{"address": "ann@example.org"}],
          "postal_addresses": [{"postal_code": "20009"}]}


def osdi(**top):
    return {"person": copy.deepcopy(PERSON), **top}


@pytest.fixture
def config():
    cfg = base_config()
    cfg["providers"]["actionnetwork"] = {"base_url": AN_BASE}
    cfg["forms"]["sign"] = {"provider": "actionnetwork", "action": "petition", "action_id": "air",
                            "add_tags": ["air"], "osdi": {"allow_add_tags": ["volunteer"]}}
    return cfg


def ngp_posts(mocked):
    return [parse_qs(c.request.body) for c in mocked.calls if c.request.method == "POST"]


def an_posts(mocked):
    import json

    return [json.loads(c.request.body) for c in mocked.calls if c.request.url == AN_URL]


def test_an_osdi_body_and_a_flat_body_reach_ngp_alike(client, mocked):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    flat = client.post("/v1/forms/join", json={"FirstName": "Ann", "LastName": "Lee",
                                                 "EmailAddress": "ann@example.org", "PostalCode": "20009"})
    assert flat.status_code == 200
    answer = client.post("/v1/forms/join", json=osdi())
    assert answer.status_code == 200 and answer.get_json()["status"] == "delivered"
    first, second = ngp_posts(mocked)
    assert first == second


def test_flat_names_beside_the_person_are_ignored_and_controls_are_read(client, mocked):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    body = osdi(FirstName="Mallory", _idempotency_key="k-1", utm_source="mail",
                referrer_data={"source": "fb-ad", "website": "example.org"})
    assert client.post("/v1/forms/join", json=body).status_code == 200
    again = client.post("/v1/forms/join", json=body)  # the same key: the first answer, not a second post
    assert again.status_code == 200
    (sent,) = ngp_posts(mocked)
    assert sent["FirstName"] == ["Ann"] and "utm_source" not in sent and "source" not in sent


def test_a_filled_honeypot_in_an_osdi_body_is_discarded_like_any_other(client, mocked):
    answer = client.post("/v1/forms/join", json=osdi(_hp="http://spam.example"))
    assert answer.status_code == 200 and ngp_posts(mocked) == []


def test_required_fields_missing_from_the_person_name_their_osdi_path(client, mocked):
    body = {"person": {"given_name": "Ann"}}
    errors = client.post("/v1/forms/join", json=body).get_json()["errors"]
    assert errors["LastName"] == ["This field is required. (at person.family_name)"]
    assert errors["EmailAddress"] == ["This field is required. (at person.email_addresses[0].address)"]
    assert errors["PostalCode"] == ["This field is required. (at person.postal_addresses[0].postal_code)"]
    assert ngp_posts(mocked) == []


def test_card_numbers_in_custom_fields_are_refused_before_anything_is_kept(client, mocked):
    body = osdi()
    body["person"]["custom_fields"] = {"Notes": "4111 1111 1111 1111", "cc_number": "4111"}
    answer = client.post("/v1/forms/join", json=body)
    assert answer.status_code == 422
    errors = answer.get_json()["errors"]
    assert set(errors) == {"Notes", "cc_number"} and "Card details" in errors["Notes"][0]
    assert errors["Notes"][0].endswith("(at person.custom_fields.Notes)")
    assert ngp_posts(mocked) == []


@pytest.mark.parametrize("person", [[], "Ann", None])
def test_a_person_that_is_not_an_object_is_a_flat_body_with_a_nested_value(client, person):
    answer = client.post("/v1/forms/join", json={"person": person, "FirstName": "Ann"})
    # a list value is a multi-select, a string is an unknown field: flat rules apply, so the form's 422
    assert answer.status_code in (400, 422)


def test_too_many_custom_fields_is_413(client):
    body = osdi()
    body["person"]["custom_fields"] = {f"f{i}": "x" for i in range(200)}
    assert client.post("/v1/forms/join", json=body).status_code == 413


def test_action_network_takes_only_the_allowed_tags(client, mocked):
    mocked.post(AN_URL, json={})
    body = osdi(add_tags=["Volunteer", "donor"], remove_tags=["air"], triggers={"autoresponse": {"enabled": False}})
    body["person"]["email_addresses"][0]["status"] = "subscribed"
    assert client.post("/v1/forms/sign", json=body).status_code == 200
    (sent,) = an_posts(mocked)
    assert sent["add_tags"] == ["air", "volunteer"] and "remove_tags" not in sent
    assert sent["triggers"] == {"autoresponse": {"enabled": True}}
    assert sent["person"]["email_addresses"] == [{"address": "ann@example.org"}]


def test_allowed_tags_of_the_wrong_shape_are_400(client, mocked):
    answer = client.post("/v1/forms/sign", json=osdi(add_tags="volunteer"))
    assert answer.status_code == 400 and "add_tags must be a list of strings" in answer.get_json()["message"]
    assert an_posts(mocked) == []


@pytest.mark.parametrize("triggers, off", [
    (None, True),                                          # the plugin's `autoresponse: false`: no triggers at all
    ({"autoresponse": {"enabled": False}}, True),
    ({"autoresponse": {}}, True),
    ({"other": {"enabled": True}}, True),
    ({"autoresponse": {"enabled": True}}, False),          # the plugin's default
    ({"autoresponse": {"enabled": "true"}}, True),         # only JSON true asks for it
])
def test_with_allow_autoresponse_off_only_an_autoresponse_asked_for_is_kept(triggers, off):
    mapping = PersonMapping({"email": "e"}, custom=None)
    doc = {"person": {"email_addresses": [{"address": "a@example.org"}]}}
    if triggers is not None:
        doc["triggers"] = triggers
    opened = read_osdi(OSDIBody(doc), mapping, OSDISettings(allow_autoresponse_off=True))
    assert opened.page_options == ({"autoresponse": False} if off else {})
    # without the form's leave, the page decides nothing, whatever it sent
    assert read_osdi(OSDIBody(doc), mapping, OSDISettings()).page_options == {}


def test_the_plugins_autoresponse_false_reaches_action_network_as_no_trigger(mocked, config):
    config["forms"]["quiet"] = {**config["forms"]["sign"], "osdi": {"allow_autoresponse_off": True}}
    app = create_app(config)
    mocked.post(AN_URL, json={})
    quiet = app.test_client().post("/v1/forms/quiet", json=osdi())  # what `autoresponse: false` sends: no triggers
    loud = app.test_client().post("/v1/forms/quiet", json=osdi(triggers={"autoresponse": {"enabled": True}}))
    closed = app.test_client().post("/v1/forms/sign", json=osdi())  # a form that did not allow it keeps its own
    assert [a.status_code for a in (quiet, loud, closed)] == [200, 200, 200]
    sent = an_posts(mocked)
    assert ["triggers" in s for s in sent] == [False, True, True]


def test_read_osdi_is_pure_and_keeps_to_the_allow_lists():
    mapping = PersonMapping({"email": "e", "email_status": "ok", "comments": "c"}, custom=None)
    doc = {"person": {"email_addresses": [{"address": "a@example.org", "status": "subscribed"}],
                      "custom_fields": {"x": "1"}},
           "comments": "hi", "add_tags": ["A"], "remove_tags": ["B"], "triggers": {"autoresponse": {"enabled": False}},
           "_started": "tok", "source": "top"}
    closed = read_osdi(OSDIBody(doc), mapping, OSDISettings())
    assert closed.values == {"e": "a@example.org", "c": "hi", "_started": "tok", "_source": "top"}
    assert closed.page_options == {}
    opened = read_osdi(OSDIBody(doc), mapping, OSDISettings(allow_add_tags=("a",), allow_remove_tags=("b",),
                                                            allow_autoresponse_off=True, allow_status=True))
    assert opened.values["ok"] is True
    assert opened.page_options == {"add_tags": ["a"], "remove_tags": ["b"], "autoresponse": False}
    assert closed.annotate({"e": ["Bad."], "other": ["Kept."]}) == {
        "e": ["Bad. (at person.email_addresses[0].address)"], "other": ["Kept."]}


def test_osdi_config_keys_are_checked_at_start_up():
    with pytest.raises(ConfigError, match="osdi.allow_tags"):
        parse_config({"forms": {"a": {"provider": "actionnetwork", "action": "petition", "action_id": "x",
                                      "osdi": {"allow_tags": ["v"]}}}})


def test_a_person_override_naming_a_missing_field_is_a_definition_problem(mocked):
    cfg = base_config()
    cfg["forms"]["join"]["person"] = {"phone": "MobilePhone"}
    app = create_app(cfg)
    form = app.extensions["formrelay"].form("join")
    from formrelay.core.errors import DefinitionError

    with pytest.raises(DefinitionError, match="person.phone: the form has no field 'MobilePhone'"):
        form.loaded()


def test_openapi_documents_the_osdi_body_as_an_alternative_for_each_form(client):
    doc = client.get("/v1/openapi.json").get_json()
    for slug in ("join", "sign"):
        flat, body = doc["paths"][f"/v1/forms/{slug}"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
        assert body["required"] == ["person"] and flat["allOf"][-1]["not"]["required"] == ["person"]
    ngp = doc["paths"]["/v1/forms/join"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"][1]
    email = ngp["properties"]["person"]["properties"]["email_addresses"]["items"]["properties"]["address"]
    assert email["description"] == "-> the form's field 'EmailAddress'"
    an = doc["paths"]["/v1/forms/sign"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"][1]
    assert "custom[<key>]" in an["properties"]["person"]["properties"]["custom_fields"]["description"]


def test_an_osdi_body_to_a_real_schema_is_described_validly(client):
    from openapi_spec_validator import validate

    validate(client.get("/v1/openapi.json").get_json())


def test_flat_json_with_nested_objects_other_than_person_is_still_400(client):
    answer = client.post("/v1/forms/join", json={"FirstName": {"x": 1}})
    assert answer.status_code == 400


@pytest.fixture
def mocked_an(mocked):
    mocked.post(AN_URL, json={})
    return mocked


def test_both_shapes_of_the_same_person_reach_action_network_alike(client, mocked_an):
    flat = {"given_name": "Ann", "family_name": "Lee", "email": "ann@example.org", "postal_code": "20009"}
    assert client.post("/v1/forms/sign", json=flat).status_code == 200
    assert client.post("/v1/forms/sign", json=osdi()).status_code == 200
    first, second = an_posts(mocked_an)
    assert first == second


# -- fuzzing: OSDI-shaped bodies with anything anywhere never give a 5xx ------------------------------------

def _fuzz_strategies():
    from hypothesis import strategies as st

    scalars = st.one_of(st.text(max_size=30), st.integers(), st.floats(allow_nan=True), st.booleans(), st.none())
    anything = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(max_size=6), inner, max_size=3), max_leaves=6)
    item = st.dictionaries(st.sampled_from(["address", "number", "status", "primary", "address_lines", "locality",
                                            "region", "postal_code", "country", "number_type"]), anything, max_size=5)
    person = st.fixed_dictionaries({}, optional={
        "given_name": anything, "family_name": anything,
        "email_addresses": st.lists(item, max_size=3) | anything, "phone_numbers": st.lists(item, max_size=3) | anything,
        "postal_addresses": st.lists(item, max_size=3) | anything,
        "custom_fields": st.dictionaries(st.text(max_size=10), anything, max_size=4) | anything,
    })
    return st.fixed_dictionaries({"person": person}, optional={
        "add_tags": anything, "remove_tags": anything, "triggers": anything, "comments": anything,
        "referrer_data": anything, "_hp": anything, "_idempotency_key": anything, "utm_source": anything,
    })


@pytest.fixture
def osdi_fuzz_client():  # function scope: its fake upstreams must not outlive the fuzz test
    import responses

    from tests.conftest import NGP_FORM_URL as url
    from formrelay.sandbox.ngp import PETITION

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(url, json=PETITION)
        rsps.post(url, json=NGP_SUCCESS)
        rsps.post(AN_URL, json={})
        cfg = base_config(global_rate_limit="")
        cfg["providers"]["actionnetwork"] = {"base_url": AN_BASE}
        cfg["forms"]["sign"] = {"provider": "actionnetwork", "action": "petition", "action_id": "air",
                                "email_consent_field": "ok", "osdi": {"allow_add_tags": ["a"], "allow_status": True,
                                                                      "allow_autoresponse_off": True}}
        yield create_app(cfg).test_client()


def test_arbitrary_osdi_shaped_bodies_never_fail_the_relay(osdi_fuzz_client):
    import json

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=_fuzz_strategies(), slug=st.sampled_from(["join", "sign"]))
    def check(body, slug):
        answer = osdi_fuzz_client.post(f"/v1/forms/{slug}", data=json.dumps(body), content_type="application/json")
        assert answer.status_code in (200, 202, 400, 413, 422), (answer.status_code, body)
        reply = answer.get_json()
        assert {"ok", "status"} <= set(reply)
        if answer.status_code == 400:
            assert reply["message"]

    check()


def test_check_shows_where_an_osdi_body_lands_and_refuses_a_bad_override(tmp_path, sandbox):
    from click.testing import CliRunner

    from formrelay.cli import main

    path = tmp_path / "formrelay.toml"
    form = f'[providers.ngp]\nbase_url = "{sandbox.url}/ngp/v2"\napi_key = "sandbox-ngp-api-key"\n[forms.join]\nprovider = "ngp"\nform_id = "demo-petition"\n'
    path.write_text(form + '[forms.join.person]\nphone_status = "SmsOptIn"\n')
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "OSDI person: given_name -> FirstName" in result.output and "phone_status -> SmsOptIn" in result.output
    path.write_text(form + '[forms.join.person]\nphone = "Mobile"\n')
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert result.exit_code != 0 and "person.phone: the form has no field 'Mobile'" in result.output


def test_a_wrong_shape_under_a_long_custom_name_echoes_a_bounded_path(client, mocked):
    body = osdi()
    body["person"]["custom_fields"] = {"n" * 5000: {"nested": True}}
    answer = client.post("/v1/forms/join", json=body)
    assert answer.status_code == 400
    assert answer.get_json()["message"].startswith("Not an OSDI body the relay can read: person.custom_fields")
    assert len(answer.get_json()["message"]) < 300

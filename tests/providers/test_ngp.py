"""NGP: definition -> fields, fields -> payload, answer -> outcome (pure), and the HTTP edges with responses."""
from __future__ import annotations

import logging
import time

import pytest
import requests
import responses

from formrelay.core.errors import DefinitionError, TryLater
from formrelay.forms.fields import build_schema, describe_schema
from formrelay.providers.ngp import (
    US_STATES,
    build_payload,
    definition_from_ngp,
    plain_text,
    read_answer,
)
from tests.conftest import NGP_FORM_URL, NGP_SUCCESS


def test_fieldsets_are_flattened_in_order_and_non_fields_left_out(ngp_definition):
    definition = definition_from_ngp(ngp_definition)
    assert [f.name for f in definition.fields] == [
        "FirstName", "LastName", "EmailAddress", "Phone", "AddressLine1", "City", "StateProvince",
        "PostalCode", "Comments", "SmsOptIn",
    ]
    assert definition.fixed == {"YesSignMeUpForUpdatesForBinder": True, "type": "PetitionForm"}
    assert definition.title == "Sign the clean air petition"


def test_types_labels_limits_validation_and_aliases(ngp_definition):
    by_name = {f.name: f for f in definition_from_ngp(ngp_definition).fields}
    assert by_name["EmailAddress"].type == "email" and by_name["EmailAddress"].max_length == 100
    assert by_name["Phone"].type == "tel"
    assert by_name["PostalCode"].format == "postal_code"
    assert by_name["PostalCode"].region_fields == ("StateProvince", None)
    assert by_name["Comments"].type == "textarea"
    assert by_name["SmsOptIn"].type == "checkbox"
    assert by_name["FirstName"].aliases == ("fn",) and by_name["FirstName"].label == "First name"
    assert by_name["FirstName"].required and not by_name["City"].required


def test_states_named_list_is_resolved_to_states_territories_military_and_provinces():
    """NGP forms titled "State or Province" take US states, DC, territories, military codes and provinces."""
    definition = definition_from_ngp(ngp_definition_with([{"type": "select", "name": "State", "options": "states"}]))
    options = definition.fields[0].options
    values = [o.value for o in options]
    assert len(values) == len(set(values)) == 51 + 8 + 3 + 13
    assert {"CA", "DC", "PR", "GU", "VI", "AS", "MP"} <= set(values)
    assert {"AA", "AE", "AP"} <= set(values)
    assert {"ON", "QC", "BC", "AB", "NS", "NU", "YT"} <= set(values)
    assert options[values.index("DC")].label == "District of Columbia"
    assert options[values.index("ON")].label == "Ontario" and options[values.index("AE")].label == "Armed Forces Europe"


def ngp_definition_with(elements, form_type="SignupForm"):
    return {"title": "T", "type": form_type, "form_elements": elements}


def test_inline_options_in_the_shapes_seen():
    definition = definition_from_ngp(ngp_definition_with([
        {"type": "select", "name": "Amount", "options": [{"val": "10", "label": "$10", "display": "$10"}, {"val": "25", "label": "$25"}]},
        {"type": "radios", "name": "Size", "options": {"s": "Small", "l": "Large"}},
        {"type": "checkboxes", "name": "Topics", "options": ["Air", "Water"]},
    ]))
    amount, size, topics = definition.fields
    assert [(o.value, o.label) for o in amount.options] == [("10", "$10"), ("25", "$25")]
    assert size.type == "radio" and [o.value for o in size.options] == ["s", "l"]
    assert topics.multiple and topics.type == "checkbox"


def test_unknown_types_and_validations_are_logged_and_handled(caplog):
    with caplog.at_level(logging.WARNING):
        definition = definition_from_ngp(ngp_definition_with([
            {"type": "hologram", "name": "Mystery", "title": "Mystery"},
            {"type": "textfield", "name": "Code", "validation": "luhn"},
            {"type": "select", "name": "Country", "options": "countries"},
            {"type": "markup", "markup": "<p>x</p>"},
            {"type": "textfield"},
            "not an element",
        ]))
    assert [(f.name, f.type) for f in definition.fields] == [("Mystery", "text"), ("Code", "text"), ("Country", "text")]
    text = caplog.text
    assert "hologram" in text and "luhn" in text and "countries" in text


def test_card_elements_are_never_offered():
    definition = definition_from_ngp(ngp_definition_with([
        {"type": "textfield", "name": "CreditCardNumber"}, {"type": "textfield", "name": "CVV"},
        {"type": "textfield", "name": "FirstName"},
    ], form_type="EventForm"))
    assert [f.name for f in definition.fields] == ["FirstName"]


@pytest.mark.parametrize("doc", [None, [], {"form_elements": "x"}, {"form_elements": []}, {"type": "X"}])
def test_malformed_definitions_are_definition_errors(doc):
    with pytest.raises(DefinitionError):
        definition_from_ngp(doc)


def test_deeply_nested_fieldsets_are_bounded():
    element = {"type": "textfield", "name": "Deep"}
    for _ in range(50):
        element = {"type": "fieldset", "children": [element]}
    with pytest.raises(DefinitionError):
        definition_from_ngp(ngp_definition_with([element]))


def test_schema_and_description_come_from_the_same_specs(ngp_definition):
    definition = definition_from_ngp(ngp_definition)
    schema = build_schema("join", definition.fields)()
    described = {f["name"]: f for f in describe_schema(schema)}
    assert described["EmailAddress"] == {
        "name": "EmailAddress", "label": "Email", "type": "email", "required": True, "max_length": 100,
        "aliases": ["em"],
    }
    assert described["StateProvince"]["type"] == "select"
    assert described["StateProvince"]["options"][0] == {"value": "AL", "label": "Alabama"}
    errors = schema.validate({"FirstName": "x" * 21, "StateProvince": "ZZ", "PostalCode": "1"})
    assert set(errors) == {"FirstName", "StateProvince", "PostalCode", "LastName", "EmailAddress"}


def test_payload_keeps_fixed_values_last_and_unoverridable(ngp_definition):
    definition = definition_from_ngp(ngp_definition)
    pairs = build_payload(definition, {"FirstName": "Ann", "SmsOptIn": True, "type": "Hack", "Unknown": "x"})
    assert pairs == [("FirstName", "Ann"), ("SmsOptIn", "true"),
                     ("YesSignMeUpForUpdatesForBinder", "true"), ("type", "PetitionForm")]


def test_multi_values_become_repeated_keys():
    definition = definition_from_ngp(ngp_definition_with([{"type": "checkboxes", "name": "Topics", "options": ["Air", "Water"]}]))
    assert build_payload(definition, {"Topics": ["Air", "Water"]})[:2] == [("Topics", "Air"), ("Topics", "Water")]


def test_success_answer_gives_plain_text_message(ngp_definition):
    outcome = read_answer(200, NGP_SUCCESS, definition_from_ngp(ngp_definition))
    assert outcome.status == "delivered" and outcome.message == "Thanks & welcome!"


def test_field_errors_map_case_insensitively_to_form_fields(ngp_definition):
    body = {"resultCode": "Failure", "errors": [
        {"properties": ["firstName"], "text": "First name may not contain numbers", "code": "INVALID_PARAMETER"},
        {"properties": ["emailAddress", "postalCode"], "text": "Email and ZIP do not match"},
    ]}
    outcome = read_answer(400, body, definition_from_ngp(ngp_definition))
    assert outcome.status == "invalid"
    assert outcome.errors == {"FirstName": ["First name may not contain numbers"],
                              "EmailAddress": ["Email and ZIP do not match"],
                              "PostalCode": ["Email and ZIP do not match"]}


def test_error_without_a_known_field_is_rejected_with_the_public_text(ngp_definition):
    body = {"resultCode": "Failure", "errors": [{"properties": ["somethingElse"], "text": "Duplicate submission"}]}
    outcome = read_answer(200, body, definition_from_ngp(ngp_definition))
    assert outcome.status == "rejected" and outcome.message == "Duplicate submission"
    empty = read_answer(200, {"resultCode": "Failure"}, definition_from_ngp(ngp_definition))
    assert empty.status == "rejected" and empty.message


@pytest.mark.parametrize(("status", "body"), [(500, None), (503, {"x": 1}), (429, None), (200, None), (200, ["list"]),
                                              (401, {}), (404, {})])
def test_outages_and_surprises_are_try_later(ngp_definition, status, body):
    with pytest.raises(TryLater):
        read_answer(status, body, definition_from_ngp(ngp_definition))


def test_plain_text_strips_markup():
    assert plain_text("<p>Hello <script>x</script><b>you</b></p>\n<p>!</p>") == "Hello xyou !"


def test_timeout_becomes_try_later_without_url(app, mocked):
    mocked.post(NGP_FORM_URL, body=requests.ReadTimeout("read timed out at https://ngp.test/v2?secret"))
    relay = app.extensions["formrelay"]
    form = relay.form("join")
    with pytest.raises(TryLater) as info:
        form.provider.deliver(form.config, form.definition, form.validate(
            {"FirstName": "A", "LastName": "B", "EmailAddress": "a@b.org", "PostalCode": "12345"}))
    assert "ngp.test" not in str(info.value) and info.value.may_have_arrived


def test_definition_is_fetched_with_basic_auth_when_a_key_is_configured(app, mocked):
    app.extensions["formrelay"].form("join").definition
    get = [c for c in mocked.calls if c.request.method == "GET"][0]
    assert get.request.headers["Authorization"].startswith("Basic ")


def test_definition_errors(app, mocked):
    form = app.extensions["formrelay"].form("join")
    mocked.replace(responses.GET, NGP_FORM_URL, status=404, json={"errors": []})
    with pytest.raises(DefinitionError, match="no form"):
        form.provider.definition(form.config)
    mocked.replace(responses.GET, NGP_FORM_URL, status=502, body="<html>")
    with pytest.raises(TryLater):
        form.provider.definition(form.config)


def test_proxy_settings_from_the_environment_are_still_honoured(monkeypatch):
    """The sessions don't re-read the environment per call, but HTTPS_PROXY and NO_PROXY still apply per host."""
    from formrelay.core.config import parse_config

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "ngp-direct.test")
    from formrelay.delivery.relay import Relay

    relay = Relay(parse_config({"providers": {"ngp": {"base_url": "https://ngp.test/v2", "api_key": "k"}},
                                "forms": {"join": {"provider": "ngp", "form_id": "x"}}}))
    provider = relay.providers["ngp"]
    assert provider.upstream.proxies_for("https://ngp.test/v2/forms/x")["https"] == "http://proxy.internal:3128"
    assert "https" not in provider.upstream.proxies_for("https://ngp-direct.test/v2/forms/x")
    assert provider.http.trust_env is False


def test_each_schema_instance_gets_its_own_copy_of_every_field(ngp_definition):
    """Fields are copied per instance (our quick copy must behave like marshmallow's): binding one instance's
    field to its schema must not touch another instance's."""
    from formrelay.forms.fields import build_schema
    from formrelay.providers.ngp import definition_from_ngp

    cls = build_schema("join", definition_from_ngp(ngp_definition).fields)
    first, second = cls(), cls()
    for name, field in first.fields.items():
        other = second.fields[name]
        assert field is not other and type(field) is type(other)
        assert field.parent is first and other.parent is second
        assert field.validators == other.validators and field.metadata == other.metadata
    assert first.load({"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org",
                       "PostalCode": "20009"})["EmailAddress"] == "ann@example.org"


# -- second pass against the documentation (issue 19) -------------------------------------------------

from formrelay import create_app  # noqa: E402
from formrelay.delivery.jobs import DEAD  # noqa: E402
from formrelay.forms.regions import postal_code_problem  # noqa: E402
from formrelay.sandbox.ngp import ADVOCACY, CLOSED, DONATE, SIGNUP  # noqa: E402
from tests.conftest import NGP_BASE, NGP_KEY, base_config  # noqa: E402


@pytest.mark.parametrize(("code", "state", "country", "ok"), [
    ("20009", "DC", None, True), ("20009-1234", "NY", None, True), ("M5V 2T6", "NY", None, False),
    ("M5V 2T6", "ON", None, True), ("m5v2t6", "QC", None, True), ("20009", "ON", None, False),
    ("96910", "GU", None, True), ("09012", "AE", None, True), ("ABC 123", "AP", None, False),
    ("H0H 0H0", None, "Canada", True), ("H0H 0H0", None, "US", False), ("12345", None, "USA", True),
    ("SW1A 1AA", None, "GB", True), ("SW1A 1AA", None, None, True), ("1", None, None, False),
    ("D1A 1A1", "ON", None, False),  # Canada Post never uses D, F, I, O, Q or U
])
def test_postal_codes_follow_the_state_province_or_country(code, state, country, ok):
    """US ZIP for US states, territories and military codes; Canadian format for provinces; length otherwise."""
    assert (postal_code_problem(code, state, country) is None) is ok


@pytest.fixture
def signup(mocked):
    """The NGP "Zip/Postal Code" + "State or Province" signup form, as a relay would see it."""
    raw = base_config()
    raw["forms"] = {"signup": {"provider": "ngp", "form_id": "demo-signup"},
                    "closed": {"provider": "ngp", "form_id": "demo-closed"},
                    "donate": {"provider": "ngp", "form_id": "demo-donate"},
                    "advocacy": {"provider": "ngp", "form_id": "demo-advocacy"}}
    raw["queue"] = {"embedded_worker": False}
    for doc in (SIGNUP, CLOSED, DONATE, ADVOCACY):
        mocked.get(f"{NGP_BASE}/forms/{doc['formId']}", json=doc)
    mocked.post(f"{NGP_BASE}/forms/demo-signup", json=NGP_SUCCESS)
    return create_app(raw)


def posted(mocked, form_id="demo-signup"):
    from urllib.parse import parse_qs

    return [parse_qs(c.request.body) for c in mocked.calls
            if c.request.method == "POST" and c.request.url.endswith(f"/forms/{form_id}")]


SIGNUP_VALUES = {"FirstName": "Ann", "EmailAddress": "ann@example.org"}


def test_docs_zip_postal_code_form_accepts_a_canadian_code_with_a_province(signup, mocked):
    """A form titled "Zip/Postal Code" (validation postalCode) with "State or Province" must take M5V 2T6 in ON."""
    client = signup.test_client()
    answer = client.post("/v1/forms/signup", json={**SIGNUP_VALUES, "StateProvince": "ON", "PostalCode": "M5V 2T6"})
    assert answer.status_code == 200
    (sent,) = posted(mocked)
    assert sent["StateProvince"] == ["ON"] and sent["PostalCode"] == ["M5V 2T6"]


def test_postal_code_that_does_not_fit_the_state_is_422_on_the_postal_field(signup, mocked):
    client = signup.test_client()
    answer = client.post("/v1/forms/signup", json={**SIGNUP_VALUES, "StateProvince": "ON", "PostalCode": "20009"})
    assert answer.status_code == 422 and answer.get_json()["errors"] == {
        "PostalCode": ["Enter a Canadian postal code such as M5V 2T6."]}
    answer = client.post("/v1/forms/signup", json={**SIGNUP_VALUES, "StateProvince": "NY", "PostalCode": "M5V 2T6"})
    assert answer.get_json()["errors"] == {"PostalCode": ["Enter a 5-digit ZIP code (or ZIP+4)."]}
    assert posted(mocked) == []


def test_docs_hidden_query_string_elements_come_from_the_page_url(signup, mocked):
    """NGP hidden elements with a queryString (MarketSource <- ms, MailingId <- midqs) are attribution: filled from
    the page URL's parameter of that name; without it the definition's fixed value stays; a field can't set it."""
    client = signup.test_client()
    client.post("/v1/forms/signup", json={
        **SIGNUP_VALUES, "StateProvince": "DC", "PostalCode": "20009", "MarketSource": "forged",
        "_page_url": "https://www.example.org/join?ms=email-0412&midqs=M-77&fn=Bob#top"})
    client.post("/v1/forms/signup", json={**SIGNUP_VALUES, "PostalCode": "20009"})
    with_page, without = posted(mocked)
    assert with_page["MarketSource"] == ["email-0412"] and with_page["MailingId"] == ["M-77"]
    assert with_page["FirstName"] == ["Ann"]  # a page parameter never replaces what the person typed
    assert without["MarketSource"] == ["web"] and "MailingId" not in without  # blank fixed value: urlencoded empty
    definition = definition_from_ngp(SIGNUP)
    assert definition.extra["from_page"] == {"MarketSource": "ms", "MailingId": "midqs"}
    pairs = build_payload(definition, {"FirstName": "A"}, {"page_url": "javascript:alert(1)?ms=x"})
    assert ("MarketSource", "web") in pairs


def test_docs_status_other_than_published_is_503_with_the_deactivation_text(signup, mocked):
    """The definition's documented `metadata.deactivationHtmlContent` is the message a closed form shows.
    A definition whose `status` is not `Published` is refused (503) with the form's own deactivation text,
    instead of queueing submissions that would fail for a week; nothing is posted or stored."""
    client = signup.test_client()
    answer = client.post("/v1/forms/closed", json={**SIGNUP_VALUES, "PostalCode": "20009"})
    assert answer.status_code == 503 and answer.get_json() == {
        "ok": False, "status": "unavailable", "message": "Sign-ups for the spring rally have closed. Thank you!"}
    assert posted(mocked, "demo-closed") == []
    relay = signup.extensions["formrelay"]
    assert relay.store.jobs() == []
    problems = relay.forms["closed"].provider.check(relay.forms["closed"].config)
    assert problems and "Unpublished" in problems[0]


def test_docs_contribution_forms_are_refused_at_definition_time(signup):
    """Documented: NGP's own embed tokenises card data in the browser; a ContributionForm is never relayed."""
    relay = signup.extensions["formrelay"]
    with pytest.raises(DefinitionError, match="ContributionForm"):
        relay.forms["donate"].definition
    assert signup.test_client().get("/v1/forms/donate").status_code == 503


def test_advocacy_forms_hold_an_uncertain_delivery(signup, mocked):
    """A retried AdvocacyForm submission could send a second message to a target: uncertain -> held."""
    mocked.post(f"{NGP_BASE}/forms/demo-advocacy", body=requests.ReadTimeout("slow"))
    answer = signup.test_client().post("/v1/forms/advocacy", json={**SIGNUP_VALUES, "PostalCode": "20009"})
    assert answer.status_code == 202
    (job,) = signup.extensions["formrelay"].store.jobs()
    assert job.state == DEAD and "held" in job.last_error
    relay = signup.extensions["formrelay"]
    relay.forms["signup"].definition
    assert relay.rule(relay.forms["signup"]) == "retry"


@pytest.mark.parametrize("body", [{}, {"response": {"submissionId": 1}}, {"errors": []}])
def test_docs_no_errors_array_means_success_even_without_result_code(ngp_definition, body):
    """The documentation: no errors array means success. A 200 with neither resultCode nor errors is delivered,
    never a permanent rejection."""
    outcome = read_answer(200, body, definition_from_ngp(ngp_definition))
    assert outcome.status == "delivered"


def test_a_worker_that_has_not_loaded_the_form_looks_its_type_up_before_judging(mocked):
    """After a restart the type is not known yet: it is fetched; when it cannot be, the job is held, not retried."""
    raw = base_config()
    raw["forms"] = {"advocacy": {"provider": "ngp", "form_id": "demo-advocacy"}}
    mocked.get(f"{NGP_BASE}/forms/demo-advocacy", json=ADVOCACY)
    relay = create_app(raw).extensions["formrelay"]
    form = relay.forms["advocacy"]
    assert form.provider.uncertain_delivery_for(form.config) == "hold"
    other = create_app(base_config()).extensions["formrelay"].forms["join"]
    assert other.provider.uncertain_delivery_for(other.config) == "retry"
    mocked.replace(responses.GET, f"{NGP_BASE}/forms/demo-advocacy", status=503)
    fresh = create_app(raw).extensions["formrelay"].forms["advocacy"]
    assert fresh.provider.uncertain_delivery_for(fresh.config) == "hold"


NGP_VALID = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009"}


# -- the API key (documented: "You must attach your API key using BasicAuth when making all API calls") ----------

def test_docs_an_ngp_provider_without_an_api_key_is_refused_at_start_up():
    """The one stated exception is the form definition GET: a keyless relay could only fill the dead letters."""
    from formrelay.core.config import ConfigError, parse_config

    for providers in ({"ngp": {"base_url": NGP_BASE}}, {}):
        with pytest.raises(ConfigError, match=r"providers\.ngp.*api_key|api_key.*providers\.ngp|\[providers\.ngp\]"):
            parse_config({"providers": providers, "forms": {"join": {"provider": "ngp", "form_id": "x"}}})


def test_docs_every_post_carries_basic_auth(app, mocked):
    import base64

    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    assert app.test_client().post("/v1/forms/join", json=NGP_VALID).status_code == 200
    posts = [c.request for c in mocked.calls if c.request.method == "POST"]
    expected = "Basic " + base64.b64encode(f"apiuser:{NGP_KEY}".encode()).decode()
    assert posts and all(r.headers["Authorization"] == expected for r in posts)


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_keeps_the_submission_waiting_logged_once(mocked, tmp_path, caplog, status):
    """A 401/403 on the POST is the relay's configuration, not the supporter's: queued (202), its tries not
    counted towards max_attempts, retried slowly (not in a tight loop), and logged once, not per submission."""
    raw = base_config()
    raw["queue"] = {"path": str(tmp_path / "q.sqlite3"), "embedded_worker": False, "max_attempts": 2}
    mocked.post(NGP_FORM_URL, status=status, json={"errors": [{"text": "Authorization has been denied"}]})
    app = create_app(raw)
    relay = app.extensions["formrelay"]
    with caplog.at_level(logging.ERROR, logger="formrelay"):
        codes = [app.test_client().post("/v1/forms/join", json=NGP_VALID).status_code for _ in range(3)]
        for _ in range(3):  # three worker attempts at each, more than max_attempts, due or not
            for claimed in relay.store.claim(time.time() + 86_400, 60, 10):
                relay.work(claimed)
    assert codes == [202, 202, 202]
    jobs = relay.store.jobs()
    assert len(jobs) == 3 and all(j.state == "pending" and j.attempts == 0 for j in jobs)
    assert all(j.due_at - time.time() > 25 for j in jobs)  # not a tight loop: 5 min, or the open breaker's probe
    refusals = [r for r in caplog.records if r.name == "formrelay.providers.ngp" and "refused" in r.getMessage()]
    assert len(refusals) == 1 and NGP_KEY not in caplog.text

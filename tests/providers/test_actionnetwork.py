"""Action Network: URLs per action, OSDI bodies, blind vs keyed, consent, phones, tags, referrer, throttle, errors."""
from __future__ import annotations

import json

import pytest
import responses

from formrelay import create_app
from formrelay.core.config import ConfigError

BASE = "https://an.test/api/v2"
KEY = "an-key-5e6f7a8b9c"
VALID = {"given_name": "Ann", "email_address": "Ann@Example.org"}
CREATED = {"identifiers": ["action_network:abc"], "_links": {"osdi:person": {"href": "x"}}}


def an_config(key: str | None = None, rate: str = "100/second", wait: float = 0, **form):
    provider = {"base_url": BASE, "rate": rate, "budget_wait": wait}
    if key:
        provider["api_key"] = key
    return {
        "relay": {"rate_limit": ""},
        "providers": {"actionnetwork": provider},
        "forms": {"act": {"provider": "actionnetwork", "action": "petition", "action_id": "p-1", **form}},
        "queue": {"embedded_worker": False},
    }


@pytest.fixture
def an():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield rsps


def sent(an):
    return [(c.request.url, c.request.headers, json.loads(c.request.body)) for c in an.calls]


@pytest.mark.parametrize(("action", "path"), [
    ("petition", "/petitions/p-1/signatures"), ("form", "/forms/p-1/submissions"),
    ("event", "/events/p-1/attendances"), ("advocacy_campaign", "/advocacy_campaigns/p-1/outreaches"),
    ("survey", "/surveys/p-1/responses"),
])
def test_each_action_posts_to_its_helper_blind(an, action, path, tmp_path):
    an.post(f"{BASE}{path}", json={})
    app = create_app(an_config(action=action))
    answer = app.test_client().post("/v1/forms/act", json=VALID)
    assert answer.status_code == 200 and answer.get_json()["status"] == "delivered"
    ((url, headers, body),) = sent(an)
    assert url == f"{BASE}{path}" and "OSDI-API-Token" not in headers
    assert body["person"]["email_addresses"] == [{"address": "Ann@example.org"}]


def test_signup_posts_to_people_and_needs_a_key(an):
    with pytest.raises(ConfigError, match="action_id"):
        create_app(an_config(action="form", action_id=None))
    blind = create_app(an_config(action="signup", action_id=None))
    assert blind.test_client().get("/v1/forms/act").status_code == 503
    an.post(f"{BASE}/people", json=CREATED)
    keyed = create_app(an_config(key=KEY, action="signup", action_id=None))
    assert keyed.test_client().post("/v1/forms/act", json=VALID).status_code == 200
    assert sent(an)[0][0] == f"{BASE}/people" and sent(an)[0][1]["OSDI-API-Token"] == KEY


def test_keyed_post_needs_a_created_resource(an):
    an.post(f"{BASE}/petitions/p-1/signatures", json=CREATED)
    client = create_app(an_config(key=KEY)).test_client()
    assert client.post("/v1/forms/act", json=VALID).status_code == 200
    an.replace(responses.POST, f"{BASE}/petitions/p-1/signatures", json={})
    answer = client.post("/v1/forms/act", json=VALID)
    assert answer.status_code == 502 and answer.get_json()["status"] == "rejected"
    assert KEY not in answer.get_data(as_text=True)


def test_full_person_body_with_address_custom_fields_comments_tags_and_referrer(an):
    an.post(f"{BASE}/petitions/p-1/signatures", json={})
    app = create_app(an_config(add_tags=["air", "volunteer"], remove_tags=["lapsed"],
                               custom_fields={"Employer": {"label": "Where do you work?", "required": True}}))
    app.test_client().post("/v1/forms/act", data={
        **VALID, "family_name": "Lee", "phone": "(202) 555-0123", "street": "1 Main St", "locality": "Washington",
        "region": "DC", "postal_code": "20009", "country": "US", "comments": "Clean air!", "custom[Employer]": "ACME",
        "add_tags": "hacked", "_source": "fb-ad-1", "referrer": "partner-org"}, headers={"Accept": "application/json"})
    ((_, _, body),) = sent(an)
    assert body == {
        "person": {
            "given_name": "Ann", "family_name": "Lee",
            "email_addresses": [{"address": "Ann@example.org"}],
            "phone_numbers": [{"number": "12025550123", "number_type": "Mobile"}],
            "postal_addresses": [{"address_lines": ["1 Main St"], "locality": "Washington", "region": "DC",
                                  "postal_code": "20009", "country": "US"}],
            "custom_fields": {"Employer": "ACME"},
        },
        "add_tags": ["air", "volunteer"], "remove_tags": ["lapsed"], "comments": "Clean air!",
        "referrer_data": {"source": "fb-ad-1", "referrer": "partner-org"},
        "triggers": {"autoresponse": {"enabled": True}},
    }


def test_consent_is_never_assumed(an):
    an.post(f"{BASE}/petitions/p-1/signatures", json={})
    client = create_app(an_config(email_consent_field="email_ok", sms_opt_in_field="sms_ok")).test_client()
    base = {**VALID, "phone_number": "+44 20 7946 0958"}
    client.post("/v1/forms/act", json=base)
    client.post("/v1/forms/act", json={**base, "email_ok": "on", "sms_ok": "on"})
    client.post("/v1/forms/act", json={**base, "email_ok": False, "sms_ok": "off"})
    people = [b["person"] for _, _, b in sent(an)]
    assert "status" not in people[0]["email_addresses"][0] and "status" not in people[0]["phone_numbers"][0]
    assert people[1]["email_addresses"][0]["status"] == "subscribed"
    assert people[1]["phone_numbers"][0] == {"number": "442079460958", "number_type": "Mobile", "status": "subscribed"}
    assert "status" not in people[2]["email_addresses"][0] and "status" not in people[2]["phone_numbers"][0]


def test_email_or_phone_is_required_and_more_can_be_required(an):
    client = create_app(an_config(required=["postal_code"])).test_client()
    errors = client.post("/v1/forms/act", json={"given_name": "Ann"}).get_json()["errors"]
    assert set(errors) == {"email_address", "phone_number", "postal_code"}
    an.post(f"{BASE}/petitions/p-1/signatures", json={})
    phone_only = client.post("/v1/forms/act", json={"phone": "202-555-0123", "postal_code": "20009"})
    assert phone_only.status_code == 200
    bad_phone = client.post("/v1/forms/act", json={"phone": "12", "postal_code": "1"}).get_json()
    assert "phone_number" in bad_phone["errors"]


def test_autoresponse_and_renamed_fields_from_config(an):
    an.post(f"{BASE}/petitions/p-1/signatures", json={})
    raw = an_config(autoresponse=False, labels={"given_name": "Prénom"})
    raw["forms"]["act"]["aliases"] = {"first": "given_name"}
    app = create_app(raw)
    described = {f["name"]: f for f in app.test_client().get("/v1/forms/act").get_json()["fields"]}
    assert described["given_name"]["label"] == "Prénom"
    app.test_client().post("/v1/forms/act", json={"first": "Ann", "email": "a@example.org"})
    ((_, _, body),) = sent(an)
    assert "triggers" not in body and body["person"]["given_name"] == "Ann"


@pytest.mark.parametrize(("error", "field"), [("Email address is not valid", "email_address"),
                                              ("Phone number must have a country code", "phone_number")])
def test_a_400_naming_a_field_is_422(an, error, field):
    an.post(f"{BASE}/petitions/p-1/signatures", status=400, json={"error": error})
    answer = create_app(an_config()).test_client().post("/v1/forms/act", json=VALID)
    assert answer.status_code == 422 and answer.get_json()["errors"] == {field: [error]}


def test_other_400s_are_rejected_and_outages_are_queued(an, tmp_path):
    an.post(f"{BASE}/petitions/p-1/signatures", status=400, json={"error": "Something odd"})
    raw = an_config()
    raw["queue"]["path"] = str(tmp_path / "q.sqlite3")
    client = create_app(raw).test_client()
    assert client.post("/v1/forms/act", json=VALID).status_code == 502
    for status in (429, 500, 503):
        an.replace(responses.POST, f"{BASE}/petitions/p-1/signatures", status=status, json={"error": "later"})
        assert client.post("/v1/forms/act", json=VALID).status_code == 202


def test_the_relay_holds_back_beyond_four_a_second(an, tmp_path):
    an.post(f"{BASE}/petitions/p-1/signatures", json={})
    raw = an_config(rate="4/minute")  # a wide window keeps the test free of timing
    raw["queue"]["path"] = str(tmp_path / "q.sqlite3")
    app = create_app(raw)
    codes = [app.test_client().post("/v1/forms/act", json=VALID).status_code for _ in range(6)]
    assert codes == [200, 200, 200, 200, 202, 202] and len(an.calls) == 4


def test_waiting_for_a_slot_instead_of_queueing(an):
    an.post(f"{BASE}/petitions/p-1/signatures", json={})
    app = create_app(an_config(rate="2/second", wait=5))
    codes = [app.test_client().post("/v1/forms/act", json=VALID).status_code for _ in range(3)]
    assert codes == [200] * 3 and len(an.calls) == 3  # the third waited for a slot rather than queue


def test_outreaches_are_held_not_retried_when_uncertain():
    relay = create_app(an_config(action="advocacy_campaign")).extensions["formrelay"]
    assert relay.rule(relay.form("act")) == "hold"
    petition = create_app(an_config()).extensions["formrelay"]
    assert petition.rule(petition.form("act")) == "retry"


# -- second pass against the documentation (issue 19) -------------------------------------------------

def test_docs_background_processing_200_empty_with_a_key_is_accepted(an):
    """Documented (background processing): `?background_request=true` answers an immediate `200 {}` and processes
    later. With a key, that `{}` must not be read as "nothing was created" (which rejected every submission)."""
    an.post(f"{BASE}/petitions/p-1/signatures", json={})
    app = create_app(an_config(KEY, background=True))
    answer = app.test_client().post("/v1/forms/act", json=VALID)
    assert answer.status_code == 200 and answer.get_json()["status"] == "delivered"
    ((url, headers, _),) = sent(an)
    assert url.endswith("/signatures?background_request=true") and headers["OSDI-API-Token"] == KEY


def test_docs_without_background_a_keyed_200_empty_is_still_not_a_creation(an):
    """Documented (ControlShift client, AN docs): with a key and no background flag, `{}` means nothing was made."""
    an.post(f"{BASE}/petitions/p-1/signatures", json={})
    answer = create_app(an_config(KEY)).test_client().post("/v1/forms/act", json=VALID)
    assert answer.status_code == 502


def checked(an, key=KEY, **form):
    app = create_app(an_config(key, **form))
    relay = app.extensions["formrelay"]
    provider, config = relay.providers["actionnetwork"], relay.forms["act"].config
    return provider.check(config), provider.warnings(config)


def test_docs_check_with_a_key_looks_the_action_up_and_fails_on_404(an):
    """Documented: GET /petitions/{id} returns the petition; AN answers 404 for an id that is not the group's."""
    an.get(f"{BASE}/petitions/p-1", status=404, json={"error": "Sorry, that resource could not be found"})
    problems, _ = checked(an)
    assert len(problems) == 1 and "p-1" in problems[0] and "action_id" in problems[0]
    assert an.calls[0].request.headers["OSDI-API-Token"] == KEY


def test_docs_check_looks_up_custom_fields_and_paginated_tags(an):
    """Documented: GET /metadata/custom_fields lists `action_network:custom_fields`; GET /tags is paginated with
    `_embedded["osdi:tags"]` and `_links.next`; add_tags that do not exist are silently ignored by AN."""
    an.get(f"{BASE}/petitions/p-1", json={"identifiers": ["action_network:p-1"]})
    an.get(f"{BASE}/metadata/custom_fields", json={"action_network:custom_fields": [{"name": "Employer"}]})
    an.get(f"{BASE}/tags", json={"_embedded": {"osdi:tags": [{"name": "volunteer"}]},
                                 "_links": {"next": {"href": f"{BASE}/tags?page=2"}}})
    an.get(f"{BASE}/tags?page=2", json={"_embedded": {"osdi:tags": [{"name": "donor"}]}, "_links": {}})
    problems, warnings = checked(an, add_tags=["volunteer", "donor", "no-such-tag"],
                                 custom_fields={"Employer": {}, "Employr": {}})
    assert problems == ["tag(s) 'no-such-tag' do not exist in this group: Action Network ignores unknown tags silently"]
    assert any("'Employr'" in w for w in warnings) and not any("'Employer'" in w for w in warnings)


def test_docs_check_passes_when_action_and_tags_exist(an):
    an.get(f"{BASE}/petitions/p-1", json={"identifiers": ["action_network:p-1"]})
    an.get(f"{BASE}/tags", json={"_embedded": {"osdi:tags": [{"name": "volunteer"}]}, "_links": {}})
    assert checked(an, add_tags=["volunteer"]) == ([], [])


def test_check_without_a_key_looks_nothing_up(an):
    """Lookups need a key (documented: only helpers take blind POSTs), so a keyless check makes no call."""
    assert checked(an, key=None, add_tags=["volunteer"]) == ([], [])
    assert len(an.calls) == 0


def test_docs_survey_responses_and_remove_tags_are_documented_except_together(an):
    """The changelog: "Added a new action type, surveys, ... and the record_response_helper", and "Added the ability
    to remove tags on person signup helper, record attendance helper, outreach helper, signature helper and
    submission helper". So only remove_tags on survey responses is left out, and only that is warned about."""
    an.get(f"{BASE}/surveys/p-1", json={"identifiers": ["action_network:p-1"]})
    an.get(f"{BASE}/petitions/p-1", json={"identifiers": ["action_network:p-1"]})
    an.get(f"{BASE}/tags", json={"_embedded": {"osdi:tags": [{"name": "lapsed"}]}, "_links": {}})
    assert checked(an, action="survey") == ([], [])
    assert checked(an, action="petition", remove_tags=["lapsed"]) == ([], [])
    problems, warnings = checked(an, action="survey", remove_tags=["lapsed"])
    assert problems == [] and len(warnings) == 1 and "remove_tags on survey responses" in warnings[0]


@pytest.mark.parametrize(("ticked", "status"), [(False, "unsubscribed"), (True, "subscribed")])
def test_docs_unticked_email_status_on_signup(an, ticked, status):
    """Person signup helper: "If a person is new and no status or the subscribed status is passed, the person will
    be subscribed. If the person is new and unsubscribed is passed, they will be added to the list unsubscribed."
    With unticked_email_status = "unsubscribed", an unticked box sends that status."""
    an.post(f"{BASE}/people", json=CREATED)
    app = create_app(an_config(KEY, action="signup", action_id=None, email_consent_field="updates",
                               unticked_email_status="unsubscribed"))
    answer = app.test_client().post("/v1/forms/act", json={**VALID, "updates": ticked})
    assert answer.status_code == 200, answer.get_json()
    ((_, _, body),) = sent(an)
    assert body["person"]["email_addresses"] == [{"address": "Ann@example.org", "status": status}]


def test_docs_without_unticked_email_status_an_unticked_box_sends_no_status(an):
    """Today's behaviour stays the default: no status (a new person is subscribed, an existing one unchanged)."""
    an.post(f"{BASE}/people", json=CREATED)
    app = create_app(an_config(KEY, action="signup", action_id=None, email_consent_field="updates"))
    assert app.test_client().post("/v1/forms/act", json={**VALID, "updates": False}).status_code == 200
    ((_, _, body),) = sent(an)
    assert body["person"]["email_addresses"] == [{"address": "Ann@example.org"}]


def test_unticked_email_status_is_refused_on_action_helpers_and_without_a_box():
    """Email status on action helpers: only `subscribed` is valid (documented), so the key is for signup only."""
    with pytest.raises(ConfigError, match="unticked_email_status.*signup"):
        create_app(an_config(KEY, email_consent_field="updates", unticked_email_status="unsubscribed"))
    with pytest.raises(ConfigError, match="unticked_email_status.*email_consent_field"):
        create_app(an_config(KEY, action="signup", action_id=None, unticked_email_status="unsubscribed"))
    with pytest.raises(ConfigError, match="unticked_email_status"):
        create_app(an_config(KEY, action="signup", action_id=None, email_consent_field="u",
                             unticked_email_status="subscribed"))


def test_check_says_what_unticked_email_status_does_to_existing_subscribers(an):
    problems, warnings = checked(an, action="signup", action_id=None, email_consent_field="updates",
                                 unticked_email_status="unsubscribed")
    assert problems == [] and any("existing subscriber" in w and "unsubscribed" in w for w in warnings)


@pytest.mark.parametrize(("accept", "form", "spoken"), [
    ("es", {}, ["es"]), ("fr-CA,fr;q=0.8", {}, ["fr"]), (None, {}, None),
    ("es", {"languages_spoken": ["en"]}, ["en"]), ("es", {"languages_spoken": []}, None),
])
def test_docs_languages_spoken_carries_the_negotiated_language(an, accept, form, spoken):
    """OSDI person: languages_spoken, "the languages the person speaks, using ISO 639-1 standard" (documented on
    Action Network's person resource): the language the relay negotiated, unless the form's config says otherwise."""
    an.post(f"{BASE}/petitions/p-1/signatures", json={})
    app = create_app(an_config(**form))
    headers = {"Accept-Language": accept} if accept else {}
    assert app.test_client().post("/v1/forms/act", json=VALID, headers=headers).status_code == 200
    ((_, _, body),) = sent(an)
    assert body["person"].get("languages_spoken") == spoken


def test_docs_gets_send_the_documented_content_type(an):
    """Every call is documented with `Content-Type: application/json`, GETs included."""
    an.get(f"{BASE}/petitions/p-1", json={"identifiers": ["action_network:p-1"]})
    an.get(f"{BASE}/tags", json={"_embedded": {"osdi:tags": [{"name": "volunteer"}]}, "_links": {}})
    checked(an, add_tags=["volunteer"])
    assert an.calls and all(c.request.headers["Content-Type"] == "application/json" for c in an.calls)


def test_docs_tag_pages_end_on_total_pages_though_next_is_always_there(an):
    """Action Network's collections carry `_links.next` on the last page too: reading stops on total_pages."""
    page = {"total_pages": 1, "page": 1, "_embedded": {"osdi:tags": [{"name": "volunteer"}]},
            "_links": {"next": {"href": f"{BASE}/tags?page=2"}}}
    an.get(f"{BASE}/petitions/p-1", json={"identifiers": ["action_network:p-1"]})
    an.get(f"{BASE}/tags", json=page)
    problems, warnings = checked(an, add_tags=["volunteer", "missing"])
    assert any("'missing'" in p for p in problems), (problems, warnings)
    assert [c.request.url for c in an.calls if "/tags" in c.request.url] == [f"{BASE}/tags"]


def test_check_reports_an_unreachable_lookup_as_a_problem_not_a_crash(an):
    import requests as rq

    an.get(f"{BASE}/petitions/p-1", body=rq.ConnectionError("refused"))
    problems, _ = checked(an)
    assert len(problems) == 1 and "could not look the petition up" in problems[0]

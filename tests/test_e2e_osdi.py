"""End to end: the OSDI jQuery plugin's body posted over real HTTP to a form of each provider (sandbox on 127.0.0.1)."""
from __future__ import annotations

import copy
import time

import pytest
import requests

from formrelay import create_app
from formrelay.web.app import start_embedded_worker
from formrelay.sandbox import engageone as fake_engageone
from formrelay.sandbox.ens import API_TOKEN
from tests.conftest import received

pytestmark = pytest.mark.e2e

SITE = "https://campaign.example.org"
# The body the plugin posts (issue 16, facts from its documentation).
PLUGIN_BODY = {
    "person": {"given_name": "Jane", "family_name": "Doe",
               "email_addresses": [{"address": "jane@example.org", "status": "subscribed"}],
               "postal_addresses": [{"address_lines": ["1 Main St"], "locality": "Springfield", "region": "IL",
                                     "postal_code": "62701", "country": "US"}],
               "phone_numbers": [{"number": "12025550123"}],
               "custom_fields": {"member_number": "42"}},
    "add_tags": ["volunteer"],
    "triggers": {"autoresponse": {"enabled": True}},
}
ENS_FIELDS = ("First Name", "Last Name", "Email Address", "Phone Number", "Address 1", "City", "Region", "Postcode",
              "Country")


def plugin_body(**person):
    body = copy.deepcopy(PLUGIN_BODY)
    body["person"].update(person)
    return body


@pytest.fixture
def relay(sandbox, serve, tmp_path):
    an = {"provider": "actionnetwork", "action": "petition", "action_id": "air", "add_tags": ["air"],
          "email_consent_field": "email_opt_in", "custom_fields": {"member_number": {}}}
    app = create_app({
        "relay": {"rate_limit": "", "allowed_origins": [SITE]},
        "providers": {
            "actionnetwork": {"base_url": f"{sandbox.url}/actionnetwork/api/v2"},
            "ngp": {"base_url": f"{sandbox.url}/ngp/v2", "api_key": "sandbox-ngp-api-key"},
            "ens": {"base_url": f"{sandbox.url}/ens/service", "api_token": API_TOKEN},
            "engageone": {"users_url": f"{sandbox.url}/engageone/users", "api_url": f"{sandbox.url}/engageone/api",
                          "client_id": fake_engageone.CLIENT_ID, "secret": fake_engageone.SECRET,
                          "customer_id": fake_engageone.CUSTOMER_ID,
                          "pb_customer_id": fake_engageone.PB_CUSTOMER_ID},
        },
        "forms": {
            "an": an,
            "an-open": {**an, "osdi": {"allow_add_tags": ["Volunteer"], "allow_autoresponse_off": True,
                                       "allow_status": True}},
            "ngp": {"provider": "ngp", "form_id": "demo-petition"},
            "ens": {"provider": "ens", "page_id": 555, "phone_region": "US",
                    "fields": {name: {"required": name == "Email Address"} for name in ENS_FIELDS}},
            "eo": {"provider": "engageone", "campaign": "Toolkit", "communication": "ToolkitMail",
                   "fields": {"first_name": {}, "last_name": {}, "postcode": {}, "member_number": {}}},
        },
        "queue": {"path": str(tmp_path / "q.sqlite3"), "poll_interval": 0.02},
    })
    server = serve(app)
    server.app = app
    return server


def post(relay, slug, body, **headers):
    return requests.post(f"{relay.url}/v1/forms/{slug}", json=body, headers={"Origin": SITE, **headers}, timeout=10)


def test_the_plugins_body_reaches_action_network_once_with_the_person_mapped(relay, sandbox):
    answer = post(relay, "an", PLUGIN_BODY)
    assert answer.status_code == 200 and answer.json() == {"ok": True, "status": "delivered"}
    assert answer.headers["Access-Control-Allow-Origin"] == SITE
    (got,) = received(sandbox, "actionnetwork")
    assert got["path"].endswith("/petitions/air/signatures")
    assert got["keyed"] is False  # a blind post: no OSDI-API-Token header at all
    assert got["body"]["person"] == {
        "given_name": "Jane", "family_name": "Doe",
        # the page's "subscribed" is not the form's consent: this form does not allow the page to decide it
        "email_addresses": [{"address": "jane@example.org"}],
        "phone_numbers": [{"number": "12025550123", "number_type": "Mobile"}],
        "postal_addresses": [{"address_lines": ["1 Main St"], "locality": "Springfield", "region": "IL",
                              "postal_code": "62701", "country": "US"}],
        "custom_fields": {"member_number": "42"},
    }
    # tags and triggers from the config, not from the page
    assert got["body"]["add_tags"] == ["air"] and got["body"]["triggers"] == {"autoresponse": {"enabled": True}}


@pytest.mark.parametrize("typed", ["(202) 555-0123", "+1 202-555-0123", "202.555.0123"])
def test_phone_numbers_are_normalised_for_action_network(relay, sandbox, typed):
    assert post(relay, "an", plugin_body(phone_numbers=[{"number": typed}])).status_code == 200
    (got,) = received(sandbox, "actionnetwork")
    assert got["body"]["person"]["phone_numbers"][0]["number"] == "12025550123"


def test_a_form_that_allows_it_takes_listed_tags_autoresponse_off_and_status(relay, sandbox):
    body = plugin_body()
    body.update(add_tags=["volunteer", "staff", "VOLUNTEER"], remove_tags=["air"],
                triggers={"autoresponse": {"enabled": False}})
    assert post(relay, "an-open", body).status_code == 200
    (got,) = received(sandbox, "actionnetwork")
    assert got["body"]["add_tags"] == ["air", "Volunteer"]  # "staff" is not on the list; the config's spelling
    assert "remove_tags" not in got["body"]  # no allow_remove_tags
    assert "triggers" not in got["body"]
    assert got["body"]["person"]["email_addresses"] == [{"address": "jane@example.org", "status": "subscribed"}]


def test_the_same_body_reaches_an_ngp_form_with_its_fields_mapped(relay, sandbox):
    answer = post(relay, "ngp", plugin_body(phone_numbers=[{"number": "+1 (202) 555-0123"}]))
    assert answer.status_code == 200 and answer.json()["status"] == "delivered"
    (got,) = received(sandbox, "ngp")
    fields = {k: v[0] for k, v in got["fields"].items()}
    assert fields == {"FirstName": "Jane", "LastName": "Doe", "EmailAddress": "jane@example.org",
                      "Phone": "+1 (202) 555-0123", "AddressLine1": "1 Main St", "City": "Springfield",
                      "StateProvince": "IL", "PostalCode": "62701",
                      "YesSignMeUpForUpdatesForBinder": "true", "type": "PetitionForm"}


def test_the_same_body_reaches_an_ens_page_with_its_fields_mapped(relay, sandbox):
    answer = post(relay, "ens", PLUGIN_BODY)
    assert answer.status_code == 200 and answer.json()["status"] == "delivered"
    (got,) = received(sandbox, "ens")
    assert got["body"]["supporter"] == {
        "First Name": "Jane", "Last Name": "Doe", "Email Address": "jane@example.org",
        "Phone Number": "12025550123", "Address 1": "1 Main St", "City": "Springfield", "Region": "IL",
        "Postcode": "62701", "Country": "US"}
    assert got["body"]["suppressAutoResponder"] is False


def test_the_same_body_reaches_an_engageone_send_with_the_data_set_mapped(relay, sandbox):
    answer = post(relay, "eo", PLUGIN_BODY)
    assert answer.status_code == 200 and answer.json()["status"] == "delivered"
    (got,) = received(sandbox, "engageone")
    assert got["body"]["dataset"] == [{"email": "jane@example.org", "first_name": "Jane", "last_name": "Doe",
                                       "postcode": "62701", "member_number": "42"}]


@pytest.mark.parametrize(("slug", "provider", "field"), [
    ("an", "actionnetwork", "email_address"), ("ngp", "ngp", "EmailAddress"), ("ens", "ens", "Email Address"),
    ("eo", "engageone", "email"),
])
def test_a_bad_email_is_422_on_the_forms_field_with_the_osdi_path_and_nothing_is_sent(relay, sandbox, slug, provider,
                                                                                       field):
    answer = post(relay, slug, plugin_body(email_addresses=[{"address": "jane@", "status": "subscribed"}]))
    assert answer.status_code == 422 and answer.json()["status"] == "invalid"
    assert answer.json()["errors"] == {field: ["Enter a valid email address. (at person.email_addresses[0].address)"]}
    assert answer.headers["Access-Control-Allow-Origin"] == SITE  # so the page's script can read it
    assert received(sandbox, provider) == []


def test_a_body_of_the_wrong_shape_is_400_naming_the_path(relay, sandbox):
    answer = post(relay, "an", plugin_body(postal_addresses={"postal_code": "62701"}))
    assert answer.status_code == 400 and answer.json()["status"] == "bad_request"
    assert "person.postal_addresses must be a list of objects" in answer.json()["message"]
    assert received(sandbox, "actionnetwork") == []


def test_preflight_for_json_from_an_allowed_origin(relay):
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    allowed = requests.options(f"{relay.url}/v1/forms/an", headers={"Origin": SITE, **ask}, timeout=5)
    assert allowed.status_code == 204 and allowed.headers["Access-Control-Allow-Origin"] == SITE
    assert "content-type" in allowed.headers["Access-Control-Allow-Headers"].lower()
    other = requests.options(f"{relay.url}/v1/forms/an", headers={"Origin": "https://elsewhere.example", **ask},
                             timeout=5)
    assert "Access-Control-Allow-Origin" not in other.headers


def test_an_outage_queues_it_and_the_worker_delivers_what_the_page_was_allowed(relay, sandbox):
    requests.post(f"{sandbox.url}/_control/fail", json={"provider": "actionnetwork", "status": 503}, timeout=5)
    body = plugin_body()
    body.update(add_tags=["volunteer"], triggers={"autoresponse": {"enabled": False}})
    answer = post(relay, "an-open", body)
    assert answer.status_code == 202 and answer.json()["status"] == "queued"
    worker = start_embedded_worker(relay.app)
    try:
        deadline = time.monotonic() + 10
        while not received(sandbox, "actionnetwork") and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
    (got,) = received(sandbox, "actionnetwork")
    assert got["body"]["add_tags"] == ["air", "Volunteer"] and "triggers" not in got["body"]
    assert got["body"]["person"]["postal_addresses"][0]["postal_code"] == "62701"

"""End to end: the relay and the sandbox NGP on 127.0.0.1, speaking real HTTP."""
from __future__ import annotations

import pytest
import requests

from formrelay import create_app
from tests.conftest import received

pytestmark = pytest.mark.e2e

VALID = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009"}


@pytest.fixture
def relay(sandbox, serve):
    app = create_app({
        "relay": {"allowed_origins": ["https://www.example.org"], "rate_limit": ""},
        "providers": {"ngp": {"base_url": f"{sandbox.url}/ngp/v2"}},
        "forms": {"join": {"provider": "ngp", "form_id": "demo-petition",
                           "success_url": "https://www.example.org/thanks"}},
    })
    return serve(app)


def test_json_submission_reaches_ngp_as_a_form_post(relay, sandbox):
    answer = requests.post(f"{relay.url}/v1/forms/join", json={**VALID, "Phone": "202-555-0123", "_hp": ""}, timeout=5)
    assert answer.status_code == 200
    assert answer.json()["status"] == "delivered" and answer.json()["message"] == "Thank you for signing, friend!"
    (got,) = received(sandbox, "ngp")
    assert got["content_type"].startswith("application/x-www-form-urlencoded")
    assert got["fields"]["type"] == ["PetitionForm"] and got["fields"]["YesSignMeUpForUpdatesForBinder"] == ["true"]
    assert got["fields"]["Phone"] == ["202-555-0123"] and "_hp" not in got["fields"]


def test_browser_form_post_is_redirected(relay, sandbox):
    answer = requests.post(f"{relay.url}/v1/forms/join", data=VALID, allow_redirects=False, timeout=5)
    assert answer.status_code == 303 and answer.headers["Location"] == "https://www.example.org/thanks"
    assert len(received(sandbox, "ngp")) == 1


def test_ngp_field_refusal_comes_back_on_the_field(relay, sandbox):
    answer = requests.post(f"{relay.url}/v1/forms/join", json={**VALID, "FirstName": "Ann2"}, timeout=5)
    assert answer.status_code == 422
    assert answer.json()["errors"] == {"FirstName": ["First name may not contain numbers"]}
    answer = requests.post(f"{relay.url}/v1/forms/join", json={**VALID, "LastName": "Refused"}, timeout=5)
    assert answer.status_code == 502 and answer.json()["message"] == "This submission was refused by the campaign."
    assert received(sandbox, "ngp") == []


def test_outage_is_unavailable_then_recovers(relay, sandbox):
    requests.post(f"{sandbox.url}/_control/fail", json={"provider": "ngp", "status": 503, "count": 1}, timeout=5)
    down = requests.post(f"{relay.url}/v1/forms/join", json=VALID, headers={"Accept": "application/json"}, timeout=5)
    assert down.status_code in (202, 503)  # 202 once the durable queue holds it
    up = requests.post(f"{relay.url}/v1/forms/join", json=VALID, timeout=5)
    assert up.status_code == 200


def test_cors_over_http(relay):
    answer = requests.options(f"{relay.url}/v1/forms/join", headers={
        "Origin": "https://www.example.org", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"}, timeout=5)
    assert answer.status_code == 204 and answer.headers["Access-Control-Allow-Origin"] == "https://www.example.org"

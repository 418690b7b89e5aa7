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
        "providers": {"ngp": {"base_url": f"{sandbox.url}/ngp/v2", "api_key": "sandbox-ngp-api-key"}},
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


@pytest.fixture
def north_america(sandbox, serve, tmp_path):
    app = create_app({
        "relay": {"rate_limit": "", "timeout": 0.5},
        "providers": {"ngp": {"base_url": f"{sandbox.url}/ngp/v2", "api_key": "sandbox-ngp-api-key"}},
        "forms": {slug: {"provider": "ngp", "form_id": f"demo-{slug}"}
                  for slug in ("signup", "closed", "donate", "advocacy", "terse")},
        "queue": {"path": str(tmp_path / "q.sqlite3"), "embedded_worker": False},
    })
    server = serve(app)
    server.app = app
    return server


SIGNUP = {"FirstName": "Ann", "EmailAddress": "ann@example.org"}


def test_a_province_and_a_canadian_postal_code_reach_ngp_with_page_attribution(north_america, sandbox):
    answer = requests.post(f"{north_america.url}/v1/forms/signup", json={
        **SIGNUP, "StateProvince": "ON", "PostalCode": "M5V 2T6",
        "_page_url": "https://www.example.org/join?ms=spring-mail&midqs=M-9"}, timeout=5)
    assert answer.status_code == 200, answer.text
    (got,) = received(sandbox, "ngp")
    assert got["fields"]["PostalCode"] == ["M5V 2T6"] and got["fields"]["StateProvince"] == ["ON"]
    assert got["fields"]["MarketSource"] == ["spring-mail"] and got["fields"]["MailingId"] == ["M-9"]
    wrong = requests.post(f"{north_america.url}/v1/forms/signup", json={
        **SIGNUP, "StateProvince": "TX", "PostalCode": "M5V 2T6"}, timeout=5)
    assert wrong.status_code == 422 and list(wrong.json()["errors"]) == ["PostalCode"]


def test_closed_and_contribution_forms_are_refused_before_anything_is_sent(north_america, sandbox):
    closed = requests.post(f"{north_america.url}/v1/forms/closed", json={**SIGNUP, "PostalCode": "20009"}, timeout=5)
    assert closed.status_code == 503 and "closed" in closed.json()["message"]
    assert requests.get(f"{north_america.url}/v1/forms/donate", timeout=5).status_code == 503
    assert received(sandbox, "ngp") == []


def test_an_answer_without_result_code_or_errors_is_delivered(north_america, sandbox):
    answer = requests.post(f"{north_america.url}/v1/forms/terse", json={**SIGNUP, "PostalCode": "20009"}, timeout=5)
    assert answer.status_code == 200 and answer.json()["status"] == "delivered"
    assert len(received(sandbox, "ngp")) == 1


def test_an_advocacy_form_cut_off_mid_flight_is_held(north_america, sandbox):
    requests.post(f"{sandbox.url}/_control/delay", json={"provider": "ngp", "seconds": 1.5}, timeout=5)
    answer = requests.post(f"{north_america.url}/v1/forms/advocacy", json={**SIGNUP, "PostalCode": "20009"},
                           timeout=10)
    assert answer.status_code == 202
    requests.post(f"{sandbox.url}/_control/recover", timeout=5)
    from formrelay.delivery.jobs import DEAD
    jobs = north_america.app.extensions["formrelay"].store.jobs()
    assert [j.state for j in jobs] == [DEAD] and "held" in jobs[0].last_error


def test_docs_the_sandbox_refuses_a_post_without_basic_auth_or_type(sandbox):
    """As NGP documents: the key on every call (Basic auth) and `type` in every submission."""
    url = f"{sandbox.url}/ngp/v2/forms/demo-petition"
    keyless = requests.post(url, data={**VALID, "type": "PetitionForm"}, timeout=5)
    typeless = requests.post(url, data=VALID, auth=("apiuser", "sandbox-ngp-api-key"), timeout=5)
    good = requests.post(url, data={**VALID, "type": "PetitionForm"}, auth=("apiuser", "sandbox-ngp-api-key"), timeout=5)
    assert (keyless.status_code, typeless.status_code, good.status_code) == (401, 400, 200)
    assert typeless.json()["errors"][0]["properties"] == ["type"]
    assert len(received(sandbox, "ngp")) == 1


def test_a_refused_key_is_answered_queued_and_kept_waiting(sandbox, serve, tmp_path):
    from formrelay.sandbox.ngp import REFUSED_KEY

    app = create_app({
        "relay": {"rate_limit": ""},
        "providers": {"ngp": {"base_url": f"{sandbox.url}/ngp/v2", "api_key": REFUSED_KEY}},
        "forms": {"join": {"provider": "ngp", "form_id": "demo-petition"}},
        "queue": {"path": str(tmp_path / "q.sqlite3"), "embedded_worker": False},
    })
    relay = serve(app)
    answer = requests.post(f"{relay.url}/v1/forms/join", json=VALID, timeout=5)
    assert answer.status_code == 202 and answer.json()["status"] == "queued"
    (job,) = app.extensions["formrelay"].store.jobs()
    assert job.state == "pending" and job.attempts == 0 and "api_key" in job.last_error
    assert REFUSED_KEY not in job.last_error and received(sandbox, "ngp") == []

"""End to end: the relay and the sandbox ENS on 127.0.0.1, speaking real HTTP."""
from __future__ import annotations

import pytest
import requests

from formrelay import create_app
from formrelay.sandbox.ens import API_TOKEN
from tests.conftest import received

pytestmark = pytest.mark.e2e
VALID = {"First Name": "Ann", "Email Address": "ann@example.org", "Postcode": "SW1A 1AA"}


def ens_relay(sandbox, serve, tmp_path, **form):
    return serve(create_app({
        "relay": {"rate_limit": ""},
        "providers": {"ens": {"base_url": f"{sandbox.url}/ens/service", "api_token": API_TOKEN}},
        "forms": {"mp": {"provider": "ens", "page_id": 12345, "campaign_references": ["spring"],
                         "fields": {"First Name": {"required": True}, "Email Address": {"required": True},
                                    "Postcode": {}, "Opt-in": {}}, **form}},
        "queue": {"path": str(tmp_path / "q.sqlite3")},
    }))


@pytest.fixture
def relay(sandbox, serve, tmp_path):
    return ens_relay(sandbox, serve, tmp_path, origin_source="relay-web", txn_from_page={"txn3": "utm_campaign"})


def test_submission_is_processed_with_one_session(relay, sandbox):
    for i in range(3):
        answer = requests.post(f"{relay.url}/v1/forms/mp", json={**VALID, "Opt-in": "on", "utm_campaign": "air"}, timeout=5)
        assert answer.status_code == 200 and answer.json()["status"] == "delivered"
    got = received(sandbox, "ens")
    assert len(got) == 3
    assert got[0]["body"]["supporter"]["questions"] == {"Opt-in": "Y"}
    assert got[0]["body"]["txn3"] == "air" and got[0]["body"]["txn6"] == "spring"
    assert not {"txn1", "txn2", "txn4", "txn5"} & set(got[0]["body"])
    # documented: originSource in the process body; no second call per submission
    assert got[0]["body"]["originSource"] == "relay-web"
    assert received(sandbox, "ens-originsource") == []
    calls = requests.get(f"{sandbox.url}/_control/calls", timeout=5).json()
    assert calls["ens:authenticate"] == 1


def test_origin_source_table_makes_the_separate_call(sandbox, serve, tmp_path):
    relay = ens_relay(sandbox, serve, tmp_path, origin_source={"code": "web", "category": "relay"})
    answer = requests.post(f"{relay.url}/v1/forms/mp", json={**VALID, "utm_campaign": "air"}, timeout=5)
    assert answer.status_code == 200
    (got,) = received(sandbox, "ens")
    assert "originSource" not in got["body"] and "txn3" not in got["body"]  # no UTM into txn unless configured
    (origin,) = received(sandbox, "ens-originsource")
    assert origin["body"] == {"code": "web", "category": "relay"}


def test_an_unticked_opt_in_is_left_out(relay, sandbox):
    answer = requests.post(f"{relay.url}/v1/forms/mp", json={**VALID, "Opt-in": False}, timeout=5)
    assert answer.status_code == 200
    (got,) = received(sandbox, "ens")
    assert "questions" not in got["body"]["supporter"]


def test_expired_session_and_outage(relay, sandbox):
    requests.post(f"{sandbox.url}/_control/fail", json={"provider": "ens", "status": 401}, timeout=5)
    assert requests.post(f"{relay.url}/v1/forms/mp", json=VALID, timeout=5).status_code == 200
    requests.post(f"{sandbox.url}/_control/fail", json={"provider": "ens", "status": 503, "count": 1}, timeout=5)
    assert requests.post(f"{relay.url}/v1/forms/mp", json=VALID, timeout=5).status_code == 202
    refused = requests.post(f"{relay.url}/v1/forms/mp", json={**VALID, "Email Address": "x@refused.example"}, timeout=5)
    assert refused.status_code == 502 and refused.json()["status"] == "rejected"


def test_the_hourly_api_budget_keeps_the_relay_below_ens_own_limit(sandbox, serve, tmp_path):
    """The sandbox answers the documented API-limit 401 beyond 10 calls; with api_budget = 10/hour the relay
    never reaches it: the authenticate and definition lookups count, later submissions are queued (202)."""
    requests.post(f"{sandbox.url}/_control/limit", json={"provider": "ens", "calls": 10}, timeout=5)
    relay = serve(create_app({
        "relay": {"rate_limit": ""},
        "providers": {"ens": {"base_url": f"{sandbox.url}/ens/service", "api_token": API_TOKEN,
                              "api_budget": "10/hour"}},
        "forms": {"mp": {"provider": "ens", "page_id": 12345,
                         "fields": {"First Name": {"required": True}, "Email Address": {"required": True},
                                    "Postcode": {}, "Opt-in": {}}}},
        "queue": {"path": str(tmp_path / "q.sqlite3"), "embedded_worker": False},
    }))
    codes = [requests.post(f"{relay.url}/v1/forms/mp", json=VALID, timeout=5).status_code for _ in range(7)]
    # authenticate, fields, questions, one question, the page: 5 calls, then 5 page processes
    assert codes == [200] * 5 + [202] * 2
    calls = requests.get(f"{sandbox.url}/_control/calls", timeout=5).json()
    assert calls["ens:limited"] == 10 and len(received(sandbox, "ens")) == 5


def test_without_the_budget_ens_own_limit_is_met_and_submissions_wait(sandbox, serve, tmp_path):
    requests.post(f"{sandbox.url}/_control/limit", json={"provider": "ens", "calls": 6}, timeout=5)
    relay = serve(create_app({
        "relay": {"rate_limit": ""},
        "providers": {"ens": {"base_url": f"{sandbox.url}/ens/service", "api_token": API_TOKEN}},
        "forms": {"mp": {"provider": "ens", "page_id": 12345, "fields": {"Email Address": {"required": True}}}},
        "queue": {"path": str(tmp_path / "q.sqlite3"), "embedded_worker": False},
    }))
    codes = [requests.post(f"{relay.url}/v1/forms/mp", json={"Email Address": "a@example.org"}, timeout=5).status_code
             for _ in range(4)]
    assert codes[:2] == [200, 200] and codes[2:] == [202, 202]

"""End to end: the relay and the sandbox EngageOne on 127.0.0.1, speaking real HTTP, follow-up included."""
from __future__ import annotations

import time

import pytest
import requests

from formrelay import create_app
from formrelay.web.app import start_embedded_worker
from formrelay.sandbox import engageone as fake
from tests.conftest import received

pytestmark = pytest.mark.e2e


def test_transactional_send_and_a_followup_after_an_ngp_form(sandbox, serve, tmp_path):
    app = create_app({
        "relay": {"rate_limit": ""},
        "providers": {
            "ngp": {"base_url": f"{sandbox.url}/ngp/v2", "api_key": "sandbox-ngp-api-key"},
            "engageone": {"users_url": f"{sandbox.url}/engageone/users", "api_url": f"{sandbox.url}/engageone/api",
                          "client_id": fake.CLIENT_ID, "secret": fake.SECRET, "customer_id": fake.CUSTOMER_ID,
                          "pb_customer_id": fake.PB_CUSTOMER_ID},
        },
        "forms": {
            "toolkit": {"provider": "engageone", "campaign": "Toolkit", "communication": "ToolkitMail",
                        "email_json_path": "customer_email"},
            "join": {"provider": "ngp", "form_id": "demo-petition",
                     "followup": {"campaign": "Thanks", "communication": "ThanksMail",
                                  "dataset": {"first_name": "FirstName"}}},
        },
        "queue": {"path": str(tmp_path / "q.sqlite3"), "poll_interval": 0.02},
    })
    relay = serve(app)
    worker = start_embedded_worker(app)
    try:
        answer = requests.post(f"{relay.url}/v1/forms/toolkit", json={"email": "ann@example.org"}, timeout=5)
        assert answer.json() == {"ok": True, "status": "delivered"}
        requests.post(f"{sandbox.url}/_control/fail", json={"provider": "engageone", "status": 401}, timeout=5)
        answer = requests.post(f"{relay.url}/v1/forms/join", json={
            "FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009"}, timeout=5)
        assert answer.json()["status"] == "delivered"
        deadline = time.monotonic() + 10
        while len(received(sandbox, "engageone")) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
    sends = received(sandbox, "engageone")
    assert [s["campaign"] for s in sends] == ["Toolkit", "Thanks"]
    # the documented email_json_path names the record key that carries the address
    assert sends[0]["body"]["dataset"] == [{"customer_email": "ann@example.org"}]
    assert sends[1]["body"]["dataset"] == [{"email": "ann@example.org", "first_name": "Ann"}]
    assert len(received(sandbox, "ngp")) == 1
    calls = requests.get(f"{sandbox.url}/_control/calls", timeout=5).json()
    assert calls["engageone:authenticate"] == 2  # the first token, and one refresh after the 401


def test_a_wrong_pb_customer_id_keeps_the_send_for_later(sandbox, serve, tmp_path):
    """The sandbox answers 403 to a company header that is not the documented eocm- name: queued, not refused."""
    app = create_app({
        "relay": {"rate_limit": ""},
        "providers": {"engageone": {"users_url": f"{sandbox.url}/engageone/users",
                                    "api_url": f"{sandbox.url}/engageone/api", "client_id": fake.CLIENT_ID,
                                    "secret": fake.SECRET, "customer_id": fake.CUSTOMER_ID}},
        "forms": {"toolkit": {"provider": "engageone", "campaign": "Toolkit", "communication": "ToolkitMail"}},
        "queue": {"path": str(tmp_path / "q.sqlite3"), "embedded_worker": False},
    })
    relay = serve(app)
    answer = requests.post(f"{relay.url}/v1/forms/toolkit", json={"email": "ann@example.org"}, timeout=5)
    assert answer.status_code == 202 and answer.json()["status"] == "queued"
    assert received(sandbox, "engageone") == []


def test_check_warns_about_a_pb_customer_id_without_eocm_but_still_passes(sandbox, tmp_path):
    """`formrelay check` for real: the warning is printed and does not fail the check (the sandbox answers)."""
    from click.testing import CliRunner

    from formrelay.cli import main

    path = tmp_path / "formrelay.toml"
    path.write_text(
        f'[providers.engageone]\nusers_url = "{sandbox.url}/engageone/users"\napi_url = "{sandbox.url}/engageone/api"\n'
        f'client_id = "{fake.CLIENT_ID}"\nsecret = "{fake.SECRET}"\ncustomer_id = "{fake.CUSTOMER_ID}"\n'
        f'[queue]\npath = "{tmp_path / "q.sqlite3"}"\n'
        '[forms.toolkit]\nprovider = "engageone"\ncampaign = "Toolkit"\ncommunication = "ToolkitMail"\n')
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "warning: PB-Customer-Id 'sa11bb'" in result.output and "eocm-" in result.output
    assert fake.SECRET not in result.output


def test_an_unknown_campaign_is_queued_and_held_with_its_reason_in_queue_list(sandbox, serve, tmp_path):
    """A 404 on /campaigns/v2/{campaign}/transactional names a campaign the account lacks: 202 queued (never 502),
    held for the operator, and `formrelay queue list` says which campaign and communication were not found."""
    import json as jsonlib

    from click.testing import CliRunner

    from formrelay.cli import main

    config = tmp_path / "formrelay.toml"
    config.write_text(f'''
[relay]
rate_limit = ""
[queue]
path = "{tmp_path / 'q.sqlite3'}"
embedded_worker = false
[providers.engageone]
users_url = "{sandbox.url}/engageone/users"
api_url = "{sandbox.url}/engageone/api"
client_id = "{fake.CLIENT_ID}"
secret = "{fake.SECRET}"
customer_id = "{fake.CUSTOMER_ID}"
pb_customer_id = "{fake.PB_CUSTOMER_ID}"
[forms.toolkit]
provider = "engageone"
campaign = "MissingCampaign"
communication = "ToolkitMail"
''')
    from formrelay.core.config import load_config

    relay = serve(create_app(load_config(str(config))))
    answer = requests.post(f"{relay.url}/v1/forms/toolkit", json={"email": "ann@example.org"}, timeout=5)
    assert answer.status_code == 202 and answer.json()["status"] == "queued"
    listed = CliRunner().invoke(main, ["queue", "list", "--config", str(config), "--json"])
    assert listed.exit_code == 0, listed.output
    (job,) = jsonlib.loads(listed.output)["jobs"]
    assert job["state"] == "dead" and "'MissingCampaign'" in job["last_error"] and "held for an operator" in job["last_error"]
    assert received(sandbox, "engageone") == []

"""End to end over real HTTP: one form, several destinations (another CRM, a signed webhook), `formrelay serve`."""
from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from flask import Flask, request
from standardwebhooks import Webhook

from formrelay import create_app
from formrelay.web.app import start_embedded_worker
from formrelay.sandbox import ServerThread
from formrelay.sandbox import engageone as fake_engageone
from formrelay.sandbox.ens import API_TOKEN as ENS_TOKEN
from tests.conftest import free_port, received, wait_until_serving

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
HOOK_PATH = "/hooks/formrelay-7f3a9c"  # a path that is as good as a password: it must never be logged


def wait_for(predicate, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


class Receiver:
    """A webhook receiver on 127.0.0.1: records what it was sent (headers and raw body), answers 204."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        app = Flask("receiver")

        @app.post(HOOK_PATH)
        def receive():
            with self.lock:
                self.got.append((dict(request.headers), request.get_data()))
            return "", 204

        self.app = app
        self.server: ServerThread | None = None

    def start(self) -> None:
        self.server = ServerThread(self.app, port=self.port).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


@pytest.fixture
def receiver():
    made = Receiver(free_port())  # nothing listens there yet: the receiver is down
    yield made
    made.stop()


def metric(url: str, name: str, **labels: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_ngp_form_with_action_network_also_and_a_webhook_whose_receiver_comes_back(tmp_path, sandbox, receiver):
    config = tmp_path / "relay.toml"
    config.write_text(f"""
[relay]
rate_limit = ""

[logging]
level = "DEBUG"   # the most a log can say: still no secret, no webhook path

[providers.ngp]
base_url = "{sandbox.url}/ngp/v2"
api_key = "sandbox-ngp-api-key"

[providers.actionnetwork]
base_url = "{sandbox.url}/actionnetwork/api/v2"

[forms.join]
provider = "ngp"
form_id = "demo-petition"
also = ["join-an"]

[[forms.join.webhooks]]
url = "http://127.0.0.1:{receiver.port}{HOOK_PATH}"
secret = "${{FORMRELAY_WEBHOOK_SECRET}}"
name = "crm-sync"

[forms.join-an]
provider = "actionnetwork"
action = "petition"
action_id = "clean-air"

[queue]
path = "{tmp_path / 'q.sqlite3'}"
backoff_base = 0.05
backoff_cap = 0.3
poll_interval = 0.05
""")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "relay.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "formrelay.cli", "serve", "--config", str(config), "--port", str(port)],
            cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
            env={**os.environ, "FORMRELAY_WEBHOOK_SECRET": SECRET},
        )
        try:
            wait_until_serving(url, proc, 20)
            # Action Network is briefly down too: its job retries on its own, NGP is never asked again.
            requests.post(f"{sandbox.url}/_control/fail", json={"provider": "actionnetwork", "status": 503,
                                                                "count": 2}, timeout=5)
            body = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009",
                    "utm_campaign": "air"}
            started = time.monotonic()
            answer = requests.post(f"{url}/v1/forms/join", json=body, headers={"Idempotency-Key": "sig-1"}, timeout=10)
            took = time.monotonic() - started
            assert answer.status_code == 200 and answer.json()["status"] == "delivered"
            assert took < 5  # answered at once: neither AN nor the receiver is waited for

            assert wait_for(lambda: len(received(sandbox, "actionnetwork")) >= 1)
            (signed,) = received(sandbox, "actionnetwork")
            person = signed["body"]["person"]
            assert signed["path"].endswith("/petitions/clean-air/signatures")
            assert (person["given_name"], person["family_name"]) == ("Ann", "Lee")
            assert person["email_addresses"][0]["address"] == "ann@example.org"
            assert person["postal_addresses"][0]["postal_code"] == "20009"

            # the receiver is down: the webhook job is tried, and tried again, and waits
            assert wait_for(lambda: metric(url, "formrelay_destination_attempts_total",
                                           destination="webhook:crm-sync", result="not now") >= 2)
            assert receiver.got == []
            receiver.start()
            assert wait_for(lambda: len(receiver.got) >= 1)

            # a repeat of the submission (same key) repeats no destination
            again = requests.post(f"{url}/v1/forms/join", json=body, headers={"Idempotency-Key": "sig-1"}, timeout=10)
            assert again.json() == answer.json()
            time.sleep(1.0)  # would anything follow?
            listed = subprocess.run([sys.executable, "-m", "formrelay.cli", "queue", "list", "--config", str(config)],
                                    cwd=ROOT, capture_output=True, text=True, timeout=60,
                                    env={**os.environ, "FORMRELAY_WEBHOOK_SECRET": SECRET})
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    assert len(received(sandbox, "ngp")) == 1
    assert len(received(sandbox, "actionnetwork")) == 1
    calls = requests.get(f"{sandbox.url}/_control/calls", timeout=5).json()
    assert calls["actionnetwork:helper"] == 3  # two 503s, then the signature: the webhook's retries added none
    (headers, raw), = receiver.got
    event = Webhook(SECRET).verify(raw, headers)
    assert event["type"] == "submission.delivered"
    assert event["data"]["form"] == "join" and event["data"]["outcome"]["status"] == "delivered"
    assert event["data"]["fields"]["EmailAddress"] == "ann@example.org"
    assert event["data"]["context"] == {"utm_campaign": "air"}
    assert re.fullmatch(r"msg_[0-9a-f]{32}", headers["Webhook-Id"])

    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith(event["data"]["submission_id"] + " "))
    assert "also:join-an done" in line and "webhook:crm-sync (delivered) done" in line

    logged = log_path.read_text()
    assert "webhook crm-sync: connection failed" in logged  # the failing attempts were logged...
    for secret in (SECRET, SECRET.removeprefix("whsec_"), HOOK_PATH):
        assert secret not in logged + listed.stdout + listed.stderr + answer.text + str(answer.headers)


def test_ens_page_with_an_engageone_also_gets_the_person_mapped(sandbox, serve, tmp_path):
    app = create_app({
        "relay": {"rate_limit": ""},
        "providers": {
            "ens": {"base_url": f"{sandbox.url}/ens/service", "api_token": ENS_TOKEN},
            "engageone": {"users_url": f"{sandbox.url}/engageone/users", "api_url": f"{sandbox.url}/engageone/api",
                          "client_id": fake_engageone.CLIENT_ID, "secret": fake_engageone.SECRET,
                          "customer_id": fake_engageone.CUSTOMER_ID,
                          "pb_customer_id": fake_engageone.PB_CUSTOMER_ID},
        },
        "forms": {
            "mp": {"provider": "ens", "page_id": 12345, "also": ["welcome"],
                   "fields": {"First Name": {"required": True}, "Last Name": {}, "Email Address": {"required": True},
                              "Postcode": {}}},
            "welcome": {"provider": "engageone", "campaign": "Welcome", "communication": "WelcomeMail",
                        "fields": {"first_name": {"required": True}, "last_name": {}, "postcode": {}}},
        },
        "queue": {"path": str(tmp_path / "q.sqlite3"), "poll_interval": 0.02},
    })
    relay = serve(app)
    worker = start_embedded_worker(app)
    try:
        answer = requests.post(f"{relay.url}/v1/forms/mp", json={
            "First Name": "Ann", "Last Name": "Lee", "Email Address": "ann@example.org", "Postcode": "SW1A 1AA"},
            timeout=10)
        assert answer.status_code == 200 and answer.json()["status"] == "delivered"
        assert wait_for(lambda: len(received(sandbox, "engageone")) >= 1, 10)
        time.sleep(0.3)
    finally:
        worker.stop()
    assert len(received(sandbox, "ens")) == 1
    (sent,) = received(sandbox, "engageone")
    assert sent["campaign"] == "Welcome"
    assert sent["body"]["dataset"] == [{"email": "ann@example.org", "first_name": "Ann", "last_name": "Lee",
                                        "postcode": "SW1A 1AA"}]


def test_a_queued_ngp_submission_fans_out_when_the_queue_delivers_it(sandbox, serve, tmp_path, receiver):
    receiver.start()
    app = create_app({
        "relay": {"rate_limit": ""},
        "providers": {"ngp": {"base_url": f"{sandbox.url}/ngp/v2", "api_key": "sandbox-ngp-api-key"},
                      "actionnetwork": {"base_url": f"{sandbox.url}/actionnetwork/api/v2"}},
        "forms": {
            "join": {"provider": "ngp", "form_id": "demo-petition", "also": ["join-an"],
                     "webhooks": [{"url": f"http://127.0.0.1:{receiver.port}{HOOK_PATH}", "secret": SECRET,
                                   "include_personal_data": False}]},
            "join-an": {"provider": "actionnetwork", "action": "petition", "action_id": "clean-air"},
        },
        "queue": {"path": str(tmp_path / "q.sqlite3"), "poll_interval": 0.02, "backoff_base": 0.05,
                  "backoff_cap": 0.2},
    })
    relay = serve(app)
    requests.get(f"{relay.url}/v1/forms/join", timeout=10)  # the definition, fetched while NGP still answers
    requests.post(f"{sandbox.url}/_control/fail", json={"provider": "ngp", "status": 503, "count": 1}, timeout=5)
    answer = requests.post(f"{relay.url}/v1/forms/join", json={
        "FirstName": "Bo", "LastName": "Ng", "EmailAddress": "bo@example.org", "PostalCode": "20010"}, timeout=10)
    assert answer.status_code == 202 and answer.json()["status"] == "queued"
    assert received(sandbox, "actionnetwork") == []  # nothing goes on before NGP has it
    worker = start_embedded_worker(app)
    try:
        assert wait_for(lambda: len(received(sandbox, "actionnetwork")) >= 1 and len(receiver.got) >= 2, 15)
        time.sleep(0.3)
    finally:
        worker.stop()
    assert len(received(sandbox, "ngp")) == 1 and len(received(sandbox, "actionnetwork")) == 1
    person = received(sandbox, "actionnetwork")[0]["body"]["person"]
    assert person["email_addresses"][0]["address"] == "bo@example.org"
    events = [Webhook(SECRET).verify(raw, headers) for headers, raw in receiver.got]
    assert sorted(e["type"] for e in events) == ["submission.delivered", "submission.queued"]
    assert all("fields" not in e["data"] and b"bo@example.org" not in raw for e, (_, raw) in zip(events, receiver.got))
    assert len({e["data"]["submission_id"] for e in events}) == 1

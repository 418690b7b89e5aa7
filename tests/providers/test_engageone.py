"""EngageOne: JWT reuse and expiry, 401 refresh, headers and body, errors, secrets, and follow-up isolation."""
from __future__ import annotations

import base64
import json
import logging
import threading
import time

import pytest
import responses

from formrelay import create_app
from formrelay.core.config import ConfigError
from formrelay.providers.engageone import jwt_expiry
from formrelay.delivery.jobs import DEAD, DONE
from tests.conftest import NGP_FORM_URL, NGP_SUCCESS, base_config

USERS = "https://users.e1.test"
API = "https://api.e1.test"
SECRET = "e1-secret-9f8e7d6c5b"
SEND_URL = f"{API}/campaigns/v2/ToolkitDownload/transactional"
FOLLOW_URL = f"{API}/campaigns/v2/Thanks/transactional"


def jwt(lifetime: float, n: int = 0) -> str:
    enc = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
    now = time.time()
    return f"{enc({'alg': 'HS256'})}.{enc({'iat': int(now), 'exp': now + lifetime, 'n': n})}.sig{n}"


PROVIDER = {"users_url": USERS, "api_url": API, "client_id": "sa11bb.x@communicate.engageone.co",
            "secret": SECRET, "customer_id": "sa11bb"}


def e1_config(tmp_path, **form):
    return {
        "relay": {"rate_limit": ""},
        "providers": {"engageone": PROVIDER},
        "forms": {"toolkit": {"provider": "engageone", "campaign": "ToolkitDownload", "communication": "Toolkit",
                              "sender": "team@example.org", "subject": "Your toolkit",
                              "fields": {"first_name": {"required": True, "label": "First name"},
                                         "size": {"type": "select", "options": ["S", "M"]}}, **form}},
        "queue": {"path": str(tmp_path / "q.sqlite3"), "embedded_worker": False, "backoff_base": 0.001,
                  "backoff_cap": 0.002},
    }


class FakeE1:
    def __init__(self, rsps, lifetime: float = 3600) -> None:
        self.rsps = rsps
        self.lifetime = lifetime
        self.issued: list[str] = []
        self.delay = 0.0
        self.lock = threading.Lock()
        rsps.add_callback(responses.POST, f"{USERS}/authenticate", callback=self.authenticate)

    def authenticate(self, request):
        time.sleep(self.delay)
        with self.lock:
            token = jwt(self.lifetime, len(self.issued))
            self.issued.append(token)
        return 200, {}, json.dumps(token)

    def sends(self, url=SEND_URL):
        return [c for c in self.rsps.calls if c.request.url == url]


@pytest.fixture
def e1():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield FakeE1(rsps)


VALID = {"email": "Ann@Example.org", "first_name": "Ann", "size": "M"}


def test_schema_requires_email_and_declared_fields(e1, tmp_path):
    client = create_app(e1_config(tmp_path)).test_client()
    fields = {f["name"]: f for f in client.get("/v1/forms/toolkit").get_json()["fields"]}
    assert fields["email"]["required"] and fields["email"]["type"] == "email"
    assert fields["size"]["options"] == [{"value": "S", "label": "S"}, {"value": "M", "label": "M"}]
    errors = client.post("/v1/forms/toolkit", json={"size": "XL"}).get_json()["errors"]
    assert set(errors) == {"email", "first_name", "size"}


def test_send_body_headers_and_token_reuse(e1, tmp_path):
    e1.rsps.post(SEND_URL, json={"send_id": "s-1"})
    client = create_app(e1_config(tmp_path)).test_client()
    for _ in range(3):
        answer = client.post("/v1/forms/toolkit", json=VALID)
        assert answer.get_json() == {"ok": True, "status": "delivered"}  # the send_id stays private
    assert len(e1.issued) == 1
    auth_body = json.loads(e1.rsps.calls[0].request.body)
    assert auth_body == {"client_id": PROVIDER["client_id"], "secret": SECRET, "customer_id": "sa11bb"}
    send = e1.sends()[0].request
    assert send.headers["Authorization"] == f"Bearer {e1.issued[0]}" and send.headers["PB-Customer-Id"] == "sa11bb"
    assert json.loads(send.body) == {
        "communication": "Toolkit", "dataset": [{"email": "Ann@example.org", "first_name": "Ann", "size": "M"}],
        "email_json_path": "email", "ignore_missing_fields": True, "sender": "team@example.org",
        "subject": "Your toolkit"}


def test_token_is_refreshed_before_its_exp_claim(e1, tmp_path):
    e1.lifetime = 2  # the margin is capped at half the lifetime, so refresh comes after ~1 s
    e1.rsps.post(SEND_URL, json={"send_id": "s"})
    app = create_app(e1_config(tmp_path))
    app.test_client().post("/v1/forms/toolkit", json=VALID)
    time.sleep(1.1)  # past the refresh point, here and in the shared store
    app.test_client().post("/v1/forms/toolkit", json=VALID)
    assert len(e1.issued) == 2
    assert jwt_expiry(e1.issued[0]) == pytest.approx(time.time() + 2, abs=5)


def test_concurrent_first_use_authenticates_once(e1, tmp_path):
    e1.delay = 0.2
    provider = create_app(e1_config(tmp_path)).extensions["formrelay"].providers["engageone"]
    got = []
    threads = [threading.Thread(target=lambda: got.append(provider.token())) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(e1.issued) == 1 and set(got) == {e1.issued[0]}


def test_a_401_refreshes_once(e1, tmp_path):
    answers = iter([(401, {}, "{}"), (200, {}, json.dumps({"send_id": "s"}))])
    e1.rsps.add_callback(responses.POST, SEND_URL, callback=lambda r: next(answers))
    answer = create_app(e1_config(tmp_path)).test_client().post("/v1/forms/toolkit", json=VALID)
    assert answer.status_code == 200 and len(e1.issued) == 2
    assert e1.sends()[1].request.headers["Authorization"] == f"Bearer {e1.issued[1]}"


@pytest.mark.parametrize(("status", "code"), [(500, 202), (503, 202), (429, 202), (400, 502), (404, 202)])
def test_errors(e1, tmp_path, status, code):
    e1.rsps.post(SEND_URL, status=status, json={"message": "nope"})
    answer = create_app(e1_config(tmp_path)).test_client().post("/v1/forms/toolkit", json=VALID)
    assert answer.status_code == code


def test_the_jwt_and_the_secret_never_show(e1, tmp_path, caplog):
    e1.rsps.post(SEND_URL, status=400, body=f"bad request for {SECRET}")
    with caplog.at_level(logging.DEBUG):
        answer = create_app(e1_config(tmp_path)).test_client().post("/v1/forms/toolkit", json=VALID)
        logging.getLogger("formrelay.test").error("token %s secret %s", e1.issued[0], SECRET)
    shown = answer.get_data(as_text=True) + str(answer.headers)
    assert SECRET not in shown and e1.issued[0] not in shown
    assert SECRET not in caplog.text and e1.issued[0] not in caplog.text


# -- follow-ups for any form -------------------------------------------------------------------------

@pytest.fixture
def with_followup(e1, tmp_path, ngp_definition):
    raw = base_config()
    raw["providers"]["engageone"] = PROVIDER
    raw["forms"]["join"]["followup"] = {"campaign": "Thanks", "communication": "ThanksMail",
                                        "dataset": {"name": "FirstName"}}
    raw["queue"] = {"path": str(tmp_path / "q.sqlite3"), "embedded_worker": False, "backoff_base": 0.001,
                    "backoff_cap": 0.002}
    e1.rsps.get(NGP_FORM_URL, json=ngp_definition)
    e1.rsps.post(NGP_FORM_URL, json=NGP_SUCCESS)
    return create_app(raw)


JOIN = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009"}


def drain(relay):
    worker = relay.worker()
    for _ in range(20):
        time.sleep(0.005)
        worker.run_once(limit=10)


def test_followup_is_sent_after_the_primary_delivery(e1, with_followup):
    e1.rsps.post(FOLLOW_URL, json={"send_id": "f"})
    answer = with_followup.test_client().post("/v1/forms/join", json=JOIN)
    assert answer.status_code == 200
    relay = with_followup.extensions["formrelay"]
    drain(relay)
    (send,) = e1.sends(FOLLOW_URL)
    assert json.loads(send.request.body)["dataset"] == [{"email": "ann@example.org", "name": "Ann"}]
    assert {j.target: j.state for j in relay.store.jobs()} == {"followup": DONE}


def test_a_failing_followup_never_fails_or_repeats_the_primary(e1, with_followup):
    answers = iter([(503, {}, "{}"), (503, {}, "{}"), (200, {}, json.dumps({"send_id": "f"}))])
    e1.rsps.add_callback(responses.POST, FOLLOW_URL, callback=lambda r: next(answers))
    answer = with_followup.test_client().post("/v1/forms/join", json=JOIN)
    assert answer.status_code == 200 and answer.get_json()["status"] == "delivered"
    drain(with_followup.extensions["formrelay"])
    primary = [c for c in e1.rsps.calls if c.request.url == NGP_FORM_URL and c.request.method == "POST"]
    assert len(primary) == 1 and len(e1.sends(FOLLOW_URL)) == 3


def test_followup_config_needs_engageone(tmp_path):
    raw = base_config()
    raw["forms"]["join"]["followup"] = {"campaign": "Thanks", "communication": "ThanksMail"}
    with pytest.raises(ConfigError, match="engageone"):
        create_app(raw)


def test_an_uncertain_send_is_held_not_repeated(e1, tmp_path):
    import requests as rq

    e1.rsps.post(SEND_URL, body=rq.ReadTimeout("slow"))
    app = create_app(e1_config(tmp_path))
    assert app.test_client().post("/v1/forms/toolkit", json=VALID).status_code == 202
    (job,) = app.extensions["formrelay"].store.jobs()
    assert job.state == DEAD and "held" in job.last_error


# -- second pass against the documentation (issue 19) -------------------------------------------------

def test_docs_transactional_example_email_json_path_customer_email_carries_the_address(e1, tmp_path):
    """Documented send (API Examples): `email_json_path: "customer_email"` reads the address from that key of
    each dataset record, so the form's `email` must travel as `customer_email`, never under `email`."""
    e1.rsps.post(SEND_URL, json={"send_id": "s-1"})
    client = create_app(e1_config(tmp_path, email_json_path="customer_email")).test_client()
    assert client.post("/v1/forms/toolkit", json=VALID).status_code == 200
    body = json.loads(e1.sends()[0].request.body)
    assert body["email_json_path"] == "customer_email"
    (record,) = body["dataset"]
    assert record["customer_email"] == "Ann@example.org" and "email" not in record


def test_docs_pb_customer_id_is_its_own_setting(e1, tmp_path):
    """Documented: PB-Customer-Id is the company name prefixed with `eocm-`, which is not the authenticate body's
    customer_id (the API Examples show `sa11bb` there): both are sent, each where it belongs."""
    e1.rsps.post(SEND_URL, json={"send_id": "s-1"})
    raw = e1_config(tmp_path)
    raw["providers"]["engageone"] = {**PROVIDER, "pb_customer_id": "eocm-Clean-Air-Trust"}
    assert create_app(raw).test_client().post("/v1/forms/toolkit", json=VALID).status_code == 200
    assert json.loads(e1.rsps.calls[0].request.body)["customer_id"] == "sa11bb"
    assert e1.sends()[0].request.headers["PB-Customer-Id"] == "eocm-Clean-Air-Trust"


def test_docs_pb_customer_id_check_warns_without_the_eocm_prefix(tmp_path):
    """Without pb_customer_id the header defaults to customer_id, as before; `check` warns that the documented
    value starts with `eocm-`, and stays quiet once it does."""
    provider = create_app(e1_config(tmp_path)).extensions["formrelay"].providers["engageone"]
    form = create_app(e1_config(tmp_path)).extensions["formrelay"].forms["toolkit"].config
    (warning,) = provider.warnings(form)
    assert "eocm-" in warning and "pb_customer_id" in warning
    raw = e1_config(tmp_path)
    raw["providers"]["engageone"] = {**PROVIDER, "pb_customer_id": "eocm-Clean-Air-Trust"}
    assert create_app(raw).extensions["formrelay"].providers["engageone"].warnings(form) == []


def test_pb_customer_id_with_spaces_is_refused_at_start_up(tmp_path):
    """Documented: spaces become hyphens in PB-Customer-Id, so a value with a space is a config mistake."""
    raw = e1_config(tmp_path)
    raw["providers"]["engageone"] = {**PROVIDER, "pb_customer_id": "eocm-Clean Air"}
    with pytest.raises(ConfigError, match="pb_customer_id"):
        create_app(raw)


@pytest.mark.parametrize("status", [401, 403])
def test_docs_unpublished_status_codes_401_403_after_a_fresh_token_wait_instead_of_rejecting(e1, tmp_path, status):
    """Status codes are not published (docs: inferred). A 401 twice, or a 403, is the relay's permission or
    company header, not the supporter's fault: the send is kept (202) and retried, never thrown away (502)."""
    e1.rsps.post(SEND_URL, status=status, json={"message": "Forbidden"})
    app = create_app(e1_config(tmp_path))
    answer = app.test_client().post("/v1/forms/toolkit", json=VALID)
    assert answer.status_code == 202 and answer.get_json()["status"] == "queued"
    (job,) = app.extensions["formrelay"].store.jobs()
    assert job.state != DEAD and "pb-customer-id" in job.last_error.lower()


def test_docs_a_404_on_the_send_is_held_for_the_operator_not_rejected(e1, tmp_path):
    """POST {api}/campaigns/v2/{campaignName}/transactional (documented); its status codes are not, so a 404 is read
    as a campaign or communication this account lacks: the configuration's fault. The send is kept (202 queued),
    held for the operator with the reason, and never remembered as the supporter's rejection."""
    e1.rsps.post(SEND_URL, status=404, json={"message": "Not Found"})
    app = create_app(e1_config(tmp_path))
    answer = app.test_client().post("/v1/forms/toolkit", json=VALID, headers={"Idempotency-Key": "k-404"})
    assert answer.status_code == 202 and answer.get_json()["status"] == "queued"
    (job,) = app.extensions["formrelay"].store.jobs()
    assert job.state == DEAD and "'ToolkitDownload'" in job.last_error and "'Toolkit'" in job.last_error
    assert "held for an operator" in job.last_error
    assert len(e1.sends()) == 1  # not retried unchanged

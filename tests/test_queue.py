"""The durable queue with the relay: the worker's rules, idempotency, and nothing accepted lost."""
from __future__ import annotations

import threading
import time

import pytest
import requests
import responses

from formrelay import create_app
from formrelay.delivery.jobs import DEAD, DONE
from tests.conftest import NGP_FORM_URL, NGP_SUCCESS, base_config

VALID = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009"}


# -- the relay with a faked NGP --------------------------------------------------------------------------

@pytest.fixture
def queue_app(tmp_path, mocked):
    raw = base_config(breaker_reset=0.001)  # the breaker is tested on its own; here it must not hold jobs back
    raw["queue"] = {"path": str(tmp_path / "q.sqlite3"), "backoff_base": 0.001, "backoff_cap": 0.002,
                    "max_attempts": 3}
    return create_app(raw)


def drain(relay, rounds: int = 20) -> None:
    worker = relay.worker()
    for _ in range(rounds):
        time.sleep(0.005)
        worker.run_once(limit=50)


def ngp_posts(mocked):
    return [c for c in mocked.calls if c.request.method == "POST"]


def test_outage_queues_and_the_worker_delivers_each_exactly_once(queue_app, mocked):
    relay = queue_app.extensions["formrelay"]
    client = queue_app.test_client()
    mocked.post(NGP_FORM_URL, status=503)
    answers = [client.post("/v1/forms/join", json={**VALID, "FirstName": f"A{i}x"}) for i in range(5)]
    assert [a.status_code for a in answers] == [202] * 5
    assert relay.queue_stats()["depth"] == 5
    mocked.replace(responses.POST, NGP_FORM_URL, json=NGP_SUCCESS)
    before = len(ngp_posts(mocked))
    drain(relay)
    delivered = [c.request.body for c in ngp_posts(mocked)[before:]]
    assert sorted(delivered) == sorted(set(delivered)) and len(delivered) == 5
    assert relay.queue_stats()["depth"] == 0
    assert {j.state for j in relay.store.jobs()} == {DONE}


def test_attempts_run_out_into_the_dead_letters(queue_app, mocked):
    relay = queue_app.extensions["formrelay"]
    mocked.post(NGP_FORM_URL, status=500)
    assert queue_app.test_client().post("/v1/forms/join", json=VALID).status_code == 202
    drain(relay)
    (dead,) = relay.store.jobs()
    # max_attempts counts every attempt, the synchronous one included
    assert dead.state == DEAD and dead.attempts == 3 and "gave up after 3" in dead.last_error
    assert len(ngp_posts(mocked)) == 3


def test_a_refusal_found_by_the_worker_is_kept_as_a_dead_letter(queue_app, mocked):
    relay = queue_app.extensions["formrelay"]
    mocked.post(NGP_FORM_URL, status=503)
    queue_app.test_client().post("/v1/forms/join", json=VALID)
    mocked.replace(responses.POST, NGP_FORM_URL, json={"resultCode": "Failure", "errors": [{"text": "Closed"}]})
    drain(relay)
    (dead,) = relay.store.jobs(DEAD)
    assert "refused by the provider" in dead.last_error and "Closed" in dead.last_error


def test_hold_rule_never_retries_a_delivery_that_may_have_arrived(queue_app, mocked, monkeypatch):
    relay = queue_app.extensions["formrelay"]
    provider = relay.providers["ngp"]
    monkeypatch.setattr(provider, "uncertain_delivery", "hold")
    mocked.post(NGP_FORM_URL, body=requests.ReadTimeout("slow"))
    answer = queue_app.test_client().post("/v1/forms/join", json=VALID)
    assert answer.status_code == 202
    (held,) = relay.store.jobs()
    assert held.state == DEAD and "held for an operator" in held.last_error
    drain(relay)
    assert len(ngp_posts(mocked)) == 1


def test_retry_rule_retries_a_delivery_cut_off_mid_flight(queue_app, mocked):
    relay = queue_app.extensions["formrelay"]
    mocked.post(NGP_FORM_URL, status=503)
    queue_app.test_client().post("/v1/forms/join", json=VALID)
    time.sleep(0.01)
    relay.store.claim(now=time.time(), lease=0.5, limit=10)  # a worker took it, then died
    mocked.replace(responses.POST, NGP_FORM_URL, json=NGP_SUCCESS)
    time.sleep(0.6)
    drain(relay)
    (done,) = relay.store.jobs()
    assert done.state == DONE and done.attempts == 3  # the synchronous one, the cut-off one, the delivery
    assert done.uncertain  # the cut-off attempt may have arrived: said so even after the delivery


def test_unqueueable_forms_get_503_not_202(queue_app, mocked, monkeypatch):
    relay = queue_app.extensions["formrelay"]
    monkeypatch.setattr(relay.providers["ngp"], "queueable", lambda form: False)
    mocked.post(NGP_FORM_URL, status=503)
    answer = queue_app.test_client().post("/v1/forms/join", json=VALID)
    assert answer.status_code == 503 and relay.store.jobs() == []


# -- idempotency -----------------------------------------------------------------------------------------

def test_a_repeated_key_gets_the_first_answer_without_a_second_delivery(queue_app, mocked):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    client = queue_app.test_client()
    first = client.post("/v1/forms/join", json={**VALID, "_idempotency_key": "fill-1"})
    second = client.post("/v1/forms/join", json=VALID, headers={"Idempotency-Key": "fill-1"})
    third = client.post("/v1/forms/join", json={**VALID, "_idempotency_key": "fill-2"})
    assert first.get_json() == second.get_json() and first.status_code == second.status_code == 200
    assert third.status_code == 200 and len(ngp_posts(mocked)) == 2


def test_a_repeat_while_queued_is_answered_queued_and_delivered_once(queue_app, mocked):
    relay = queue_app.extensions["formrelay"]
    mocked.post(NGP_FORM_URL, status=503)
    client = queue_app.test_client()
    answers = [client.post("/v1/forms/join", json={**VALID, "_idempotency_key": "same"}) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 202]
    mocked.replace(responses.POST, NGP_FORM_URL, json=NGP_SUCCESS)
    drain(relay)
    assert len(relay.store.jobs()) == 1 and len(ngp_posts(mocked)) == 2  # one failed try, one delivery


def test_an_invalid_answer_is_not_remembered_so_the_corrected_form_goes_through(queue_app, mocked):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    client = queue_app.test_client()
    assert client.post("/v1/forms/join", json={"_idempotency_key": "k"}).status_code == 422
    assert client.post("/v1/forms/join", json={**VALID, "_idempotency_key": "k"}).status_code == 200


def test_keys_are_scoped_per_form(mocked, tmp_path):
    raw = base_config()
    raw["forms"]["other"] = {"provider": "ngp", "form_id": "demo-petition"}
    raw["queue"] = {"path": str(tmp_path / "q.sqlite3")}
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    client = create_app(raw).test_client()
    client.post("/v1/forms/join", json={**VALID, "_idempotency_key": "k"})
    client.post("/v1/forms/other", json={**VALID, "_idempotency_key": "k"})
    assert len(ngp_posts(mocked)) == 2


def test_concurrent_repeats_cause_one_delivery(tmp_path, sandbox, serve):
    app = create_app({
        "relay": {"rate_limit": ""}, "providers": {"ngp": {"base_url": f"{sandbox.url}/ngp/v2", "api_key": "sandbox-ngp-api-key"}},
        "forms": {"join": {"provider": "ngp", "form_id": "demo-petition"}},
        "queue": {"path": str(tmp_path / "q.sqlite3")},
    })
    relay_server = serve(app)
    requests.post(f"{sandbox.url}/_control/delay", json={"provider": "ngp", "seconds": 0.3}, timeout=5)
    results: list[int] = []

    def send():
        r = requests.post(f"{relay_server.url}/v1/forms/join", json=VALID, headers={"Idempotency-Key": "race"}, timeout=10)
        results.append(r.status_code)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    calls = requests.get(f"{sandbox.url}/_control/calls", timeout=5).json()
    assert calls["ngp:submit"] == 1 and results == [200] * 4

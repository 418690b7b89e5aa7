"""One form, several destinations: `also` forms through the person model, and signed webhooks, as queue jobs."""
from __future__ import annotations

import base64
import json
import logging
import os
import time

import pytest
import responses
from click.testing import CliRunner
from standardwebhooks import Webhook, WebhookVerificationError

from formrelay import create_app
from formrelay.cli import main
from formrelay.core import logs
from formrelay.core.config import ConfigError, parse_config
from formrelay.delivery.jobs import DEAD, DONE, PENDING, new_job, restore_submission
from formrelay.delivery.stores import SQLiteStore
from formrelay.delivery.stores.redis import RedisStore
from formrelay.webhooks import event_body, message_id, sign
from tests.conftest import NGP_FORM_URL, NGP_SUCCESS, base_config

SECRET = "whsec_" + base64.b64encode(b"formrelay-test-webhook-key-0123456789").decode()
HOOK_URL = "https://hooks.test/receive/T0KEN-in-the-path"
AN_BASE = "https://an.test/api/v2"
AN_URL = f"{AN_BASE}/petitions/air/signatures"
VALID = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009",
         "Comments": "For my kids.", "utm_source": "newsletter"}


def fanout_config(tmp_path, **webhook) -> dict:
    raw = base_config()
    raw["providers"]["actionnetwork"] = {"base_url": AN_BASE}
    raw["forms"]["join"]["also"] = ["join-an"]
    raw["forms"]["join"]["webhooks"] = [{"url": HOOK_URL, "secret": SECRET, "name": "crm-sync", **webhook}]
    raw["forms"]["join-an"] = {"provider": "actionnetwork", "action": "petition", "action_id": "air"}
    raw["queue"] = {"path": str(tmp_path / "q.sqlite3"), "backoff_base": 0.01, "backoff_cap": 0.02}
    return raw


@pytest.fixture
def fanout(tmp_path, mocked):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    app = create_app(fanout_config(tmp_path))
    yield app
    app.extensions["formrelay"].close()


def drain(relay, rounds: int = 20) -> None:
    """Let the worker take every due job (a few rounds, for jobs made by jobs)."""
    worker = relay.worker()
    for _ in range(rounds):
        time.sleep(0.03)
        worker.run_once(limit=20)


def calls_to(mocked, url: str) -> list:
    return [c for c in mocked.calls if c.request.url == url]


def targets(relay) -> dict[str, str]:
    return {j.target: j.state for j in relay.store.jobs()}


# -- config ---------------------------------------------------------------------------------------------

def parse(raw):
    return parse_config(raw, env={})


def test_also_must_name_another_configured_form(tmp_path):
    raw = fanout_config(tmp_path)
    raw["forms"]["join"]["also"] = ["nope"]
    with pytest.raises(ConfigError, match="forms.join.also: there is no form 'nope'"):
        parse(raw)
    raw["forms"]["join"]["also"] = ["join"]
    with pytest.raises(ConfigError, match="cannot name itself"):
        parse(raw)


@pytest.mark.parametrize("secret, words", [
    ("not-whsec", "must start with whsec_"),
    ("whsec_%%%notbase64", "followed by base64"),
    ("whsec_" + base64.b64encode(b"short").decode(), "24 to 64 bytes"),
])
def test_a_bad_webhook_secret_is_refused_without_echoing_it(tmp_path, secret, words):
    raw = fanout_config(tmp_path)
    raw["forms"]["join"]["webhooks"][0]["secret"] = secret
    with pytest.raises(ConfigError) as caught:
        parse(raw)
    assert words in str(caught.value) and "webhooks[0].secret" in str(caught.value)
    assert secret not in str(caught.value)


def test_webhook_keys_events_names_and_secrets(tmp_path):
    raw = fanout_config(tmp_path, events=["dead", "queued"], include_personal_data=False)
    raw["forms"]["join"]["webhooks"].append({"url": "http://127.0.0.1:9/a", "secret": SECRET})
    raw["forms"]["join"]["webhooks"].append({"url": "http://127.0.0.1:9/b", "secret": SECRET})
    config = parse(raw)
    first, second, third = config.forms["join"].webhooks
    assert (first.name, first.events, first.include_personal_data) == ("crm-sync", ("dead", "queued"), False)
    assert (second.name, second.events, second.include_personal_data) == ("127.0.0.1:9", ("delivered", "queued", "dead"), True)
    assert third.name == "127.0.0.1:9-2"
    # the whole secret, its key part and the URL (which may hold a token) are all masked in logs
    assert {SECRET, SECRET.removeprefix("whsec_"), HOOK_URL} <= config.secrets
    assert SECRET not in repr(config.forms["join"]) and HOOK_URL not in repr(config.forms["join"])
    raw["forms"]["join"]["webhooks"][0]["events"] = ["sent"]
    with pytest.raises(ConfigError, match=r"webhooks\[0\].events"):
        parse(raw)


# -- signing and the body --------------------------------------------------------------------------------

SUBMISSION = {"id": "sub1", "form": "join", "values": {"EmailAddress": "ann@example.org"},
              "context": {"utm_source": "mail"}, "received_at": 1.0}


def test_the_signature_verifies_with_the_standardwebhooks_library():
    body = event_body("delivered", 1_700_000_000.5, "join", SUBMISSION, {"status": "delivered"}, True)
    headers = sign(SECRET, "msg_1", body)
    assert headers["webhook-signature"].startswith("v1,")
    verified = Webhook(SECRET).verify(body, headers)
    assert verified == {"type": "submission.delivered", "timestamp": "2023-11-14T22:13:20.500Z",
                        "data": {"form": "join", "submission_id": "sub1", "outcome": {"status": "delivered"},
                                 "fields": {"EmailAddress": "ann@example.org"}, "context": {"utm_source": "mail"}}}
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body.replace(b"ann@", b"bob@"), headers)  # a changed body fails
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(body, headers)  # another key fails


def test_without_personal_data_the_body_has_no_fields_or_context():
    body = json.loads(event_body("dead", 1.0, "join", SUBMISSION, {"status": "dead"}, False))
    assert "fields" not in body["data"] and "context" not in body["data"] and "ann@" not in json.dumps(body)
    assert body["data"]["submission_id"] == "sub1"


def test_message_id_is_stable_and_differs_per_destination():
    assert message_id("sub1-webhook:a/delivered") == message_id("sub1-webhook:a/delivered")
    assert message_id("sub1-webhook:a/delivered") != message_id("sub1-webhook:a/queued")


# -- the fan-out -----------------------------------------------------------------------------------------

def test_ngp_then_action_network_and_a_webhook_each_once(fanout, mocked):
    mocked.post(AN_URL, json={})
    mocked.post(HOOK_URL, status=204)
    answer = fanout.test_client().post("/v1/forms/join", json=VALID)
    assert answer.status_code == 200 and answer.json["status"] == "delivered"
    relay = fanout.extensions["formrelay"]
    # answered before any other destination was tried: they are jobs, due now
    assert calls_to(mocked, AN_URL) == [] and calls_to(mocked, HOOK_URL) == []
    assert targets(relay) == {"also:join-an": PENDING, "webhook:crm-sync/delivered": PENDING}
    drain(relay)
    assert targets(relay) == {"also:join-an": DONE, "webhook:crm-sync/delivered": DONE}
    assert len(calls_to(mocked, NGP_FORM_URL)) == 2  # the definition (GET) and one submission (POST)
    (an,) = calls_to(mocked, AN_URL)
    person = json.loads(an.request.body)["person"]
    assert person["given_name"] == "Ann" and person["family_name"] == "Lee"
    assert person["email_addresses"][0]["address"] == "ann@example.org"
    assert person["postal_addresses"][0]["postal_code"] == "20009"
    assert json.loads(an.request.body)["comments"] == "For my kids."  # beside the person, where both forms have it
    (hook,) = calls_to(mocked, HOOK_URL)
    sent = Webhook(SECRET).verify(hook.request.body, dict(hook.request.headers))
    assert sent["type"] == "submission.delivered" and sent["data"]["form"] == "join"
    assert sent["data"]["fields"]["EmailAddress"] == "ann@example.org"
    assert sent["data"]["context"] == {"utm_source": "newsletter"}
    assert sent["data"]["outcome"] == {"status": "delivered", "provider": "ngp"}
    # every job of the submission carries its id, for the operator's view and erasure
    assert {j.submission_id for j in relay.store.jobs()} == {sent["data"]["submission_id"]}


def test_a_repeat_of_the_primary_never_repeats_another_destination(fanout, mocked):
    mocked.post(AN_URL, json={})
    mocked.post(HOOK_URL, status=200)
    client = fanout.test_client()
    first = client.post("/v1/forms/join", json=VALID, headers={"Idempotency-Key": "k-1"})
    relay = fanout.extensions["formrelay"]
    # (taken while waiting: once every job is done, the queue keeps no personal data to restore it from)
    (waiting,) = [j for j in relay.store.jobs() if j.target == "also:join-an"]
    drain(relay)
    second = client.post("/v1/forms/join", json=VALID, headers={"Idempotency-Key": "k-1"})
    assert first.json == second.json
    # the step that makes the jobs runs again (a primary re-delivered after a cut-off lease): nothing new
    relay.after_delivery(relay.form("join"), restore_submission(waiting.submission))
    drain(relay)
    assert len(calls_to(mocked, AN_URL)) == 1 and len(calls_to(mocked, HOOK_URL)) == 1
    assert len([c for c in mocked.calls if c.request.method == "POST" and c.request.url == NGP_FORM_URL]) == 1
    assert targets(relay) == {"also:join-an": DONE, "webhook:crm-sync/delivered": DONE}


def test_a_failing_second_crm_never_fails_delays_or_repeats_the_first(fanout, mocked):
    mocked.post(AN_URL, status=503)
    mocked.post(HOOK_URL, status=200)
    started = time.monotonic()
    answer = fanout.test_client().post("/v1/forms/join", json=VALID)
    assert answer.status_code == 200 and time.monotonic() - started < 5
    relay = fanout.extensions["formrelay"]
    drain(relay, rounds=5)
    (an_job,) = [j for j in relay.store.jobs() if j.target == "also:join-an"]
    assert an_job.state == PENDING and an_job.attempts >= 2 and "HTTP 503" in an_job.last_error
    assert len([c for c in mocked.calls if c.request.method == "POST" and c.request.url == NGP_FORM_URL]) == 1
    assert targets(relay)["webhook:crm-sync/delivered"] == DONE


def test_a_mapping_that_leaves_the_other_form_invalid_is_a_dead_letter_with_the_reason(tmp_path, mocked):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    raw = fanout_config(tmp_path)
    raw["forms"]["join-an"]["required"] = ["phone_number"]  # the NGP form's supporter gave none
    app = create_app(raw)
    relay = app.extensions["formrelay"]
    assert app.test_client().post("/v1/forms/join", json=VALID).status_code == 200
    drain(relay)
    (dead,) = [j for j in relay.store.jobs() if j.target == "also:join-an"]
    assert dead.state == DEAD, dead.last_error
    assert dead.last_error == "mapped to form 'join-an', the submission is not valid there (phone_number: This field is required.)"
    assert calls_to(mocked, AN_URL) == []
    relay.close()


def test_a_queued_then_delivered_primary_tells_the_webhook_both(tmp_path, mocked):
    mocked.post(NGP_FORM_URL, status=503)
    mocked.post(HOOK_URL, status=200)
    mocked.post(AN_URL, json={})
    app = create_app(fanout_config(tmp_path))
    relay = app.extensions["formrelay"]
    assert app.test_client().post("/v1/forms/join", json=VALID).status_code == 202
    assert targets(relay) == {"primary": PENDING, "webhook:crm-sync/queued": PENDING}
    mocked.replace(responses.POST, NGP_FORM_URL, json=NGP_SUCCESS)
    for job in relay.store.jobs():
        relay.store.retry(job.id, time.time())
    drain(relay)
    assert targets(relay) == {"primary": DONE, "webhook:crm-sync/queued": DONE, "also:join-an": DONE,
                              "webhook:crm-sync/delivered": DONE}
    kinds = [Webhook(SECRET).verify(c.request.body, dict(c.request.headers))["type"] for c in calls_to(mocked, HOOK_URL)]
    assert sorted(kinds) == ["submission.delivered", "submission.queued"]
    relay.close()


def test_a_dead_primary_tells_the_webhook_and_goes_nowhere_else(tmp_path, mocked):
    mocked.post(NGP_FORM_URL, status=503)
    mocked.post(HOOK_URL, status=200)
    raw = fanout_config(tmp_path, events=["dead"])
    raw["queue"]["max_attempts"] = 1
    app = create_app(raw)
    relay = app.extensions["formrelay"]
    assert app.test_client().post("/v1/forms/join", json=VALID).status_code == 202
    for job in relay.store.jobs():
        relay.store.retry(job.id, time.time())
    drain(relay)
    assert targets(relay) == {"primary": DEAD, "webhook:crm-sync/dead": DONE}
    (call,) = calls_to(mocked, HOOK_URL)
    body = Webhook(SECRET).verify(call.request.body, dict(call.request.headers))
    assert body["type"] == "submission.dead" and "gave up" in body["data"]["outcome"]["reason"]
    assert calls_to(mocked, AN_URL) == []
    relay.close()


def test_webhook_retries_keep_one_webhook_id_and_body_and_410_is_a_dead_letter(fanout, mocked):
    mocked.post(AN_URL, json={})
    mocked.post(HOOK_URL, status=500)
    fanout.test_client().post("/v1/forms/join", json=VALID)
    relay = fanout.extensions["formrelay"]
    drain(relay, rounds=4)
    mocked.replace(responses.POST, HOOK_URL, status=410)
    drain(relay, rounds=4)
    calls = calls_to(mocked, HOOK_URL)
    assert len(calls) >= 3
    assert len({c.request.headers["webhook-id"] for c in calls}) == 1
    assert len({c.request.body for c in calls}) == 1
    assert targets(relay)["webhook:crm-sync/delivered"] == DEAD
    assert len(calls_to(mocked, AN_URL)) == 1  # the webhook's retries never touch the CRMs
    (job,) = [j for j in relay.store.jobs() if j.target.startswith("webhook:")]
    assert HOOK_URL not in (job.last_error or "") and "hooks.test/receive" not in (job.last_error or "")


def test_a_webhook_without_personal_data_keeps_none_in_the_queue_either(tmp_path, mocked):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    mocked.post(AN_URL, json={})
    mocked.post(HOOK_URL, status=200)
    app = create_app(fanout_config(tmp_path, include_personal_data=False))
    relay = app.extensions["formrelay"]
    app.test_client().post("/v1/forms/join", json=VALID)
    (job,) = [j for j in relay.store.jobs() if j.target.startswith("webhook:")]
    assert job.submission["values"] == {} and job.submission["context"] == {} and job.submission["id"]
    drain(relay)
    (call,) = calls_to(mocked, HOOK_URL)
    assert b"ann@example.org" not in call.request.body and b"20009" not in call.request.body
    relay.close()


def test_metrics_count_destination_attempts_by_destination_and_result(fanout, mocked):
    mocked.post(AN_URL, status=503)
    mocked.post(HOOK_URL, status=200)
    client = fanout.test_client()
    client.post("/v1/forms/join", json=VALID)
    drain(fanout.extensions["formrelay"], rounds=3)
    text = client.get("/metrics").text
    assert 'formrelay_destination_attempts_total{destination="also:join-an",form="join",result="not now"}' in text
    assert 'formrelay_destination_attempts_total{destination="webhook:crm-sync",form="join",result="delivered"}' in text
    assert HOOK_URL not in text and "hooks.test" not in text


def test_no_secret_in_logs_answers_or_the_queue_cli(tmp_path, mocked, caplog):
    caplog.set_level(logging.DEBUG)
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    mocked.post(AN_URL, json={})
    mocked.post(HOOK_URL, body=ConnectionError(f"refused by {HOOK_URL} with {SECRET}"))
    raw = fanout_config(tmp_path)
    app = create_app(raw)
    relay = app.extensions["formrelay"]
    answer = app.test_client().post("/v1/forms/join", json=VALID)
    drain(relay, rounds=3)
    logging.getLogger("formrelay.test").warning("echo %s and %s", SECRET, HOOK_URL)  # the mask, not luck
    logging.getLogger("urllib3.connectionpool").debug('https://hooks.test:443 "POST /receive/T0KEN-in-the-path '
                                                      'HTTP/1.1" 204 0')  # how urllib3 logs a request
    config_path = tmp_path / "relay.toml"
    config_path.write_text(_toml(raw))
    runner = CliRunner()
    listed = runner.invoke(main, ["queue", "list", "--config", str(config_path)])
    (hook_job,) = [j for j in relay.store.jobs() if j.target.startswith("webhook:")]
    shown = runner.invoke(main, ["queue", "show", hook_job.id, "--config", str(config_path), "--show-data"])
    assert listed.exit_code == 0 and shown.exit_code == 0
    everything = answer.text + str(answer.headers) + caplog.text + listed.output + shown.output
    everything += "".join(logs.mask(r.getMessage()) for r in caplog.records)
    for secret in (SECRET, SECRET.removeprefix("whsec_"), HOOK_URL, "T0KEN-in-the-path"):
        assert secret not in everything
    assert "[redacted]" in caplog.text
    relay.close()


def test_queue_list_shows_the_destinations_of_each_submission(fanout, mocked, tmp_path):
    mocked.post(AN_URL, status=503)
    mocked.post(HOOK_URL, status=200)
    fanout.test_client().post("/v1/forms/join", json=VALID)
    relay = fanout.extensions["formrelay"]
    drain(relay, rounds=2)
    config_path = tmp_path / "relay.toml"
    config_path.write_text(_toml(fanout_config(tmp_path)))
    out = CliRunner().invoke(main, ["queue", "list", "--config", str(config_path)]).output
    (sid,) = {j.submission_id for j in relay.store.jobs()}
    line = next(line for line in out.splitlines() if line.startswith(sid + " "))
    assert "also:join-an pending" in line and "webhook:crm-sync (delivered) done" in line


def test_check_reports_what_the_mapping_fills_and_whether_each_webhook_host_answers(tmp_path, mocked):
    import socket

    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    port = listening.getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()
    raw = fanout_config(tmp_path)
    raw["forms"]["join"]["webhooks"] = [
        {"url": f"http://127.0.0.1:{port}/in/S3CRET-PATH", "secret": SECRET, "name": "up"},
        {"url": f"http://127.0.0.1:{dead_port}/in", "secret": SECRET, "name": "down"},
    ]
    raw["forms"]["join-an"]["required"] = ["phone_number"]  # the NGP form asks for a phone, optionally
    raw["forms"]["join-an"]["custom_fields"] = {"pledge": {"required": True}}  # the NGP form has nothing like it
    config_path = tmp_path / "relay.toml"
    config_path.write_text(_toml(raw))
    mocked.get(f"{AN_BASE}/", json={})
    result = CliRunner().invoke(main, ["check", "--config", str(config_path)])
    listening.close()
    out = result.output
    assert "also join-an (actionnetwork): the person model fills" in out and "email_address" in out
    assert "also join-an: required there, filled only when given here: phone_number (from Phone" in out
    assert "ERROR: also join-an: required there, but nothing of this form maps to it: custom[pledge]" in out
    assert f"webhook up (127.0.0.1:{port})" in out and "answers (TCP connect" in out
    assert f"webhook down (127.0.0.1:{dead_port})" in out and "ERROR: webhook down" in out
    assert "S3CRET-PATH" not in out and SECRET not in out
    assert result.exit_code != 0
    assert mocked.calls and all("127.0.0.1" not in c.request.url for c in mocked.calls)  # nothing sent


# -- stores ----------------------------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        yield SQLiteStore(str(tmp_path / "q.sqlite3"))
    else:
        yield RedisStore(request.getfixturevalue("redis_url"))


def test_add_stores_a_job_only_once_whatever_became_of_it(store):
    submission = restore_submission({"id": "s1", "form": "join", "values": {}, "received_at": 1.0})
    job = new_job("join", "also:join-an", submission)
    assert job.id == "s1-also:join-an" and store.add(job)
    (claimed,) = store.claim(time.time() + 1, 30, 5)
    store.finish(claimed, "delivered")
    assert not store.add(new_job("join", "also:join-an", submission))
    assert store.get(job.id).state == DONE and store.claim(time.time() + 1, 30, 5) == []


def _toml(raw: dict) -> str:
    """A config mapping as TOML (enough for these tests: tables, arrays of tables, strings, lists, numbers)."""
    lines: list[str] = []

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return str(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(v)

    def table(prefix: str, data: dict) -> None:
        plain = {k: v for k, v in data.items() if not isinstance(v, dict) and not (
            isinstance(v, list) and v and isinstance(v[0], dict))}
        lines.append(f"[{prefix}]")
        lines.extend(f"{json.dumps(k)} = {value(v)}" for k, v in plain.items())
        for k, v in data.items():
            if isinstance(v, dict):
                table(f"{prefix}.{json.dumps(k)}", v)
            elif isinstance(v, list) and v and isinstance(v[0], dict):
                for item in v:
                    lines.append(f"[[{prefix}.{json.dumps(k)}]]")
                    lines.extend(f"{json.dumps(ik)} = {value(iv)}" for ik, iv in item.items())

    for name, section in raw.items():
        table(name, section)
    return "\n".join(lines) + "\n"


def test_the_documented_receiver_accepts_a_signed_event_once_and_refuses_a_forged_one(monkeypatch):
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "docs" / "destinations.md").read_text()
    code = next(block for block in readme.split("```python\n")[1:] if block.startswith("# receiver.py"))
    code = code.split("```")[0]
    monkeypatch.setenv("FORMRELAY_WEBHOOK_SECRET", SECRET)
    namespace: dict = {"__name__": "receiver"}
    exec(compile(code, "docs/destinations.md receiver", "exec"), namespace)
    client = namespace["app"].test_client()
    body = event_body("delivered", time.time(), "join", SUBMISSION, {"status": "delivered"}, True)
    headers = sign(SECRET, message_id("sub1-webhook:crm-sync/delivered"), body)
    assert client.post("/formrelay", data=body, headers=headers).status_code == 204
    assert client.post("/formrelay", data=body, headers=headers).status_code == 204  # a retry: accepted, once
    assert namespace["seen"] == {headers["webhook-id"]}
    forged = {**headers, "webhook-signature": sign("whsec_" + base64.b64encode(os.urandom(32)).decode(),
                                                   headers["webhook-id"], body)["webhook-signature"]}
    assert client.post("/formrelay", data=body, headers=forged).status_code == 400


def test_fan_out_through_a_redis_queue(tmp_path, mocked, redis_url):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    mocked.post(AN_URL, status=503)
    mocked.post(HOOK_URL, status=200)
    raw = fanout_config(tmp_path)
    raw["relay"]["redis_url"] = redis_url
    del raw["queue"]["path"]
    app = create_app(raw)
    relay = app.extensions["formrelay"]
    client = app.test_client()
    assert client.post("/v1/forms/join", json=VALID, headers={"Idempotency-Key": "r-1"}).status_code == 200
    drain(relay, rounds=3)
    waiting = relay.store.jobs()[0].submission  # (once all are done, the queue keeps no personal data)
    mocked.replace(responses.POST, AN_URL, json={})
    for job in relay.store.jobs():
        relay.store.retry(job.id, time.time())
    drain(relay, rounds=5)
    client.post("/v1/forms/join", json=VALID, headers={"Idempotency-Key": "r-1"})
    relay.after_delivery(relay.form("join"), restore_submission(waiting))  # a repeat
    drain(relay, rounds=3)
    assert targets(relay) == {"also:join-an": DONE, "webhook:crm-sync/delivered": DONE}
    assert len([c for c in calls_to(mocked, AN_URL) if c.response.status_code == 200]) == 1
    (call,) = calls_to(mocked, HOOK_URL)
    assert Webhook(SECRET).verify(call.request.body, dict(call.request.headers))["data"]["outcome"] == {
        "status": "delivered", "provider": "ngp"}
    relay.close()

"""formrelay.alerts without a server: settings, messages free of personal data, dedup through the store, the
outbox's retries, the senders against local receivers, breakers that hear a reset, and the waiting age."""
from __future__ import annotations

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from standardwebhooks import Webhook

from formrelay import create_app
from formrelay.alerts import breakers
from formrelay.alerts.conditions import clean_reason
from formrelay.alerts.monitor import Monitor, Outbox, storage_lost
from formrelay.alerts.senders import ChatSender, Message, SendFailed, WebhookSender
from formrelay.alerts.settings import AlertsSchema, AlertsSettings
from formrelay.core.config import ConfigError, parse_config
from formrelay.delivery.attempts import CLOSED, OPEN
from formrelay.delivery.jobs import DEAD, PENDING, Job
from formrelay.delivery.relay import EXTENSION
from tests.conftest import base_config

EMAIL = "octavia.brightwater@example.org"
WHSEC = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def dead_job(job_id: str, form: str = "join", reason: str = "gave up after 2 attempt(s): ngp: HTTP 503") -> Job:
    now = time.time()
    return Job(id=job_id, form=form, target="primary", state=DEAD, last_error=reason, created_at=now - 5, due_at=now,
               finished_at=now, submission={"form": form, "id": job_id, "received_at": now - 5,
                                            "values": {"EmailAddress": EMAIL, "FirstName": "Octavia"}})


class Collected:
    """An outbox that keeps what it was handed (the sending itself is tested on its own)."""

    channels: list = []

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def put(self, message: Message) -> None:
        self.messages.append(message)

    def stop(self) -> None:
        pass


@pytest.fixture
def relay(tmp_path):
    raw = base_config()
    raw["queue"] = {"path": str(tmp_path / "q.sqlite3"), "embedded_worker": False}
    app = create_app(raw)
    yield app.extensions[EXTENSION]


@pytest.fixture(params=["sqlite", "redis"])
def shared(request, tmp_path):
    """A relay on either store: the lease that makes one alert per deployment lives in it."""
    raw = base_config(**({"redis_url": request.getfixturevalue("redis_url")} if request.param == "redis" else {}))
    raw["queue"] = {"path": str(tmp_path / "q.sqlite3"), "embedded_worker": False}
    relay = create_app(raw).extensions[EXTENSION]
    yield relay
    relay.close()


def monitor(relay, **settings) -> tuple[Monitor, Collected]:
    box = Collected()
    defaults = {"slack_webhook_url": "http://127.0.0.1:9/x", "alert_every": 3600.0, "check_every": 0.2}
    return Monitor(relay, AlertsSettings(**{**defaults, **settings}), outbox=box), box  # type: ignore[arg-type]


# -- settings ------------------------------------------------------------------------------------------------

def test_settings_are_checked_and_their_secrets_masked():
    with pytest.raises(ConfigError, match="email_to needs smtp_url"):
        parse_config({**base_config(), "alerts": {"email_to": ["a@example.org"]}})
    with pytest.raises(ConfigError, match="starttls=no only for a mail server on this host"):
        parse_config({**base_config(), "alerts": {"email_to": ["a@example.org"],
                                                  "smtp_url": "smtp://mail.example.org:25?starttls=no"}})
    with pytest.raises(ConfigError, match="alerts.events"):
        parse_config({**base_config(), "alerts": {"events": ["dead_leters"]}})
    config = parse_config({**base_config(), "alerts": {
        "email_to": ["a@example.org"], "smtp_url": "smtp://mail.example.org:587", "smtp_password": "${SMTP_PW}",
        "slack_webhook_url": "https://hooks.slack.com/services/T1/B2/sekrit-token", "webhook_url": "https://x.example",
        "webhook_secret": WHSEC}}, env={"SMTP_PW": "pw-from-env-123"})
    assert config.alerts.smtp_password == "pw-from-env-123" and config.alerts.alert_every == 900.0
    assert {"pw-from-env-123", "/services/T1/B2/sekrit-token", WHSEC[len("whsec_"):]} <= config.secrets


def test_every_setting_has_a_one_line_description():
    for name, field in AlertsSchema().fields.items():
        description = field.metadata.get("description", "")
        assert description and "\n" not in description, name


# -- messages ------------------------------------------------------------------------------------------------

def test_reasons_lose_quoted_values_addresses_and_phone_numbers():
    text = clean_reason(f"ngp: HTTP 400: '{EMAIL}' is not valid; phone +1 (202) 555-0143; contact {EMAIL}")
    assert EMAIL not in text and "555-0143" not in text and "HTTP 400" in text


def test_dead_letters_alert_once_per_alert_every_across_processes_then_resolve(shared):
    relay = shared
    first, first_box = monitor(relay)
    second, second_box = monitor(relay)  # another process sharing the queue store
    relay.store.put(dead_job("a1", reason=f"gave up after 2 attempt(s): ngp: HTTP 422 '{EMAIL}'"))
    relay.store.put(dead_job("a2"))
    assert first.check() == []  # the burst settles for one look
    (message,) = first.check()
    assert second.check() == [] and second.check() == []  # the lease is the first process's
    assert message.kind == "dead_letters" and message.provider == "ngp" and message.state == "firing"
    assert message.subject == "[formrelay] 2 dead letters for ngp"
    assert "join (2)" in message.text and "formrelay queue retry --all --form join" in message.text
    assert EMAIL not in message.text + json.dumps(message.data) and "Octavia" not in message.text
    relay.store.put(dead_job("a3"))
    assert first.check() == [] and first.check() == []  # more within alert_every: no second message
    for job_id in ("a1", "a2", "a3"):
        relay.store.retry(job_id, time.time())
    time.sleep(0.3 * 3 + 1.2)  # the "seen" marks of both processes expire
    resolved = first.check() + second.check()
    assert [(m.state, m.kind) for m in resolved] == [("resolved", "dead_letters")]
    assert first_box.messages + second_box.messages == [message] + resolved


def test_a_digest_after_alert_every_counts_the_new_ones(relay):
    watcher, _ = monitor(relay, alert_every=1.0)
    relay.store.put(dead_job("b1"))
    watcher.check()
    assert len(watcher.check()) == 1
    relay.store.put(dead_job("b2"))
    relay.store.put(dead_job("b3"))
    time.sleep(1.1)
    watcher.check()
    (digest,) = watcher.check()
    assert digest.subject == "[formrelay] 3 dead letters for ngp" and "2 new since the last message" in digest.text
    time.sleep(1.1)
    assert watcher.check() == []  # nothing new: no reminder


def test_breaker_open_longer_than_alert_after_open_and_credentials_refused(relay):
    watcher, _ = monitor(relay, alert_after_open=0.0)
    breaker = relay.guards["ngp"].breaker
    for _ in range(breaker.threshold):
        breaker.failed("ngp: HTTP 401: the relay's NGP credentials were refused")
    assert breaker.state == OPEN and breaker.down_since is not None
    kinds = {(m.kind, m.provider) for m in watcher.check()}
    assert kinds == {("breaker_open", "ngp"), ("credentials_refused", "ngp")}
    text = "\n".join(m.text for m in watcher.outbox.messages)  # type: ignore[attr-defined]
    assert "formrelay breaker reset ngp" in text


def test_oldest_waiting_and_storage_lost(relay):
    watcher, _ = monitor(relay)
    old = dead_job("w1")
    old.state, old.created_at, old.due_at = PENDING, time.time() - 7200, time.time() + 3600
    relay.store.put(old)
    storage_lost(4)
    found = {m.kind: m for m in watcher.check()}
    assert "queue_waiting" in found and "2.0 h" in found["queue_waiting"].text
    assert "--mark-exported" in found["queue_waiting"].text
    assert "4 job(s) lost" in found["queue_storage"].text


def test_events_can_be_switched_off(relay):
    watcher, _ = monitor(relay, events=("breaker_open",))
    relay.store.put(dead_job("c1"))
    assert watcher.check() == [] and watcher.check() == []


# -- sending -------------------------------------------------------------------------------------------------

class Flaky:
    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    def send(self, message: Message) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise SendFailed("chat: HTTP 500")


@pytest.mark.parametrize("failures, level, calls", [(1, logging.WARNING, 2), (5, logging.ERROR, 3)])
def test_a_failed_send_is_retried_and_logged_once(caplog, failures, level, calls):
    channel = Flaky(failures)
    outbox = Outbox([channel], pauses=(0.0, 0.01, 0.01))
    with caplog.at_level(logging.INFO, logger="formrelay.alerts"):
        outbox.put(Message("dead_letters", "ngp", "firing", "s", "t"))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not caplog.records:
            time.sleep(0.01)
        time.sleep(0.05)
    outbox.stop()
    assert channel.calls == calls
    assert [r.levelno for r in caplog.records] == [level]


@pytest.fixture
def receiver():
    seen: list[dict] = []
    status = {"code": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append({"headers": dict(self.headers), "body": body})
            self.send_response(status["code"])
            self.end_headers()
            self.wfile.write(b"x" * 2_000_000)  # read no further than the limit

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen, status
    server.shutdown()


def test_chat_posts_slack_json_and_a_refusal_names_the_status_not_the_url(receiver):
    url, seen, status = receiver
    chat = ChatSender(f"{url}/services/T1/B2/token-abc", timeout=5)
    chat.send(Message("dead_letters", "ngp", "firing", "[formrelay] 2 dead letters for ngp", "Forms: join (2)"))
    assert json.loads(seen[0]["body"]) == {"text": "*[formrelay] 2 dead letters for ngp*\nForms: join (2)"}
    status["code"] = 500
    with pytest.raises(SendFailed) as failed:
        chat.send(Message("dead_letters", "ngp", "firing", "s", "t"))
    assert str(failed.value) == "chat: HTTP 500" and "token-abc" not in str(failed.value)


def test_the_webhook_is_signed_the_standard_webhooks_way(receiver):
    url, seen, _ = receiver
    WebhookSender(url, WHSEC, timeout=5).send(Message("breaker_open", "ngp", "firing", "s", "t", {"count": 1}))
    headers = {k.lower(): v for k, v in seen[0]["headers"].items()}
    payload = Webhook(WHSEC).verify(seen[0]["body"].decode(), headers)  # raises when the signature is wrong
    assert payload["type"] == "alert.firing" and payload["data"]["provider"] == "ngp"


# -- breakers and ages ---------------------------------------------------------------------------------------

def test_a_breaker_closes_when_an_operator_reset_came_after_it_opened(relay):
    breaker = relay.guards["ngp"].breaker
    breakers.ask_reset(relay.store, "ngp", time.time() - 60)  # an old reset does not close a new outage
    breakers.attach(relay, every=0.05)
    for _ in range(breaker.threshold):
        breaker.failed("ngp: HTTP 503")
    time.sleep(0.3)
    assert not breaker.allow() and breaker.state == OPEN
    breakers.ask_reset(relay.store, "ngp", time.time())
    deadline = time.monotonic() + 5
    while breaker.state != CLOSED and time.monotonic() < deadline:
        time.sleep(0.02)
    assert breaker.view()["state"] == CLOSED and breaker.allow() and breaker.down_since is None


def test_a_retried_dead_letter_starts_its_waiting_age_afresh(relay):
    job = dead_job("r1")
    job.created_at = time.time() - 86400
    relay.store.put(job)
    assert relay.store.retry("r1", time.time())
    assert relay.store.stats(time.time()).oldest_age < 60


def test_storage_refusing_writes_alerts_from_each_process_then_resolves(relay, monkeypatch):
    import sqlite3

    watcher, _ = monitor(relay)

    def refuse(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(relay.store, "kv_set", refuse)
    (message,) = watcher.check()
    assert message.kind == "queue_storage" and "refuses writes (OperationalError)" in message.text
    assert watcher.check() == []  # once per alert_every, kept in this process while the store refuses
    monkeypatch.undo()
    assert [(m.kind, m.state) for m in watcher.check()] == [("queue_storage", "resolved")]

"""Security second pass (issue 20), through real HTTP: a `formrelay serve` process and the sandbox CRMs.

Each test reproduces one finding of the red-team pass and fails on the code before the fix: IPv6 clients keyed
by /64, card numbers however written, single-use time-trap tokens, answers a caught bot cannot tell from a
person's, lone surrogates and non-UTF-8 multipart bodies refused, and no person silently taken for a bot.
"""
from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from formrelay.sandbox.ens import API_TOKEN
from tests.conftest import free_port, received, wait_until_serving

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
PERSON = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009"}
MP = {"First Name": "Ann", "Email Address": "ann@example.org"}
CARD = "4111111111111111"


class Relay:
    """A `formrelay serve` process on 127.0.0.1 with its own config, queue file and log."""

    def __init__(self, tmp_path: Path, sandbox_url: str, relay: dict[str, Any], name: str = "relay",
                 backoff: float = 60) -> None:
        self.dir = tmp_path
        self.queue = tmp_path / "queue.sqlite3"
        self.config = tmp_path / f"{name}.toml"
        settings = "\n".join(f"{k} = {json.dumps(v)}" for k, v in {"rate_limit": "", "time_trap_min": 0.3, **relay}.items())
        self.config.write_text(f"""
[relay]
{settings}
[providers.ngp]
base_url = "{sandbox_url}/ngp/v2"
api_key = "sandbox-ngp-api-key"
[providers.ens]
base_url = "{sandbox_url}/ens/service"
api_token = "{API_TOKEN}"
[forms.join]
provider = "ngp"
form_id = "demo-petition"
success_url = "https://www.example.org/thanks"
[forms.mp]
provider = "ens"
page_id = 12345
txn_from_page = {{ txn1 = "utm_source", txn2 = "utm_medium", txn3 = "utm_campaign" }}
[forms.mp.fields]
"First Name" = {{ required = true }}
"Email Address" = {{ required = true }}
"Why" = {{}}
[queue]
path = "{self.queue}"
backoff_base = {backoff}
poll_interval = 0.1
""")
        self.log = tmp_path / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> Relay:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "formrelay.cli", "serve", "--config", str(self.config), "--port", str(port)],
                cwd=ROOT, stdout=log, stderr=log)
        wait_until_serving(self.url, self.proc, 30)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=15)
            self.proc = None

    def token(self, form: str = "join") -> str:
        return requests.get(f"{self.url}/v1/forms/{form}", timeout=5).json()["started"]

    def post(self, form: str = "join", **kwargs: Any) -> requests.Response:
        return requests.post(f"{self.url}/v1/forms/{form}", timeout=10, allow_redirects=False, **kwargs)


@pytest.fixture
def start_relay(tmp_path, sandbox) -> Iterator[Any]:
    started: list[Relay] = []

    def start(name: str = "relay", backoff: float = 60, **relay: Any) -> Relay:
        server = Relay(tmp_path, sandbox.url, relay, name, backoff).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def card_in(text: str) -> bool:
    """Any trace of the test cards: two of their digit groups side by side, however separated (a port number
    such as 41111 in a log line is not one)."""
    return re.search(r"(4111|1111|4444|5555|3782|8224|6310)\D{0,3}(1111|4444|5555|8224|6310|0005)", text) is not None


def fail_next(sandbox, provider: str, count: int) -> None:
    requests.post(f"{sandbox.url}/_control/fail", json={"provider": provider, "status": 503, "count": count}, timeout=5)


# -- 1. IPv6 clients are limited per /64, not per address --------------------------------------------

def test_ipv6_addresses_of_one_64_share_one_limit(start_relay, sandbox):
    relay = start_relay(rate_limit="2/minute", trusted_proxies=1)

    def post(address: str) -> int:
        return relay.post(json=PERSON, headers={"X-Forwarded-For": address}).status_code

    assert [post("2001:db8:1:2::1"), post("2001:db8:1:2::ffff:2")] == [200, 200]
    assert post("2001:db8:1:2:dead:beef:0:3") == 429  # same /64: the same home or server
    assert post("2001:db8:1:3::1") == 200  # the next /64 is someone else
    assert post("::ffff:192.0.2.7") == 200 and post("192.0.2.7") == 200 and post("::ffff:192.0.2.7") == 429


def test_the_ipv6_prefix_is_configurable(start_relay, sandbox):
    relay = start_relay(rate_limit="1/minute", trusted_proxies=1, ipv6_prefix=48)
    first = relay.post(json=PERSON, headers={"X-Forwarded-For": "2001:db8:1:2::1"})
    other_64_same_48 = relay.post(json=PERSON, headers={"X-Forwarded-For": "2001:db8:1:ffff::1"})
    assert (first.status_code, other_64_same_48.status_code) == (200, 429)


# -- 3. card numbers, however they are written, never reach the CRM, the queue or the log -------------

WRITTEN = ["my card 4111111111111111 exp 12/29", "4111.1111.1111.1111", "4111/1111/1111/1111",
           "4111\u00a01111\u00a01111\u00a01111", "4111 1111 1111 1111", "4111-1111-1111-1111",
           "card: 4111\u20111111\u20111111\u20111111 thanks", "5555 5555 5555 4444 12/29 123", "3782 822463 10005"]


@pytest.mark.parametrize("written", WRITTEN)
def test_a_card_number_in_free_text_is_refused_in_every_body_type(start_relay, sandbox, written):
    relay = start_relay()
    for kwargs in ({"json": {**PERSON, "Comments": written}}, {"data": {**PERSON, "Comments": written}},
                   {"files": {k: (None, v) for k, v in {**PERSON, "Comments": written}.items()}}):
        answer = relay.post(headers={"Accept": "application/json"}, **kwargs)
        assert answer.status_code == 422, (kwargs, answer.text)
        assert "Card details cannot be sent" in answer.json()["errors"]["Comments"][0]
    assert received(sandbox, "ngp") == []
    assert not card_in(relay.log.read_text())


def test_a_card_number_in_the_page_context_is_dropped_before_the_crm_and_the_queue(start_relay, sandbox):
    relay = start_relay()
    answer = relay.post("mp", json={**MP, "utm_source": f"x {CARD} y", "utm_campaign": "spring",
                                    "_referrer": "https://www.example.org/?cc=4111-1111-1111-1111"})
    assert answer.status_code == 200, answer.text
    (got,) = received(sandbox, "ens")
    assert "txn1" not in got["body"] and got["body"]["txn3"] == "spring"
    assert not card_in(json.dumps(got))
    fail_next(sandbox, "ens", 1)  # the CRM is down: the submission goes to the queue
    queued = relay.post("mp", json={**MP, "utm_source": CARD, "utm_medium": "4111 1111 1111 1111"},
                        headers={"Idempotency-Key": "4111-1111-1111-1111"})
    assert queued.status_code == 202
    with sqlite3.connect(relay.queue) as db:
        bodies = [row[0] for row in db.execute("SELECT body FROM jobs")]
    assert len(bodies) == 1 and "ann@example.org" in bodies[0] and not card_in(bodies[0])
    assert not card_in(relay.log.read_text())


def test_a_phone_number_is_not_taken_for_a_card(start_relay, sandbox):
    relay = start_relay()
    for phone in ("+1 202 555 0123", "+62 812 3456 7890"):
        answer = relay.post(json={**PERSON, "Phone": phone, "Comments": f"call me on {phone}, order 1764584027123"})
        assert answer.status_code == 200, answer.text
    assert len(received(sandbox, "ngp")) == 2


# -- 4. a time-trap token delivers once ----------------------------------------------------------------

def test_a_time_trap_token_is_single_use(start_relay, sandbox):
    relay = start_relay()
    token = relay.token()
    time.sleep(0.4)
    answers = [relay.post(json={**PERSON, "_started": token}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert answers[1].json() == answers[0].json()  # the replays see a person's answer...
    assert len(received(sandbox, "ngp")) == 1  # ...and deliver nothing
    fresh = relay.token()
    assert relay.post(json={**PERSON, "_started": fresh}).status_code == 429  # too fast: asked again, not used
    time.sleep(0.4)
    assert relay.post(json={**PERSON, "_started": fresh}).status_code == 200
    assert len(received(sandbox, "ngp")) == 2


def test_a_token_is_freed_again_when_the_submission_did_not_go_through(start_relay, sandbox):
    relay = start_relay()
    token = relay.token()
    time.sleep(0.4)
    assert relay.post(json={**PERSON, "EmailAddress": "not an email", "_started": token}).status_code == 422
    assert relay.post(json={**PERSON, "LastName": "Refused", "_started": token}).status_code == 502  # CRM said no
    assert relay.post(json={**PERSON, "_started": token}).status_code == 200  # corrected and sent again
    assert len(received(sandbox, "ngp")) == 1


def test_a_retry_with_the_same_idempotency_key_is_not_a_replay(start_relay, sandbox):
    relay = start_relay()
    token = relay.token()
    time.sleep(0.4)
    first = relay.post(json={**PERSON, "_started": token}, headers={"Idempotency-Key": "k-1"})
    again = relay.post(json={**PERSON, "_started": token}, headers={"Idempotency-Key": "k-1"})
    assert first.json() == again.json() and len(received(sandbox, "ngp")) == 1


# -- 5. a caught bot cannot tell ---------------------------------------------------------------------------

def test_while_the_crm_is_down_a_bot_is_queued_like_a_person(start_relay, sandbox):
    relay = start_relay()
    fail_next(sandbox, "ngp", 5)
    person = relay.post(json=PERSON)
    bot = relay.post(json={**PERSON, "_hp": "http://spam.example"})
    assert person.status_code == bot.status_code == 202
    assert bot.json() == person.json() and person.json()["message"]
    assert bot.headers.get("Retry-After") == person.headers.get("Retry-After")


def test_when_the_queue_has_delivered_again_a_bot_is_told_delivered(start_relay, sandbox):
    """The queue worker's attempts say what a person would be told now, before the next person posts."""
    relay = start_relay(backoff=0.2)
    fail_next(sandbox, "ngp", 1)
    assert relay.post(json=PERSON).status_code == 202
    deadline = time.monotonic() + 15
    while len(received(sandbox, "ngp")) < 1:  # the worker delivers it once NGP answers again
        assert time.monotonic() < deadline, "the queued submission was not delivered"
        time.sleep(0.1)
    time.sleep(0.3)
    bot = relay.post(json={**PERSON, "_hp": "x"})
    assert bot.status_code == 200 and bot.json()["message"] == "Thank you for signing, friend!"
    assert len(received(sandbox, "ngp")) == 1


def test_after_a_restart_a_bot_still_gets_the_words_a_person_gets(start_relay, sandbox):
    relay = start_relay()
    person = relay.post(json=PERSON).json()
    assert person["status"] == "delivered" and person["message"]
    relay.stop()
    relay.start()  # a new process (or another worker): it has not delivered anything itself yet
    bot = relay.post(json={**PERSON, "_hp": "x"}).json()
    token = relay.token()
    forged = relay.post(json={**PERSON, "_started": token[:-4] + ("AAAA" if token[-4:] != "AAAA" else "BBBB")}).json()
    assert bot == person == forged
    assert len(received(sandbox, "ngp")) == 1


# -- 6, 7. bodies: lone surrogates, and multipart held to strict UTF-8 like JSON and urlencoded -------------

def test_a_lone_surrogate_in_json_is_a_400(start_relay, sandbox):
    relay = start_relay()
    for raw in ('{"FirstName": "\\ud800", "LastName": "Lee", "EmailAddress": "a@example.org", "PostalCode": "20009"}',
                '{"FirstName": "Ann\\udfff", "LastName": "Lee", "EmailAddress": "a@example.org", "PostalCode": "20009"}',
                '{"\\ud83d": "x", "FirstName": "Ann", "LastName": "Lee", "EmailAddress": "a@example.org"}'):
        answer = relay.post(data=raw.encode(), headers={"Content-Type": "application/json"})
        assert answer.status_code == 400 and answer.json()["status"] == "bad_request", answer.text
    pair = '{"FirstName": "Ann \\ud83d\\ude00", "LastName": "Lee", "EmailAddress": "a@example.org", "PostalCode": "20009"}'
    assert relay.post(data=pair.encode(), headers={"Content-Type": "application/json"}).status_code == 200
    assert received(sandbox, "ngp")[0]["fields"]["FirstName"] == ["Ann \U0001F600"]


def multipart(fields: dict[str, bytes], part_headers: str = "") -> tuple[bytes, str]:
    boundary = "formrelay-test-boundary"
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n{part_headers}\r\n'.encode() + value + b"\r\n"
        for name, value in fields.items()) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_multipart_bodies_are_strict_utf8_like_the_others(start_relay, sandbox):
    relay = start_relay()
    person = {k: v.encode() for k, v in PERSON.items()}
    latin1 = {**person, "FirstName": "Zo\xeb".encode("latin-1")}
    for fields, headers in ((latin1, ""), ({**person, "FirstName": b"\xed\xa0\x80"}, "")):
        body, content_type = multipart(fields, headers)
        answer = relay.post(data=body, headers={"Content-Type": content_type, "Accept": "application/json"})
        assert answer.status_code == 400 and answer.json()["status"] == "bad_request", answer.text
    body, content_type = multipart(latin1, "Content-Type: text/plain; charset=iso-8859-1\r\n")
    assert relay.post(data=body, headers={"Content-Type": content_type}).status_code == 415
    # the same bytes in the other two body types: the same answer
    assert relay.post(data=b"FirstName=Zo\xeb&LastName=Lee", headers={
        "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}).status_code == 400
    assert relay.post(data=b'{"FirstName": "Zo\xeb"}', headers={"Content-Type": "application/json"}).status_code == 400
    assert received(sandbox, "ngp") == []
    good, content_type = multipart({**person, "FirstName": "Zoë".encode()})
    assert relay.post(data=good, headers={"Content-Type": content_type, "Accept": "application/json"}).status_code == 200
    assert received(sandbox, "ngp")[0]["fields"]["FirstName"] == ["Zoë"]


# -- issue 15 item 5: a fast person is asked to send again, never dropped ------------------------------------

def test_a_plain_post_sent_too_fast_gets_a_page_asking_to_send_again(start_relay, sandbox):
    relay = start_relay(time_trap_min=1.5)
    token = relay.token()
    fast = relay.post(data={**PERSON, "_started": token})
    assert fast.status_code == 429 and fast.headers["Content-Type"].startswith("text/html")
    assert "send the form again" in fast.text and int(fast.headers["Retry-After"]) >= 1
    as_json = relay.post(json={**PERSON, "_started": token})
    assert as_json.status_code == 429 and as_json.json()["status"] == "rate_limited" and as_json.json()["message"]
    assert received(sandbox, "ngp") == []
    time.sleep(1.6)
    again = relay.post(data={**PERSON, "_started": token})
    assert again.status_code == 303 and again.headers["Location"] == "https://www.example.org/thanks"
    assert len(received(sandbox, "ngp")) == 1


def test_the_description_says_how_long_the_snippet_must_wait(start_relay, sandbox):
    relay = start_relay(time_trap_min=1.5)
    description = requests.get(f"{relay.url}/v1/forms/join", timeout=5).json()
    assert description["started_min"] == 1.5 and description["started"].startswith("join.")


# -- issue 15 item 8: no silent discards from configuration ---------------------------------------------------

def test_two_gunicorn_workers_without_a_secret_key_deliver_every_person(tmp_path, sandbox):
    """The shipped gunicorn config (2 workers), no [relay] secret_key: a token issued by one worker is good on the
    other (the key is kept in the shared queue store), so 20 snippet-style fills all reach NGP."""
    import os
    import shutil

    gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent))
    assert gunicorn, "gunicorn is in the test extra"
    relay = Relay(tmp_path, sandbox.url, {})
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    env = {**os.environ, "FORMRELAY_CONFIG": str(relay.config), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    env.pop("WEB_CONCURRENCY", None)
    with relay.log.open("ab") as log:
        proc = subprocess.Popen([gunicorn, "-c", "python:formrelay.gunicorn_conf", "--bind", f"127.0.0.1:{port}",
                                 "wsgi:app"], cwd=ROOT, env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    close = {"Connection": "close"}  # a new connection each time, so both workers take part
    try:
        wait_until_serving(base, proc)
        tokens = [requests.get(f"{base}/v1/forms/join", timeout=5, headers=close).json()["started"] for _ in range(20)]
        time.sleep(0.4)
        answers = [requests.post(f"{base}/v1/forms/join", timeout=10, headers=close,
                                 json={**PERSON, "EmailAddress": f"p{i}@example.org", "_started": token})
                   for i, token in enumerate(tokens)]
        assert {a.json()["status"] for a in answers} == {"delivered"}
        workers = {p.name.split("_")[-1].split(".")[0] for p in metrics_dir.glob("counter_*.db")}
        assert len(workers) >= 2, "both workers should have answered some of the posts"
        got = sorted(r["fields"]["EmailAddress"][0] for r in received(sandbox, "ngp"))
        assert got == sorted(f"p{i}@example.org" for i in range(20))
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_hosts_sharing_redis_share_the_key(tmp_path, sandbox, redis_url, start_relay):
    """Two hosts without secret_key but with one Redis: a token from one is verified (and used once) by the other."""
    one, two = start_relay("one", redis_url=redis_url), start_relay("two", redis_url=redis_url)
    token = one.token()
    time.sleep(0.4)
    assert two.post(json={**PERSON, "_started": token}).status_code == 200
    assert len(received(sandbox, "ngp")) == 1  # verified by the other host
    assert one.post(json={**PERSON, "_started": token}).status_code == 200  # a replay: a bot's answer
    assert len(received(sandbox, "ngp")) == 1


def test_a_token_signed_with_another_key_is_never_a_reason_to_drop_a_person(tmp_path, sandbox, start_relay):
    """Two hosts that share nothing (their own SQLite queue, no secret_key): the other host's token cannot be
    verified, so it counts as no token at all and the person is delivered; the operator is told in the log."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = Relay(tmp_path / "a", sandbox.url, {}, "one").start()
    two = Relay(tmp_path / "b", sandbox.url, {}, "two").start()
    try:
        token = one.token()
        time.sleep(0.4)
        assert two.post(json={**PERSON, "_started": token}).json()["status"] == "delivered"
        assert len(received(sandbox, "ngp")) == 1
        assert "signed with another key" in two.log.read_text()
    finally:
        one.stop()
        two.stop()

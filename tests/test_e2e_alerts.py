"""[alerts] end to end: `formrelay serve` (two processes), the sandbox CRM down, a real SMTP server speaking
STARTTLS with a login (aiosmtpd, a throwaway CA from trustme) and a Slack-style chat receiver, all on 127.0.0.1."""
from __future__ import annotations

import email
import json
import os
import ssl
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from tests.conftest import free_port, received
from tests.servers import BIN, ROOT, clean_env, running
from tests.test_e2e_queue import fail, heal, wait_for

pytestmark = pytest.mark.e2e

SMTP_PASSWORD = "smtp-pass-7Hq2LmZx9"
CHAT_TOKEN = "T0001/B0002/chat-token-Xy12Zw34"
PEOPLE = [(f"Philippa{c}", f"Quartermain{c}", f"philippa.{c}@example.org") for c in "abcde"]


class Mailbox:
    """aiosmtpd's handler: every message it accepted, as text."""

    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []
        self.sessions: list[tuple[bool, bool]] = []  # (TLS on, logged in) for each delivered message

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.sessions.append((session.ssl is not None, bool(session.authenticated)))
        self.messages.append(email.message_from_bytes(envelope.original_content or envelope.content))
        return "250 OK"


def authenticator(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=auth_data.login == b"alerts" and auth_data.password == SMTP_PASSWORD.encode())


@pytest.fixture
def smtp(tmp_path):
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    box = Mailbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port(), tls_context=context, require_starttls=True,
                            authenticator=authenticator, auth_require_tls=True, auth_exclude_mechanism=["CRAM-MD5"])
    controller.start()
    yield box, controller.port, tmp_path / "ca.pem"
    controller.stop()


@pytest.fixture
def chat():
    posts: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            posts.append({"path": self.path, "body": json.loads(body)})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield posts, server.server_address[1]
    server.shutdown()


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # as cron runs it: with the environment the config's ${NAME}s come from
    return subprocess.run([str(BIN / "formrelay"), *args, "--config", str(config)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL,
                          env={**os.environ, "SMTP_PASSWORD": SMTP_PASSWORD})


def dead_count(config: Path) -> int:
    run = cli(config, "queue", "list", "--json", "--state", "dead")
    return json.loads(run.stdout)["matched"] if run.returncode == 0 else -1


def post(url: str, person: tuple[str, str, str]) -> None:
    first, last, address = person
    answer = requests.post(f"{url}/v1/forms/join", timeout=10, json={
        "FirstName": first, "LastName": last, "EmailAddress": address, "PostalCode": "20009"})
    assert answer.status_code == 202, answer.text


def test_an_outage_reaches_a_person_by_email_and_chat_once_then_resolved(tmp_path, sandbox, smtp, chat):
    mailbox, smtp_port, ca_file = smtp
    posts, chat_port = chat
    config = tmp_path / "relay.toml"
    config.write_text(f"""
[relay]
rate_limit = ""
breaker_failures = 1000  # dead letters, not the breaker, are this test's signal

[providers.ngp]
base_url = "{sandbox.url}/ngp/v2"
api_key = "sandbox-ngp-key"

[forms.join]
provider = "ngp"
form_id = "demo-petition"

[logging]
format = "json"

[queue]
path = "{tmp_path / 'q.sqlite3'}"
max_attempts = 2
backoff_base = 0.05
backoff_cap = 0.1
poll_interval = 0.05

[alerts]
email_to = ["data-manager@example.org"]
email_from = "relay@example.org"
smtp_url = "smtp://127.0.0.1:{smtp_port}"
smtp_user = "alerts"
smtp_password = "${{SMTP_PASSWORD}}"
slack_webhook_url = "http://127.0.0.1:{chat_port}/services/{CHAT_TOKEN}"
alert_every = 3600
check_every = 1.5
""")
    env = clean_env(config, SMTP_PASSWORD=SMTP_PASSWORD, SSL_CERT_FILE=str(ca_file))
    with running("serve", config, tmp_path, workers=2, env=env) as server:
        fail(sandbox, 100_000)
        started = time.monotonic()
        with ThreadPoolExecutor(3) as pool:  # a burst, as an outage brings: one message counts all of it
            list(pool.map(lambda person: post(server.url, person), PEOPLE[:3]))
        assert wait_for(lambda: len(mailbox.messages) >= 1 and len(posts) >= 1, 30), server.output()[-3000:]
        assert time.monotonic() - started < 30
        assert dead_count(config) == 3

        mail = mailbox.messages[0]
        body = mail.get_payload(decode=True).decode()
        chat_text = posts[0]["body"]["text"]
        assert posts[0]["path"] == f"/services/{CHAT_TOKEN}"
        for text in (mail["Subject"] + "\n" + body, chat_text):
            assert "3 dead letters for ngp" in text
            assert "join (3)" in text and "Provider: ngp" in text
            assert "formrelay queue retry --all --form join" in text
            for first, last, address in PEOPLE:
                assert address not in text and first not in text and last not in text
        assert mail["To"] == "data-manager@example.org" and mail["From"] == "relay@example.org"
        assert mailbox.sessions[0] == (True, True)  # STARTTLS, then the login from the environment

        # A second batch within alert_every: dead letters too, and no second message from either process.
        for person in PEOPLE[3:]:
            post(server.url, person)
        assert wait_for(lambda: dead_count(config) == 5, 30)
        time.sleep(5)  # three looks by each of the two processes
        assert len(mailbox.messages) == 1 and len(posts) == 1, [p["body"] for p in posts]

        # The CRM is back and the dead letters are retried: one "resolved" message on each channel.
        heal(sandbox)
        retry = cli(config, "queue", "retry", "--all", "--form", "join")
        assert retry.returncode == 0, retry.stderr
        assert wait_for(lambda: len(received(sandbox, "ngp")) >= 5, 30)
        assert wait_for(lambda: len(mailbox.messages) >= 2 and len(posts) >= 2, 30), server.output()[-3000:]
        time.sleep(2)
        assert len(mailbox.messages) == 2 and len(posts) == 2
        assert mailbox.messages[1]["Subject"] == "[formrelay] resolved: dead letters for ngp"
        assert posts[1]["body"]["text"].startswith("*[formrelay] resolved: dead letters for ngp*")

        log = server.output()
        assert SMTP_PASSWORD not in log and CHAT_TOKEN not in log and "chat-token" not in log
        assert '"event": "alert"' in log
        assert not any(address in log for _, _, address in PEOPLE)


def test_breaker_reset_closes_the_breaker_in_every_process(tmp_path, sandbox):
    config = tmp_path / "relay.toml"
    config.write_text(f"""
[relay]
rate_limit = ""
breaker_failures = 1
breaker_reset = 3600  # its own probe would come in an hour: only the operator's reset closes it now
[providers.ngp]
base_url = "{sandbox.url}/ngp/v2"
api_key = "sandbox-ngp-key"
[forms.join]
provider = "ngp"
form_id = "demo-petition"
[queue]
path = "{tmp_path / 'q.sqlite3'}"
poll_interval = 0.05
""")
    with running("serve", config, tmp_path, workers=2, env=clean_env(config)) as server:
        fail(sandbox, 100_000)

        def breaker_states() -> set[str]:
            states = set()
            for _ in range(20):  # both processes answer, one connection each time
                view = requests.get(f"{server.url}/readyz", timeout=5, headers={"Connection": "close"}).json()
                states.add(view["providers"]["ngp"]["breaker"]["state"])
            return states

        posted = 0
        deadline = time.monotonic() + 60
        while breaker_states() != {"open"}:  # until a failure has reached each process
            assert time.monotonic() < deadline, breaker_states()
            letter = "abcdefghijklmnopqrstuvwxyz"[posted % 26]
            post(server.url, (f"Ann{letter}", "Lee", f"ann.{posted}@example.org"))
            posted += 1
            time.sleep(0.2)
        heal(sandbox)
        reset = cli(config, "breaker", "reset", "ngp")
        assert reset.returncode == 0, reset.stderr
        assert wait_for(lambda: breaker_states() == {"closed"}, 15)
        assert wait_for(lambda: len(received(sandbox, "ngp")) >= posted, 30)  # not in an hour: now
        assert "closed by an operator" in server.output()
        assert cli(config, "breaker", "reset", "ngpp").returncode == 1

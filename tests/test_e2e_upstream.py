"""Upstream calls of the relay as deployed (`formrelay serve` on 127.0.0.1): traced through Session.send, no
redirects followed, answers read within a bound, a deadline per exchange (issue 24 item 1, issue 31 items 2-4)."""
from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from formrelay.sandbox import ServerThread, create_sandbox
from formrelay.web.demo import demo_config
from tests.lowest_e2e import to_toml
from tests.servers import clean_env, running

pytestmark = pytest.mark.e2e

SECRET = "whsec_" + base64.b64encode(b"formrelay-upstream-test-key-012345").decode()
QUICK_QUEUE = {"backoff_base": 0.2, "backoff_cap": 1.0, "poll_interval": 0.1}


class Fake:
    """A local HTTP server: every request recorded, each answered by `answer(handler)`."""

    def __init__(self, answer: Callable[[http.server.BaseHTTPRequestHandler, bytes], None],
                 host: str = "127.0.0.1") -> None:
        self.received: list[dict[str, Any]] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def handle_any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.received.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                      "body": body})
                try:
                    answer(self, body)
                except OSError:  # the relay stopped reading: what it should do with a hostile answer
                    self.close_connection = True

            do_GET = do_POST = do_PUT = handle_any  # noqa: N815

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def fake(answer: Callable[[http.server.BaseHTTPRequestHandler, bytes], None], host: str = "127.0.0.1") -> Iterator[Fake]:
    server = Fake(answer, host)
    try:
        yield server
    finally:
        server.close()


def reply(handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes = b"{}",
          headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    for name, value in {"Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


def huge(handler: http.server.BaseHTTPRequestHandler, size: int = 300 * 1024 * 1024) -> None:
    """A 300 MB answer, streamed (never held here)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(size))
    handler.end_headers()
    chunk = b" " * 65536
    for _ in range(size // len(chunk)):
        handler.wfile.write(chunk)


def write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "formrelay.toml"
    path.write_text(to_toml(config))
    return path


def post(url: str, slug: str, body: dict[str, Any], timeout: float = 30) -> requests.Response:
    return requests.post(f"{url}/v1/forms/{slug}", json=body, headers={"Accept": "application/json"},
                         timeout=timeout)


def wait_for(condition: Callable[[], bool], within: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


# ---- a wrapper on requests.Session.send sees every call ----------------------------------------------------

SITECUSTOMIZE = '''
import os
import requests

_send = requests.Session.send


def send(self, request, **kwargs):  # what OpenTelemetry's or ddtrace's requests instrumentation wraps
    with open(os.environ["FORMRELAY_TEST_SEND_LOG"], "a") as log:
        log.write(f"{request.method} {request.url}\\n")
    return _send(self, request, **kwargs)


requests.Session.send = send
'''


def test_a_wrapper_on_session_send_sees_every_call_to_each_crm(tmp_path):
    """Every call the relay makes to NGP, ENS, Action Network and EngageOne (sandboxes of all four) passes the
    wrapper, one wrapper call per request the CRM receives, installed before the relay starts (sitecustomize)."""
    seen_by_crm: list[str] = []
    sandbox_app = create_sandbox()
    inner = sandbox_app.wsgi_app

    def recording(environ: dict[str, Any], start_response: Any) -> Any:
        path = environ["PATH_INFO"] + (f"?{environ['QUERY_STRING']}" if environ.get("QUERY_STRING") else "")
        if not path.startswith("/_control"):
            seen_by_crm.append(f"{environ['REQUEST_METHOD']} {path}")
        return inner(environ, start_response)

    sandbox_app.wsgi_app = recording  # type: ignore[method-assign]
    sandbox = ServerThread(sandbox_app).start()
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    send_log = tmp_path / "send.log"
    send_log.touch()
    config = demo_config(sandbox.url, str(tmp_path / "queue.sqlite3"))
    config["relay"]["rate_limit"] = ""
    config["queue"].update(QUICK_QUEUE)
    path = write_config(tmp_path, config)
    env = clean_env(path, FORMRELAY_TEST_SEND_LOG=str(send_log),
                    PYTHONPATH=os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    try:
        with running("serve", path, tmp_path, workers=2, threads=4, env=env) as relay:
            person = {"email": "ann@example.org", "given_name": "Ann", "postal_code": "20009"}
            answers = [
                post(relay.url, "petition", {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org",
                                             "PostalCode": "20009"}),
                post(relay.url, "write-your-mp", {"First Name": "Ann", "Last Name": "Lee", "Postcode": "SW1A 1AA",
                                                  "Email Address": "ann@example.org"}),
                post(relay.url, "clean-air", person),
                post(relay.url, "toolkit", {"email": "ann@example.org", "first_name": "Ann"}),
            ]
            assert [a.json()["status"] for a in answers] == ["delivered"] * 4, [a.text for a in answers]

            def wrapped() -> list[str]:
                return [f"{line.split(' ', 1)[0]} {_path(line.split(' ', 1)[1])}"
                        for line in send_log.read_text().splitlines()]

            # the ENS form's follow-up email goes to EngageOne from the queue: wait until both sides agree
            assert wait_for(lambda: any("/engageone/api/campaigns/v2/ThanksForWriting" in c for c in seen_by_crm)
                            and Counter(wrapped()) == Counter(seen_by_crm), 30), (wrapped(), seen_by_crm)
            time.sleep(0.5)  # nothing more arrives unseen
            assert Counter(wrapped()) == Counter(seen_by_crm)
            for crm in ("/ngp/", "/ens/", "/actionnetwork/", "/engageone/"):
                assert any(crm in call for call in seen_by_crm), crm
            assert any(call.startswith("POST /ens/service/authenticate") for call in wrapped())
    finally:
        sandbox.stop()


def _path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


# ---- a CRM's redirect to another host ------------------------------------------------------------------------

REDIRECTED = {
    # provider -> (the call answered with 307, config for the relay, a valid submission)
    "actionnetwork": ("POST /api/v2/petitions/air/signatures",
                      {"base_url": "{crm}/api/v2", "api_key": "an-secret-key-0123456789"},
                      {"action": "petition", "action_id": "air"}, {"email": "ann@example.org"}),
    "ens": ("POST /ens/service/authenticate", {"base_url": "{crm}/ens/service", "api_token": "ens-token-0123456789"},
            {"page_id": 12345, "fields": {"Email Address": {"required": True}}},
            {"Email Address": "ann@example.org"}),
    "ngp": ("POST /ngp/v2/forms/demo-petition", {"base_url": "{crm}/ngp/v2", "api_key": "ngp-key-0123456789"},
            {"form_id": "demo-petition"},
            {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009"}),
}


@pytest.mark.parametrize("provider", sorted(REDIRECTED))
def test_a_crm_redirect_to_another_host_delivers_nothing_there_and_is_not_delivered(provider, tmp_path):
    redirected_call, settings, form, body = REDIRECTED[provider]
    sandbox = ServerThread(create_sandbox()).start()  # NGP's form definition comes from here
    with fake(lambda h, b: reply(h, 200, b'{"ok": true}'), host="127.0.0.2") as elsewhere:

        def crm(handler: http.server.BaseHTTPRequestHandler, _: bytes) -> None:
            if f"{handler.command} {handler.path}" == redirected_call:
                return reply(handler, 307, b"", {"Location": f"{elsewhere.url}/collect"})
            if handler.command == "GET" and provider == "ngp":  # the definition, as the sandbox has it
                got = requests.get(f"{sandbox.url}{handler.path}", timeout=5)
                return reply(handler, got.status_code, got.content)
            return reply(handler, 200, b"{}")

        try:
            with fake(crm) as upstream:
                config = {"relay": {"rate_limit": ""},
                          "queue": {"path": str(tmp_path / "q.sqlite3"), **QUICK_QUEUE},
                          "providers": {provider: {k: v.format(crm=upstream.url) for k, v in settings.items()}},
                          "forms": {"f": {"provider": provider, **form}}}
                path = write_config(tmp_path, config)
                with running("serve", path, tmp_path, workers=1, threads=4) as relay:
                    answer = post(relay.url, "f", body)
                    if provider == "ens":  # no session token, so no definition: the form is unavailable for now
                        assert answer.status_code == 503 and answer.json()["status"] == "unavailable", answer.text
                        retries = 1
                    else:
                        assert answer.status_code == 202 and answer.json()["status"] == "queued", answer.text
                        retries = 3  # the worker tries again (backoff 0.2 s): still nothing goes elsewhere
                    assert wait_for(lambda: sum(f"{r['method']} {r['path']}" == redirected_call
                                                for r in upstream.received) >= retries, 20)
                    time.sleep(0.5)
                    output = relay.output()
            assert elsewhere.received == []
            assert f"[providers.{provider}] base_url" in output and "redirect not followed" in output
            assert output.count("redirect not followed (calls follow no redirects)") == 1  # one warning per setting
            for secret in settings.values():
                if "secret" in secret or "token" in secret or "key" in secret:
                    assert secret not in output
        finally:
            sandbox.stop()


# ---- a 300 MB answer, from a CRM and from a webhook receiver ---------------------------------------------------

def _tree(pid: int) -> list[int]:
    """pid and every process below it (granian's workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def _peak_kb(pid: int) -> int:
    """The largest peak resident size (VmHWM) among the server's processes."""
    peaks = []
    for member in _tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]))
    return max(peaks)


def test_a_300_mb_answer_raises_the_workers_peak_memory_by_less_than_64_mb(sandbox, tmp_path):
    with fake(lambda h, b: huge(h)) as crm, fake(lambda h, b: huge(h)) as receiver:
        config = {
            "relay": {"rate_limit": ""},
            "queue": {"path": str(tmp_path / "q.sqlite3"), "backoff_base": 30.0, "poll_interval": 0.1},
            "providers": {"actionnetwork": {"base_url": f"{crm.url}/api/v2"},
                          "ngp": {"base_url": f"{sandbox.url}/ngp/v2", "api_key": "sandbox-ngp-api-key"}},
            "forms": {
                "sign": {"provider": "actionnetwork", "action": "petition", "action_id": "air"},
                "join": {"provider": "ngp", "form_id": "demo-petition",
                         "webhooks": [{"url": f"{receiver.url}/hook", "secret": SECRET, "events": ["delivered"]}]},
            },
        }
        path = write_config(tmp_path, config)
        person = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009"}
        with running("serve", path, tmp_path, workers=1, threads=4) as relay:
            # warm up every path once with small answers (imports, pools), then measure
            assert post(relay.url, "join", person).json()["status"] == "delivered"
            assert wait_for(lambda: len(receiver.received) == 1, 15)
            before = _peak_kb(relay.proc.pid)
            answer = post(relay.url, "sign", {"email": "ann@example.org"})
            assert answer.status_code == 202 and answer.json()["status"] == "queued", answer.text  # not "delivered"
            assert post(relay.url, "join", {**person, "EmailAddress": "bo@example.org"}).json()["status"] == "delivered"
            assert wait_for(lambda: len(receiver.received) == 2, 15)
            time.sleep(1.0)  # the webhook's attempt ends after its status is read
            after = _peak_kb(relay.proc.pid)
            output = relay.output()
    print(f"worker peak RSS {before / 1024:.0f} -> {after / 1024:.0f} MB around a 300 MB answer")
    assert after - before < 64 * 1024, (before, after)
    assert "answer longer than 1,000,000 bytes" in output


# ---- a webhook receiver dripping its answer ---------------------------------------------------------------------

def drip(handler: http.server.BaseHTTPRequestHandler, _: bytes) -> None:
    """One byte a second, for ever: each within the read timeout, the whole never."""
    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b" " * 100000:
        handler.wfile.write(bytes([byte]))
        handler.wfile.flush()
        time.sleep(1.0)


def test_a_dripping_webhook_receiver_does_not_hold_the_queue(sandbox, tmp_path):
    """One queue worker thread, a receiver that never finishes its answer: each attempt ends at the deadline
    (connect_timeout + timeout = 3 s), and a submission queued behind it is delivered within a few seconds."""
    with fake(drip) as receiver:
        config = {
            "relay": {"rate_limit": "", "timeout": 2.0, "connect_timeout": 1.0},
            "queue": {"path": str(tmp_path / "q.sqlite3"), "workers": 1, **QUICK_QUEUE},
            "providers": {"ngp": {"base_url": f"{sandbox.url}/ngp/v2", "api_key": "sandbox-ngp-api-key"}},
            "forms": {"join": {"provider": "ngp", "form_id": "demo-petition",
                               "webhooks": [{"name": "slow", "url": f"{receiver.url}/hook", "secret": SECRET,
                                             "events": ["delivered"]}]}},
        }
        path = write_config(tmp_path, config)
        person = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009"}
        with running("serve", path, tmp_path, workers=1, threads=4) as relay:
            assert post(relay.url, "join", person).json()["status"] == "delivered"
            assert wait_for(lambda: len(receiver.received) >= 1, 10)  # the worker is now in the dripping call
            requests.post(f"{sandbox.url}/_control/fail", json={"provider": "ngp", "status": 503, "count": 1},
                          timeout=5)
            queued_at = time.monotonic()
            answer = post(relay.url, "join", {**person, "EmailAddress": "bo@example.org"})
            assert answer.json()["status"] == "queued", answer.text

            def delivered() -> bool:
                got = requests.get(f"{sandbox.url}/_control/received/ngp", timeout=5).json()
                return any("bo@example.org" in json.dumps(r) for r in got)

            assert wait_for(delivered, 12), relay.output()[-3000:]
            waited = time.monotonic() - queued_at
            assert wait_for(lambda: "webhook slow: no complete answer within 3 s" in relay.output(), 10), \
                relay.output()[-3000:]
    assert waited < 8, waited  # one cut attempt (3 s) and a backoff at most ahead of it


def test_a_dripping_crm_answer_ends_at_the_deadline_and_the_submission_is_kept(tmp_path):
    """Action Network's URL answers one byte a second: the supporter hears `queued` at answer_within, and the
    attempt itself ends at connect_timeout + timeout instead of holding its thread for ever."""
    with fake(drip) as crm:
        config = {
            "relay": {"rate_limit": "", "timeout": 2.0, "connect_timeout": 1.0, "answer_within": 1.0},
            "queue": {"path": str(tmp_path / "q.sqlite3"), "backoff_base": 60.0, "poll_interval": 0.1},
            "providers": {"actionnetwork": {"base_url": f"{crm.url}/api/v2"}},
            "forms": {"sign": {"provider": "actionnetwork", "action": "petition", "action_id": "air"}},
        }
        path = write_config(tmp_path, config)
        with running("serve", path, tmp_path, workers=1, threads=4) as relay:
            started = time.monotonic()
            answer = post(relay.url, "sign", {"email": "ann@example.org"})
            assert answer.json()["status"] == "queued", answer.text
            assert time.monotonic() - started < 2.5
            assert wait_for(lambda: "actionnetwork: no complete answer within 3 s" in relay.output(), 6), \
                relay.output()[-3000:]
            assert time.monotonic() - started < 6

"""Abuse protection and hardening: traps, CAPTCHA, origins, limits, proxies, headers, secrets, personal data."""
from __future__ import annotations

import logging
import time

import pytest
import responses

from formrelay import abuse, create_app
from tests.conftest import NGP_FORM_URL, NGP_KEY, NGP_SUCCESS, base_config

VALID = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009"}


def app_with(mocked, form=None, **relay):
    raw = base_config(**relay)
    raw["forms"]["join"].update(form or {})
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    return create_app(raw)


def trap_of(app):
    return app.extensions["formrelay"].time_trap


def upstream_posts(mocked):
    return [c for c in mocked.calls if c.request.method == "POST" and c.request.url == NGP_FORM_URL]


# -- honeypot and time-trap ----------------------------------------------------------------------

def test_a_caught_bot_sees_the_same_words_as_the_last_person_who_got_through(mocked):
    client = app_with(mocked).test_client()
    person = client.post("/v1/forms/join", json=VALID).get_json()
    bot = client.post("/v1/forms/join", json={**VALID, "_hp": "http://spam.example"}).get_json()
    assert person["message"] == "Thanks & welcome!" and bot == person
    assert len(upstream_posts(mocked)) == 1


def test_a_filled_honeypot_gets_a_fake_success_and_nothing_is_delivered(mocked):
    client = app_with(mocked).test_client()
    before = abuse.counts().get(("join", "honeypot filled"), 0)
    answer = client.post("/v1/forms/join", json={**VALID, "_hp": "http://spam.example"})
    assert answer.status_code == 200 and answer.get_json()["status"] == "delivered"
    assert upstream_posts(mocked) == []
    assert abuse.counts()[("join", "honeypot filled")] == before + 1
    plain = client.post("/v1/forms/join", data={**VALID, "_hp": "x"})
    assert plain.status_code == 303 and plain.headers["Location"] == "https://www.example.org/thanks"


def test_time_trap_tokens(mocked):
    app = app_with(mocked, time_trap_min=1.0)
    client = app.test_client()
    token = client.get("/v1/forms/join").get_json()["started"]
    client.post("/v1/forms/join", json={**VALID, "_started": token})
    assert upstream_posts(mocked) == []  # too fast
    time.sleep(1.05)
    client.post("/v1/forms/join", json={**VALID, "_started": token})
    assert len(upstream_posts(mocked)) == 1
    client.post("/v1/forms/join", json={**VALID, "_started": token[:-2] + "xx"})
    client.post("/v1/forms/join", json={**VALID, "_started": "join.1234.abc"})
    client.post("/v1/forms/join", json={**VALID, "_started": trap_of(app).signer.sign("join.soon").decode()})
    assert len(upstream_posts(mocked)) == 1  # forged ones were discarded
    client.post("/v1/forms/join", json=VALID)
    assert len(upstream_posts(mocked)) == 2  # no token: a plain HTML form, accepted by default


def test_an_old_token_or_another_forms_token_is_discarded(mocked):
    app = app_with(mocked, time_trap_min=0, time_trap_max=60)
    trap = app.extensions["formrelay"].time_trap
    client = app.test_client()
    client.post("/v1/forms/join", json={**VALID, "_started": trap.issue("join", now=time.time() - 3600)})
    client.post("/v1/forms/join", json={**VALID, "_started": trap.issue("other")})
    assert upstream_posts(mocked) == []
    assert trap.verdict("join", trap.issue("join", now=time.time() - 3600), False) == "time-trap token too old"
    assert trap.verdict("join", trap.issue("other"), False) == "time-trap token for another form"
    assert trap.verdict("join", trap.issue("join"), False) is None


def test_a_form_can_require_the_token(mocked):
    client = app_with(mocked, form={"require_started": True}).test_client()
    assert client.post("/v1/forms/join", json=VALID).get_json()["status"] == "delivered"
    assert upstream_posts(mocked) == []


# -- CAPTCHA -------------------------------------------------------------------------------------

VERIFY = "https://captcha.test/siteverify"
CAPTCHA_SECRET = "captcha-secret-55aa66bb"


@pytest.mark.parametrize(("provider", "field"), [("turnstile", "cf-turnstile-response"),
                                                 ("hcaptcha", "h-captcha-response"),
                                                 ("recaptcha", "g-recaptcha-response")])
def test_captcha_is_verified_server_side_and_never_forwarded(mocked, provider, field):
    client = app_with(mocked, form={"captcha": {"provider": provider, "secret": CAPTCHA_SECRET,
                                                "verify_url": VERIFY}}).test_client()
    mocked.post(VERIFY, json={"success": True})
    assert client.post("/v1/forms/join", json={**VALID, field: "good-token"}).status_code == 200
    verify = [c for c in mocked.calls if c.request.url == VERIFY][0]
    assert "secret=captcha-secret-55aa66bb" in verify.request.body and "response=good-token" in verify.request.body
    assert field not in upstream_posts(mocked)[0].request.body
    mocked.replace(responses.POST, VERIFY, json={"success": False, "error-codes": ["invalid-input-response"]})
    refused = client.post("/v1/forms/join", json={**VALID, field: "bad"})
    assert refused.status_code == 422 and field in refused.get_json()["errors"]
    missing = client.post("/v1/forms/join", json=VALID)
    assert missing.status_code == 422 and len(upstream_posts(mocked)) == 1


@pytest.mark.parametrize(("policy", "code"), [("reject", 503), ("accept", 200)])
def test_captcha_service_down_follows_the_policy(mocked, policy, code):
    client = app_with(mocked, form={"captcha": {"provider": "turnstile", "secret": CAPTCHA_SECRET,
                                                "verify_url": VERIFY, "on_error": policy}}).test_client()
    mocked.post(VERIFY, status=502, body="<html>bad gateway</html>")
    answer = client.post("/v1/forms/join", json={**VALID, "cf-turnstile-response": "t"})
    assert answer.status_code == code and CAPTCHA_SECRET not in answer.get_data(as_text=True)


# -- origins and redirects -----------------------------------------------------------------------

def test_browser_posts_from_other_sites_are_refused(mocked):
    client = app_with(mocked).test_client()
    foreign = client.post("/v1/forms/join", json=VALID, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403 and foreign.get_json() == {
        "ok": False, "status": "forbidden", "message": "This form does not accept submissions from this site."}
    by_referer = client.post("/v1/forms/join", data=VALID, headers={"Referer": "https://evil.example/page"})
    assert by_referer.status_code == 403 and by_referer.mimetype == "text/html"
    null = client.post("/v1/forms/join", json=VALID, headers={"Origin": "null"})
    assert null.status_code == 403
    assert client.post("/v1/forms/join", json=VALID, headers={"Origin": "https://www.example.org"}).status_code == 200
    assert client.post("/v1/forms/join", json=VALID,
                       headers={"Referer": "https://www.example.org/join?x=1"}).status_code == 200
    assert client.post("/v1/forms/join", json=VALID).status_code == 200  # server-to-server: no header
    assert client.post("/v1/forms/join", json=VALID, headers={"Origin": "http://localhost"}).status_code == 200
    assert len(upstream_posts(mocked)) == 4


def test_require_origin_refuses_posts_without_one(mocked):
    client = app_with(mocked, require_origin=True).test_client()
    assert client.post("/v1/forms/join", json=VALID).status_code == 403


def test_redirects_only_go_to_configured_urls(mocked):
    client = app_with(mocked).test_client()
    for field in ("redirect", "_redirect", "success_url", "next"):
        answer = client.post("/v1/forms/join", data={**VALID, field: "https://evil.example"})
        assert answer.headers["Location"] == "https://www.example.org/thanks"
    page = client.post("/v1/forms/join", data={"FirstName": "A"}, headers={"Referer": "javascript:alert(1)"})
    assert "javascript:" not in page.get_data(as_text=True)


# -- rate limits and proxies -----------------------------------------------------------------------

def test_the_relay_wide_rate_queues_valid_submissions_and_junk_does_not_count(mocked, tmp_path):
    raw = base_config(global_rate_limit="3/minute")
    raw["queue"] = {"path": str(tmp_path / "q.sqlite3")}
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    client = create_app(raw).test_client()
    junk = [client.post("/v1/forms/join", json={}, environ_base={"REMOTE_ADDR": f"10.0.0.{i}"}).status_code
            for i in range(4)]
    junk.append(client.post("/v1/forms/join", data="x", content_type="text/plain").status_code)
    assert junk == [422, 422, 422, 422, 415]  # none of these spent the relay-wide allowance
    codes = [client.post("/v1/forms/join", json=VALID, environ_base={"REMOTE_ADDR": f"10.0.1.{i}"}).status_code
             for i in range(5)]
    assert codes == [200, 200, 200, 202, 202]  # above the rate: kept and queued, never refused


def test_x_forwarded_for_is_ignored_unless_proxies_are_trusted(mocked):
    client = app_with(mocked, rate_limit="1/minute").test_client()
    first = client.post("/v1/forms/join", json={}, headers={"X-Forwarded-For": "1.1.1.1"})
    second = client.post("/v1/forms/join", json={}, headers={"X-Forwarded-For": "2.2.2.2"})
    assert (first.status_code, second.status_code) == (422, 429)

    trusting = app_with(mocked, rate_limit="1/minute", trusted_proxies=1).test_client()
    one = trusting.post("/v1/forms/join", json={}, headers={"X-Forwarded-For": "1.1.1.1"})
    two = trusting.post("/v1/forms/join", json={}, headers={"X-Forwarded-For": "2.2.2.2"})
    spoofed = trusting.post("/v1/forms/join", json={}, headers={"X-Forwarded-For": "9.9.9.9, 2.2.2.2"})
    assert (one.status_code, two.status_code, spoofed.status_code) == (422, 422, 429)


# -- headers, secrets, personal data -----------------------------------------------------------------

def test_html_answers_carry_security_headers(mocked):
    client = app_with(mocked).test_client()
    for answer in (client.post("/v1/forms/join", data={"FirstName": "A"}), client.get("/v1/forms/join/thanks")):
        assert answer.mimetype == "text/html"
        assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert client.get("/v1/forms/join").headers["X-Content-Type-Options"] == "nosniff"


ALL_SECRETS = {"ngp": NGP_KEY, "captcha": CAPTCHA_SECRET, "relay": "relay-signing-key-0123456789abcdef"}


def test_no_configured_secret_appears_in_any_answer_or_log(mocked, caplog):
    raw = base_config(secret_key=ALL_SECRETS["relay"])
    raw["forms"]["join"]["captcha"] = {"provider": "turnstile", "secret": CAPTCHA_SECRET, "verify_url": VERIFY}
    mocked.post(VERIFY, status=400, body=f"bad secret {CAPTCHA_SECRET}")
    mocked.post(NGP_FORM_URL, status=500, body=f"error for key {NGP_KEY}")
    client = create_app(raw).test_client()
    with caplog.at_level(logging.DEBUG):
        answers = [client.get("/v1/forms/join"), client.get("/v1/openapi.json"), client.get("/healthz"),
                   client.post("/v1/forms/join", json={**VALID, "cf-turnstile-response": "t"}),
                   client.post("/v1/forms/join", data={**VALID, "cf-turnstile-response": "t"}),
                   client.post("/v1/forms/join", json={**VALID, "_hp": "x"}),
                   client.options("/v1/forms/join", headers={"Origin": "https://www.example.org"})]
        logging.getLogger("formrelay.test").error("echo %s / %s / %s", *ALL_SECRETS.values())
    for secret in ALL_SECRETS.values():
        for answer in answers:
            assert secret not in answer.get_data(as_text=True) + str(answer.headers)
        assert secret not in caplog.text


def test_personal_data_is_masked_in_logs_unless_switched_on(mocked, caplog):
    create_app(base_config())
    with caplog.at_level(logging.INFO):
        logging.getLogger("formrelay.test").info("supporter ann.lee@example.org phone +1 202 555 0123")
    assert "ann.lee@" not in caplog.text and "a***@example.org" in caplog.text and "555 0123" not in caplog.text
    raw = base_config()
    raw["logging"] = {"personal_data": True}
    create_app(raw)
    try:
        with caplog.at_level(logging.INFO):
            logging.getLogger("formrelay.test").info("debug ann.lee@example.org")
        assert "debug ann.lee@example.org" in caplog.text
    finally:
        create_app(base_config())  # back to masking for the other tests


def test_the_captcha_check_follows_no_redirect_and_reads_a_bounded_answer():
    """The CAPTCHA service is an upstream like a CRM: a 307 elsewhere carries the secret nowhere, and an answer
    larger than a verdict can be is 'unavailable', read no further (a real server on 127.0.0.1)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            hits.append(self.path)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path == "/redirect":
                self.send_response(307)
                self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path == "/huge":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(50_000_000))
                self.end_headers()
                try:
                    self.wfile.write(b'{"success": true, "pad": "' + b"x" * 1_000_000)
                except OSError:
                    pass
            else:
                body = b'{"success": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        def verdict(path):
            captcha = abuse.Captcha(provider="turnstile", secret="captcha-secret-1", verify_url=f"{base}{path}")
            return abuse.verify_captcha(captcha, "token", "192.0.2.1", 5.0)

        assert verdict("/ok") == "ok"
        assert verdict("/redirect") == "unavailable"
        assert verdict("/huge") == "unavailable"
    finally:
        server.shutdown()
    assert hits == ["/ok", "/redirect", "/huge"]  # never /elsewhere

"""Provider.request through requests' Session.send: the same request on the wire as Session.request would send,
cookies kept, no redirect followed, answers read within a byte bound and a wall-clock deadline."""
from __future__ import annotations

import gzip
import http.server
import json
import socket
import threading
import time

import pytest
import requests
import responses
from requests.models import RequestEncodingMixin

from formrelay.core.config import RelaySettings
from formrelay.core.errors import TryLater
from formrelay.providers.base import Provider

URL = "https://crm.example.org/api/forms/7"
BOMB = gzip.compress(b"0" * 50_000_000, 1)  # 50 MB of zeros in a few hundred KB (made here: outside the tracing)


class Plain(Provider):
    """The smallest provider: only the HTTP plumbing of the base class is exercised."""

    name = "plain"
    settings_schema = None  # type: ignore[assignment]
    form_schema = None  # type: ignore[assignment]

    def definition(self, form):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def deliver(self, form, definition, submission):  # type: ignore[no-untyped-def]
        raise NotImplementedError


@pytest.fixture
def provider() -> Plain:
    plain = Plain(None, RelaySettings())
    yield plain
    plain.close()


@pytest.mark.parametrize("data", [
    [("FirstName", "Ann Lee"), ("Tags", "é&="), ("FirstName", "2")],
    {"a": ["1", "2"], "skipped": None, "n": 3, "u": "ü"},
    [("k", ["1", None, "2"])],
])
@responses.activate
def test_form_bodies_are_encoded_exactly_as_requests_encodes_them(provider: Plain, data: object) -> None:
    responses.add(responses.POST, URL, json={"ok": True})
    provider.request("POST", URL, data=data, headers={"Accept": "application/json"})
    sent = responses.calls[0].request
    assert sent.body == RequestEncodingMixin._encode_params(data)
    assert sent.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert sent.headers["Content-Length"] == str(len(sent.body))
    assert sent.headers["User-Agent"].startswith("formrelay/") and sent.headers["Accept"] == "application/json"


@responses.activate
def test_an_explicit_content_type_json_and_session_auth_are_kept(provider: Plain) -> None:
    provider.http.auth = ("apiuser", "s3cret-key")
    responses.add(responses.POST, URL, json={"ok": True})
    provider.request("POST", URL, data=[("a", "1")], headers={"content-type": "application/x-www-form-urlencoded; "
                                                                              "charset=UTF-8"})
    provider.request("POST", URL, json={"email": "ann@example.org"})
    form, js = (c.request for c in responses.calls)
    assert form.headers["Content-Type"].endswith("charset=UTF-8")
    assert form.headers["Authorization"] == requests.Request("GET", URL, auth=("apiuser", "s3cret-key")).prepare() \
        .headers["Authorization"]
    assert js.headers["Content-Type"] == "application/json" and js.body == b'{"email": "ann@example.org"}'


@responses.activate
def test_cookies_are_kept_as_a_session_would(provider: Plain) -> None:
    responses.add(responses.GET, URL, json={"fields": []}, headers={"Set-Cookie": "sticky=abc; Path=/"})
    response = provider.request("GET", URL)
    assert response.status_code == 200 and response.json() == {"fields": []}
    assert provider.http.cookies.get("sticky") == "abc"
    provider.request("GET", URL)  # with a cookie in the jar, the session's own preparation sends it back
    assert responses.calls[-1].request.headers["Cookie"] == "sticky=abc"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308, 300])
@responses.activate
def test_no_redirect_is_followed_and_the_warning_names_the_setting(status: int, caplog) -> None:
    class Named(Plain):
        name = "named"

    class Settings:
        base_url = "https://crm.example.org/api"
        other_url = "https://elsewhere.example.org"

    provider = Named(Settings(), RelaySettings())
    responses.add(responses.POST, URL, status=status, headers={"Location": "https://attacker.example.net/x"})
    with caplog.at_level("WARNING"), pytest.raises(TryLater) as refused:
        provider.request("POST", URL, json={"email": "ann@example.org"})
    with pytest.raises(TryLater):
        provider.request("POST", URL, json={"email": "ann@example.org"})
    assert len(responses.calls) == 2  # nothing went to the Location
    assert "[providers.named] base_url" in refused.value.reason and not refused.value.may_have_arrived
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "[providers.named] base_url" in warnings[0]  # once, not per call
    assert "attacker" not in refused.value.reason + warnings[0]


# -- against a real HTTP server on 127.0.0.1 (responses would replace the adapter) -----------------------------


class _Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    peers: set[tuple[str, int]] = set()

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.peers.add(self.client_address)
        if self.path == "/slow":
            time.sleep(1.0)
        if self.path in ("/big", "/big-unsized", "/redirect-big", "/drip-body", "/drip-head", "/gzip-bomb", "/cut"):
            try:
                self.hostile()
            except OSError:
                self.close_connection = True  # the relay stopped reading, as it should
            return
        if self.path == "/hangup":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        answer = json.dumps({"got": body.decode(), "type": self.headers["Content-Type"]}).encode()
        if self.path == "/gzip":
            answer = gzip.compress(answer)
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        if self.path == "/gzip":
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


    def hostile(self) -> None:
        if self.path == "/drip-head":  # the status line, one byte at a time, each well within the read timeout
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}":
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.2)
            return
        self.send_response(307 if self.path == "/redirect-big" else 200)
        if self.path == "/redirect-big":
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
        if self.path == "/gzip-bomb":
            bomb = BOMB
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(bomb)))
            self.end_headers()
            self.wfile.write(bomb)
            return
        if self.path == "/cut":  # 10 bytes of a promised 100, then the connection closes
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b'{"ok": tru')
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if self.path == "/drip-body":
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.2)
            return
        if self.path != "/big-unsized":
            self.send_header("Content-Length", str(50_000_000))
        else:
            self.close_connection = True
        self.end_headers()
        chunk = b"x" * 65536
        try:
            for _ in range(50_000_000 // 65536):
                self.wfile.write(chunk)
        except OSError:
            pass  # the relay stopped reading, as it should


@pytest.fixture
def upstream() -> str:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path", ["/plain", "/gzip"])
def test_the_answer_is_read_decoded_and_the_connection_reused(provider: Plain, upstream: str, path: str) -> None:
    _Upstream.peers.clear()
    for _ in range(3):
        response = provider.request("POST", upstream + path, data=[("FirstName", "Ann Lee")])
        assert response.status_code == 201
        assert response.json() == {"got": "FirstName=Ann+Lee", "type": "application/x-www-form-urlencoded"}
        assert response.headers["content-type"] == "application/json"
    assert len(_Upstream.peers) == 1  # one keep-alive connection served all three


def test_network_failures_become_try_later(provider: Plain, upstream: str) -> None:
    quick = Plain(None, RelaySettings(timeout=0.3))
    try:
        with pytest.raises(TryLater) as slow:
            quick.request("POST", upstream + "/slow", data=[("a", "1")])
        assert slow.value.may_have_arrived and "no answer within" in slow.value.reason
        with pytest.raises(TryLater) as hangup:
            quick.request("POST", upstream + "/hangup", data=[("a", "1")])
        assert hangup.value.may_have_arrived  # sent, then the connection dropped: it may have been processed
    finally:
        quick.close()
    with pytest.raises(TryLater) as cut:
        provider.request("POST", upstream + "/cut", data=[("a", "1")])
    assert cut.value.may_have_arrived and "the answer was cut off" in cut.value.reason
    with pytest.raises(TryLater) as unusable:
        provider.request("POST", "http://", data=[("a", "1")])
    assert "request failed" in unusable.value.reason
    from tests.conftest import free_port

    closed_port = free_port()  # nothing listens there, and no other test will
    with pytest.raises(TryLater) as refused:
        provider.request("POST", f"http://127.0.0.1:{closed_port}/x", data=[("a", "1")])
    assert not refused.value.may_have_arrived


@pytest.mark.parametrize("path", ["/big", "/big-unsized", "/gzip-bomb", "/redirect-big"])
def test_an_answer_beyond_the_bound_is_try_later_and_never_read_whole(provider: Plain, upstream: str,
                                                                      path: str) -> None:
    import tracemalloc

    tracemalloc.start()
    try:
        started = time.monotonic()
        with pytest.raises(TryLater) as refused:
            provider.request("POST", upstream + path, data=[("a", "1")])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000, peak  # 50 MB offered, a bounded part read
    assert time.monotonic() - started < 5
    if path == "/redirect-big":
        assert "307 redirect not followed" in refused.value.reason
    else:
        assert "answer longer than 1,000,000 bytes" in refused.value.reason and refused.value.may_have_arrived


@pytest.mark.parametrize("path", ["/drip-head", "/drip-body"])
def test_a_dripping_answer_is_cut_at_the_deadline(upstream: str, path: str) -> None:
    # each byte comes within the read timeout (1 s); the whole answer would take 20 s or more
    quick = Plain(None, RelaySettings(timeout=1.0, connect_timeout=0.5))
    try:
        started = time.monotonic()
        with pytest.raises(TryLater) as slow:
            quick.request("POST", upstream + path, data=[("a", "1")])
        took = time.monotonic() - started
    finally:
        quick.close()
    assert 1.4 < took < 3.0, took
    assert "no complete answer within 1.5 s" in slow.value.reason and slow.value.may_have_arrived


def test_every_call_goes_through_session_send(provider: Plain, upstream: str, monkeypatch) -> None:
    seen: list[str] = []
    original = requests.Session.send

    def traced(self, request, **kwargs):  # what a tracing library does
        seen.append(f"{request.method} {request.url}")
        return original(self, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", traced)
    provider.request("POST", upstream + "/plain", data=[("a", "1")])
    with pytest.raises(TryLater):
        provider.request("POST", upstream + "/redirect-big", json={"a": 1})
    assert seen == [f"POST {upstream}/plain", f"POST {upstream}/redirect-big"]


class Timed(Plain):
    """deliver makes two calls; the second one's answer decides."""

    def deliver(self, form, definition, submission):  # type: ignore[no-untyped-def]
        from formrelay.core.errors import TryLater as Later
        from formrelay.core.outcome import Outcome

        self.request("GET", URL + "/token")
        answer = self.request("POST", URL)
        if answer.status_code >= 500:
            raise Later(f"plain: HTTP {answer.status_code}")
        return Outcome("delivered")


@responses.activate
def test_upstream_status_and_time_come_back_with_the_outcome_or_the_try_later() -> None:
    provider = Timed(None, RelaySettings())
    responses.add(responses.GET, URL + "/token", json={})
    responses.add(responses.POST, URL, json={}, status=201)
    responses.add(responses.POST, URL, json={}, status=503)
    outcome = provider.timed_deliver(None, None, None)  # type: ignore[arg-type]
    assert outcome.status == "delivered" and outcome.upstream_status == 201
    assert outcome.upstream_ms is not None and outcome.upstream_ms > 0
    with pytest.raises(TryLater) as later:
        provider.timed_deliver(None, None, None)  # type: ignore[arg-type]
    assert later.value.upstream_status == 503 and later.value.upstream_ms > 0
    # outside an attempt nothing is tallied, and nothing is written anywhere else (no flask.g)
    provider.request("GET", URL + "/token")
    from formrelay.providers import base

    assert base._TALLY.get() is None


@pytest.mark.parametrize(("method", "data", "body"), [
    ("POST", [("a", "1"), ("b", None), ("c", ["x", "ü"])], None),
    ("POST", {"k": 3, "none": None}, None),
    ("POST", b'{"raw": "bytes"}', None),
    ("POST", None, {"email": "ann@example.org", "n": [1, 2]}),
    ("POST", None, None),
    ("GET", None, None),
    ("PUT", "text body", None),
    ("POST", {}, {"json": "wins when data is empty"}),
])
def test_bodies_and_their_headers_are_prepared_as_requests_prepares_them(provider: Plain, method, data, body):
    ours = provider.upstream.prepare(method, URL, {"Accept": "application/json"}, data, body)
    theirs = requests.Request(method, URL, headers={"Accept": "application/json"}, data=data, json=body).prepare()
    assert ours.body == theirs.body
    for name in ("Content-Type", "Content-Length"):
        assert ours.headers.get(name) == theirs.headers.get(name), name

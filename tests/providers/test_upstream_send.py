"""Provider.request's lean send: the same request on the wire as requests' Session.request, with redirects and
cookies still handled by the session."""
from __future__ import annotations

import pytest
import requests
import responses
from requests.models import RequestEncodingMixin

from formrelay.core.config import RelaySettings
from formrelay.providers.base import PooledAdapter, Provider

URL = "https://crm.example.org/api/forms/7"


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
def test_redirects_are_followed_and_cookies_kept_as_a_session_would(provider: Plain) -> None:
    responses.add(responses.GET, URL, status=301, headers={"Location": URL + "/v2", "Set-Cookie": "sticky=abc; Path=/"})
    responses.add(responses.GET, URL + "/v2", json={"fields": []})
    response = provider.request("GET", URL)
    assert response.status_code == 200 and response.json() == {"fields": []}
    assert [r.status_code for r in response.history] == [301]
    assert provider.http.cookies.get("sticky") == "abc"
    provider.request("GET", URL + "/v2")  # with a cookie in the jar, the session's own path sends it back
    assert responses.calls[-1].request.headers["Cookie"] == "sticky=abc"


def test_the_pool_key_is_computed_once_per_host_and_handed_out_as_copies() -> None:
    adapter = PooledAdapter()
    request = requests.Request("GET", URL).prepare()
    first = adapter.build_connection_pool_key_attributes(request, "/etc/ssl/certs/ca-certificates.crt")
    first[0]["host"] = "changed"
    again = adapter.build_connection_pool_key_attributes(request, "/etc/ssl/certs/ca-certificates.crt")
    assert again[0] == {"scheme": "https", "host": "crm.example.org", "port": None}
    assert len(adapter._keys) == 1
    assert adapter.build_connection_pool_key_attributes(request, False)[1]["cert_reqs"] == "CERT_NONE"

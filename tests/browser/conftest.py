"""Headless Chromium (Debian's), driven by selenium; test pages on one origin, the relay on another."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask, Response, request

from formrelay import create_app
from formrelay.sandbox import ServerThread, create_sandbox
from tests.conftest import _need

CHROMIUM = os.environ.get("FORMRELAY_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FORMRELAY_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1000,1400"]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        _need("chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="formrelay-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


FIELDS_HTML = """
<p><label for="fn">First name</label><input id="fn" name="FirstName"></p>
<p><label for="ln">Last name</label><input id="ln" name="LastName"></p>
<p><label for="em">Email</label><input id="em" name="EmailAddress"></p>
<p><label for="pc">ZIP</label><input id="pc" name="PostalCode"></p>
<p><label><input type="checkbox" name="SmsOptIn"> Text me</label></p>
<p><button type="submit">Sign</button></p>
"""


def page(body: str, relay_url: str, script: bool = True) -> str:
    tag = f'<script src="{relay_url}/static/formrelay.js"></script>' if script else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>test page</title>'
            f'<link rel="stylesheet" href="{relay_url}/static/formrelay.css"></head><body>{body}{tag}</body></html>')


def make_site(state: dict[str, Any]) -> Flask:
    """The campaign's website: pages that use the relay, and a flaky proxy in front of it."""
    site = Flask("site")

    @site.get("/enhance")
    def enhance() -> str:
        relay = state["relay"]
        return page(f'<form data-formrelay method="post" action="{relay}/v1/forms/join">{FIELDS_HTML}</form>', relay)

    @site.get("/render")
    def render() -> str:
        relay = state["relay"]
        return page(f'<div data-formrelay-form="{relay}/v1/forms/join" data-formrelay-text-submit="Sign now"></div>', relay)

    @site.get("/render-stay")
    def render_stay() -> str:
        """A rendered form whose relay answers with a redirect, which the page declines."""
        relay = state["relay"]
        return page(f'<div data-formrelay-form="{relay}/v1/forms/join-redirect" data-formrelay-redirect="off"></div>',
                    relay)

    @site.get("/unconfigured")
    def unconfigured() -> str:
        """A rendered form and an enhanced one with no text of the page's own: the relay's words only."""
        relay = state["relay"]
        return page(f'<div data-formrelay-form="{relay}/v1/forms/join"></div>'
                    f'<form id="own" data-formrelay method="post" action="{relay}/v1/forms/join">{FIELDS_HTML}</form>',
                    relay)

    @site.get("/nojs")
    def nojs() -> str:
        relay = state["relay"]
        return page(f'<form method="post" action="{relay}/v1/forms/join-redirect">{FIELDS_HTML}</form>', relay, script=False)

    @site.get("/csp")
    def csp() -> Response:
        relay = state["relay"]
        body = page(f'<form data-formrelay method="post" action="{relay}/v1/forms/join">{FIELDS_HTML}</form>', relay)
        response = Response(body, mimetype="text/html")
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src {relay}; connect-src {relay}; style-src {relay}; form-action {relay}")
        return response

    @site.get("/flaky")
    def flaky() -> str:
        relay, proxy = state["relay"], state["proxy"]
        return page(f'<form data-formrelay method="post" action="{proxy}/proxy/v1/forms/join">{FIELDS_HTML}</form>', relay)

    @site.route("/proxy/<path:path>", methods=["GET", "POST", "OPTIONS"])
    def proxy(path: str) -> Response:
        """Forwards to the relay; the first POST's answer is lost on the way back (no CORS header)."""
        upstream = requests.request(request.method, f"{state['relay']}/{path}", data=request.get_data(),
                                    headers={k: v for k, v in request.headers if k.lower() != "host"}, timeout=10)
        response = Response(upstream.content, status=upstream.status_code)
        for name in ("Content-Type", "Access-Control-Allow-Origin", "Access-Control-Allow-Methods",
                     "Access-Control-Allow-Headers", "Access-Control-Max-Age"):
            if name in upstream.headers:
                response.headers[name] = upstream.headers[name]
        if request.method == "POST":
            state["posts"] += 1
            if state["posts"] == 1:
                response.headers.pop("Access-Control-Allow-Origin", None)
        return response

    @site.get("/thanks")
    def thanks() -> str:
        return "<!doctype html><title>thanks</title><h1>Thanks from the campaign</h1>"

    return site


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Sandbox NGP, the relay, and the campaign's site, each on its own 127.0.0.1 port."""
    state: dict[str, Any] = {"posts": 0}
    sandbox = ServerThread(create_sandbox()).start()
    site_app = make_site(state)
    site = ServerThread(site_app).start()
    proxy = ServerThread(site_app).start()  # the same app on another origin, so CORS applies to it
    state["site"], state["proxy"] = site.url, proxy.url
    app = create_app({
        "relay": {"allowed_origins": [site.url], "rate_limit": "", "time_trap_min": 0},
        "providers": {"ngp": {"base_url": f"{sandbox.url}/ngp/v2", "api_key": "sandbox-ngp-api-key"}},
        "forms": {"join": {"provider": "ngp", "form_id": "demo-petition"},
                  "join-redirect": {"provider": "ngp", "form_id": "demo-petition", "success_url": f"{site.url}/thanks",
                                    "error_url": f"{site.url}/nojs"}},
        "queue": {"path": str(tmp_path_factory.mktemp("queue") / "q.sqlite3")},
    })
    relay = ServerThread(app).start()
    state["relay"] = relay.url
    state["sandbox"] = sandbox.url
    yield state
    for server in (relay, site, proxy, sandbox):
        server.stop()


@pytest.fixture
def fresh(stack) -> dict[str, Any]:
    requests.post(f"{stack['sandbox']}/_control/reset", timeout=5)
    stack["posts"] = 0
    return stack

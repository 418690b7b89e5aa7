"""A jquery-osdi site switched to formrelay by one URL: the REAL plugin and jQuery (npm, at test time) in Chromium.

`jquery-osdi` 1.0.0 (opensupporter, MIT) and jQuery are installed from the npm registry into a temporary prefix
when the tests start (npm's cache makes reruns quick); nothing of theirs is in the repository. The page is the
plugin's README usage: inputs with the plugin's names, `$('form').osdi({...})` on document ready, the target in
the form's `action` (or the `endpoint` option), `done` / `fail` callbacks. Only the target URL is formrelay's.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask, Response, abort, request
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from formrelay import create_app
from formrelay.sandbox import ServerThread, create_sandbox
from tests.conftest import _need

pytestmark = pytest.mark.e2e

PLUGIN = "jquery-osdi@1.0.0"  # the plugin's only release
# jQuery: 1.11.0 is what the plugin's README includes, 3 what most campaign sites run, 4 what npm installs today.
JQUERIES = {"1.11": "jquery-1.11@npm:jquery@1.11.0", "3": "jquery-3@npm:jquery@3", "4": "jquery-4@npm:jquery@4"}

# The plugin's README, "Basic Usage" and "Form Input Names": its input names, its options, its callbacks.
PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign</title></head><body>
<form %(action)s method="post">
  <input name="given_name" value="Jane"> <input name="family_name" value="Doe">
  <input name="email_address" value="jane@example.org"> <input name="phone_number" value="%(phone)s">
  <input name="street" value="1 Main St"> <input name="locality" value="Springfield">
  <input name="region" value="IL"> <input name="postal_code" value="62701"> <input name="country" value="US">
  <input type="submit" value="Sign">
</form>
<p id="result"></p>
<script src="/js/%(jquery)s.js" type="text/javascript"></script>
<script src="/js/jquery.osdi.js" type="text/javascript"></script>
<script type="text/javascript">
$(document).ready(function() {
  $('form').osdi({%(options)s
    done: function(data, textStatus, jqXHR) { $('#result').text('done ' + jqXHR.status + ' ' + jqXHR.responseText); },
    fail: function(jqXHR, textStatus, errorThrown) { $('#result').text('fail ' + jqXHR.status + ' ' + jqXHR.responseText); }
  });
});
</script></body></html>"""


@pytest.fixture(scope="module")
def npm_scripts(tmp_path_factory) -> dict[str, Path]:
    """The plugin and each jQuery from the npm registry, into a temporary prefix: name -> script file."""
    npm = shutil.which("npm")
    if npm is None:
        _need("npm")
    prefix = tmp_path_factory.mktemp("npm")
    wanted = [PLUGIN, *JQUERIES.values()]
    try:
        done = subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-save", "--no-audit", "--no-fund", "--ignore-scripts",
             "--prefer-offline", "--loglevel=error", *wanted],
            capture_output=True, text=True, timeout=240, env={**os.environ, "npm_config_update_notifier": "false"})
    except subprocess.TimeoutExpired:
        done = None
    modules = prefix / "node_modules"
    scripts = {"jquery.osdi": modules / "jquery-osdi" / "jquery.osdi.js",
               **{f"jquery-{v}": modules / f"jquery-{v}" / "dist" / "jquery.min.js" for v in JQUERIES}}
    if done is None or done.returncode != 0 or not all(p.is_file() for p in scripts.values()):
        _need(f"{' '.join(wanted)} from npm ({done.stderr.strip()[-300:] if done else 'timed out'})")
    return scripts


@pytest.fixture(scope="module")
def osdi_stack(npm_scripts, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Sandbox CRMs, the relay, and the campaign site, on three 127.0.0.1 origins; the relay notes what it was sent."""
    state: dict[str, Any] = {"seen": []}
    site_app = Flask("osdi-site")

    @site_app.get("/js/<name>.js")
    def script(name: str) -> Response:
        if name not in npm_scripts:
            abort(404)
        return Response(npm_scripts[name].read_bytes(), mimetype="text/javascript")

    @site_app.get("/sign/<jquery>/<slug>")
    def sign(jquery: str, slug: str) -> str:
        """?tags=a,b -> add_tags; ?quiet -> autoresponse: false; ?endpoint -> the option instead of `action`."""
        target = f"{state['relay']}/v1/forms/{slug}"
        options = ""
        if request.args.get("tags"):
            options += f"\n    add_tags: {json.dumps(request.args['tags'].split(','))},"
        if "quiet" in request.args:
            options += "\n    autoresponse: false,"
        if "endpoint" in request.args:
            options += f"\n    endpoint: {json.dumps(target)},"
            action = ""
        else:
            action = f'action="{target}"'
        return PAGE % {"action": action, "jquery": f"jquery-{jquery}", "options": options,
                       "phone": request.args.get("phone", "(202) 555-0123")}

    an = {"provider": "actionnetwork", "action": "petition", "action_id": "air", "add_tags": ["clean-air"],
          "osdi": {"allow_add_tags": ["volunteer"]}}
    sandbox = ServerThread(create_sandbox()).start()
    site = ServerThread(site_app).start()
    relay_app = create_app({
        "relay": {"allowed_origins": [site.url], "rate_limit": ""},
        "providers": {"actionnetwork": {"base_url": f"{sandbox.url}/actionnetwork/api/v2"},
                      "ngp": {"base_url": f"{sandbox.url}/ngp/v2", "api_key": "sandbox-ngp-api-key"}},
        "forms": {"clean-air": an,
                  "clean-air-quiet": {**an, "osdi": {"allow_autoresponse_off": True}},
                  "join": {"provider": "ngp", "form_id": "demo-petition"}},
        "queue": {"path": str(tmp_path_factory.mktemp("queue") / "q.sqlite3")},
    })

    @relay_app.before_request
    def note() -> None:
        """What the plugin really sends: method, type, and the headers a preflight asks leave for."""
        state["seen"].append((request.method, request.path, request.mimetype,
                              request.headers.get("Access-Control-Request-Headers", "").lower()))

    relay = ServerThread(relay_app).start()
    state.update(relay=relay.url, site=site.url, sandbox=sandbox.url)
    yield state
    for server in (relay, site, sandbox):
        server.stop()


@pytest.fixture
def open_page(browser, osdi_stack) -> Any:
    """Open a signing page on a fresh sandbox, with the plugin attached."""
    def opener(path: str) -> Any:
        requests.post(f"{osdi_stack['sandbox']}/_control/reset", timeout=5)
        browser.get(f"{osdi_stack['site']}{path}")
        WebDriverWait(browser, 10).until(lambda d: d.execute_script(
            "return !!(window.jQuery && jQuery.fn.osdi && jQuery('form').data('plugin_osdi'))"))
        return browser
    return opener


def submit(page) -> tuple[str, int, dict[str, Any]]:
    """Click the form's button; which callback fired, the HTTP status, and the JSON answer."""
    page.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    text = WebDriverWait(page, 15).until(lambda d: d.find_element(By.ID, "result").text)
    callback, status, answer = text.split(" ", 2)
    return callback, int(status), json.loads(answer)


def received(stack, provider: str) -> list[dict[str, Any]]:
    return requests.get(f"{stack['sandbox']}/_control/received/{provider}", timeout=5).json()


@pytest.mark.parametrize("jquery", ["1.11", "3"])
def test_the_plugin_fires_done_and_action_network_gets_the_person_tags_and_triggers_of_the_config(
        open_page, osdi_stack, jquery):
    page = open_page(f"/sign/{jquery}/clean-air?tags=volunteer,donor")
    assert page.execute_script("return jQuery.fn.jquery").startswith(jquery)
    posts_before = [s for s in osdi_stack["seen"] if s[0] == "POST"]
    assert submit(page) == ("done", 200, {"ok": True, "status": "delivered"})
    # What the plugin sends: JSON, after a preflight (the browser caches it for Access-Control-Max-Age, so it is
    # seen once per URL in this module) that asks leave for Content-Type only: no OSDI-Client or other header.
    seen = osdi_stack["seen"]
    assert [s for s in seen if s[0] == "POST"] == [*posts_before, ("POST", "/v1/forms/clean-air", "application/json", "")]
    assert [s for s in seen if s[0] == "OPTIONS"] == [("OPTIONS", "/v1/forms/clean-air", "", "content-type")]
    (got,) = received(osdi_stack, "actionnetwork")
    assert got["path"].endswith("/petitions/air/signatures")
    assert got["keyed"] is False  # blind: the browser never had a key, and the relay sent none
    person = got["body"]["person"]
    assert person["given_name"] == "Jane" and person["family_name"] == "Doe"
    assert person["email_addresses"] == [{"address": "jane@example.org"}]  # the plugin's "subscribed": form's rule
    assert person["phone_numbers"][0]["number"] == "12025550123"  # "(202) 555-0123" normalised
    assert person["postal_addresses"] == [{"address_lines": ["1 Main St"], "locality": "Springfield",
                                           "region": "IL", "postal_code": "62701", "country": "US"}]
    assert got["body"]["add_tags"] == ["clean-air", "volunteer"]  # "donor" is not on the form's allow-list
    assert got["body"]["triggers"] == {"autoresponse": {"enabled": True}}  # the form's autoresponse = true


def test_the_plugins_autoresponse_false_switches_it_off_where_the_form_allows_it(open_page, osdi_stack):
    page = open_page("/sign/3/clean-air-quiet?quiet")
    assert submit(page)[:2] == ("done", 200)
    (got,) = received(osdi_stack, "actionnetwork")
    assert "triggers" not in got["body"]  # the plugin sends no triggers at all for autoresponse: false


@pytest.mark.parametrize("jquery", ["1.11", "3"])
def test_a_bad_email_fires_fail_with_a_422_naming_the_field_and_nothing_is_sent(open_page, osdi_stack, jquery):
    page = open_page(f"/sign/{jquery}/clean-air")
    email = page.find_element(By.NAME, "email_address")
    email.clear()
    email.send_keys("jane@")
    callback, status, answer = submit(page)
    assert (callback, status, answer["status"]) == ("fail", 422, "invalid")
    assert answer["errors"] == {"email_address": ["Enter a valid email address. (at person.email_addresses[0].address)"]}
    assert received(osdi_stack, "actionnetwork") == []


def test_the_plugins_endpoint_option_pointed_at_an_ngp_form_delivers_the_fields_mapped(open_page, osdi_stack):
    page = open_page("/sign/3/join?endpoint&phone=12025550123")  # the plugin's documented phone format
    callback, status, answer = submit(page)
    assert (callback, status, answer["status"]) == ("done", 200, "delivered")
    (got,) = received(osdi_stack, "ngp")
    fields = {k: v[0] for k, v in got["fields"].items()}
    assert {k: fields[k] for k in ("FirstName", "LastName", "EmailAddress", "AddressLine1", "City", "StateProvince",
                                   "PostalCode")} == {
        "FirstName": "Jane", "LastName": "Doe", "EmailAddress": "jane@example.org", "AddressLine1": "1 Main St",
        "City": "Springfield", "StateProvince": "IL", "PostalCode": "62701"}
    assert fields["Phone"].replace(" ", "").endswith("2025550123")


def test_jquery_4_runs_the_plugin_without_add_tags(open_page, osdi_stack):
    """npm's jQuery today is 4, which dropped $.isArray: the plugin works there as long as no add_tags is set."""
    page = open_page("/sign/4/clean-air")
    assert page.execute_script("return jQuery.fn.jquery").startswith("4.")
    assert submit(page) == ("done", 200, {"ok": True, "status": "delivered"})
    (got,) = received(osdi_stack, "actionnetwork")
    assert got["body"]["add_tags"] == ["clean-air"]


def test_with_jquery_4_add_tags_breaks_the_plugin_and_the_native_post_still_reaches_action_network(
        open_page, osdi_stack):
    """The plugin's add_tags check calls $.isArray, which jQuery 4 removed: its submit handler throws, so the
    browser posts the form itself. The plugin's input names are an Action Network form's own fields, so the relay
    still delivers that plain post (without the page's tags) and shows its thank-you page."""
    page = open_page("/sign/4/clean-air?tags=volunteer")
    page.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    WebDriverWait(page, 15).until(lambda d: d.current_url.startswith(f"{osdi_stack['relay']}/v1/forms/clean-air/thanks"))
    assert any("isArray is not a function" in entry["message"] for entry in page.get_log("browser"))
    posts = [s for s in osdi_stack["seen"] if s[0] == "POST"]
    assert posts[-1] == ("POST", "/v1/forms/clean-air", "application/x-www-form-urlencoded", "")
    (got,) = received(osdi_stack, "actionnetwork")
    person = got["body"]["person"]
    assert (person["given_name"], person["email_addresses"], person["phone_numbers"][0]["number"]) == (
        "Jane", [{"address": "jane@example.org"}], "12025550123")
    assert got["body"]["add_tags"] == ["clean-air"]

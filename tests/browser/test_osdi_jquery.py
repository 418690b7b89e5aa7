"""A jquery-osdi page switched to formrelay by its URL alone: jQuery (from npm, at test time) in Debian's Chromium.

The page builds the body the OSDI jQuery plugin builds (its documented shape, not its code) and posts it with
$.ajax as the plugin does: cross-origin, `Content-Type: application/json`, a JSON answer expected.
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
from flask import Flask, Response
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from formrelay import create_app
from formrelay.sandbox import ServerThread, create_sandbox
from tests.conftest import _need

pytestmark = pytest.mark.e2e

JQUERY = "jquery@3"  # the major version campaign sites run; fetched by npm when the tests start, never vendored

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign</title></head><body>
<form id="petition">
  <input name="first_name" value="Jane"> <input name="last_name" value="Doe">
  <input name="email" value="jane@example.org"> <input name="phone" value="(202) 555-0123">
  <input name="street" value="1 Main St"> <input name="city" value="Springfield">
  <input name="state" value="IL"> <input name="zip" value="62701"> <input name="member_number" value="42">
  <button type="submit">Sign</button>
</form>
<p id="result"></p>
<script src="/jquery.js"></script>
<script>
  // What the OSDI jQuery plugin posts: an OSDI helper body built from the form's inputs.
  var ACTION = %(action)s;
  function field(name) { return $('#petition [name="' + name + '"]').val(); }
  function osdiBody() {
    return {
      person: {
        given_name: field('first_name'), family_name: field('last_name'),
        email_addresses: [{address: field('email'), status: 'subscribed'}],
        postal_addresses: [{address_lines: [field('street')], locality: field('city'), region: field('state'),
                            postal_code: field('zip'), country: 'US'}],
        phone_numbers: [{number: field('phone')}],
        custom_fields: {member_number: field('member_number')}
      },
      add_tags: ['volunteer'],
      triggers: {autoresponse: {enabled: true}}
    };
  }
  $('#petition').on('submit', function (event) {
    event.preventDefault();
    $.ajax({url: ACTION, type: 'POST', contentType: 'application/json', dataType: 'json',
            data: JSON.stringify(osdiBody())})
      .done(function (data, text, xhr) { $('#result').text('done ' + xhr.status + ' ' + data.status); })
      .fail(function (xhr) {
        $('#result').text('fail ' + xhr.status + ' ' + JSON.stringify(xhr.responseJSON || null));
      });
  });
</script></body></html>"""


@pytest.fixture(scope="module")
def jquery(tmp_path_factory) -> Path:
    """jQuery installed from the npm registry into a temporary prefix (npm's own cache makes reruns quick)."""
    npm = shutil.which("npm")
    if npm is None:
        _need("npm")
    prefix = tmp_path_factory.mktemp("npm")
    try:
        done = subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-save", "--no-audit", "--no-fund", "--ignore-scripts",
             "--prefer-offline", "--loglevel=error", JQUERY],
            capture_output=True, text=True, timeout=240, env={**os.environ, "npm_config_update_notifier": "false"})
    except subprocess.TimeoutExpired:
        done = None
    script = prefix / "node_modules" / "jquery" / "dist" / "jquery.min.js"
    if done is None or done.returncode != 0 or not script.is_file():
        _need(f"{JQUERY} from npm ({done.stderr.strip()[-300:] if done else 'timed out'})")
    return script


@pytest.fixture(scope="module")
def osdi_stack(jquery, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Sandbox Action Network, the relay, and a campaign site whose page uses jQuery, on three 127.0.0.1 origins."""
    state: dict[str, Any] = {}
    site_app = Flask("osdi-site")

    @site_app.get("/jquery.js")
    def jquery_js() -> Response:
        return Response(jquery.read_bytes(), mimetype="text/javascript")

    @site_app.get("/sign")
    def sign() -> str:
        return PAGE % {"action": json.dumps(f"{state['relay']}/v1/forms/clean-air")}

    sandbox = ServerThread(create_sandbox()).start()
    site = ServerThread(site_app).start()
    relay = ServerThread(create_app({
        "relay": {"allowed_origins": [site.url], "rate_limit": ""},
        "providers": {"actionnetwork": {"base_url": f"{sandbox.url}/actionnetwork/api/v2"}},
        "forms": {"clean-air": {"provider": "actionnetwork", "action": "petition", "action_id": "air",
                                "add_tags": ["clean-air"], "custom_fields": {"member_number": {}}}},
        "queue": {"path": str(tmp_path_factory.mktemp("queue") / "q.sqlite3")},
    })).start()
    state.update(relay=relay.url, site=site.url, sandbox=sandbox.url)
    yield state
    for server in (relay, site, sandbox):
        server.stop()


@pytest.fixture
def page(browser, osdi_stack) -> Any:
    requests.post(f"{osdi_stack['sandbox']}/_control/reset", timeout=5)
    browser.get(f"{osdi_stack['site']}/sign")
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return typeof window.jQuery === 'function'"))
    return browser


def result(browser) -> str:
    return WebDriverWait(browser, 15).until(lambda d: d.find_element(By.ID, "result").text)


def received(stack) -> list[dict[str, Any]]:
    return requests.get(f"{stack['sandbox']}/_control/received/actionnetwork", timeout=5).json()


def test_the_plugins_post_fires_done_and_action_network_gets_the_person(page, osdi_stack):
    assert page.execute_script("return jQuery.fn.jquery").startswith("3.")
    page.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    assert result(page) == "done 200 delivered"
    (got,) = received(osdi_stack)
    assert got["keyed"] is False  # blind: the browser never had a key, and the relay sent none
    person = got["body"]["person"]
    assert person["given_name"] == "Jane" and person["family_name"] == "Doe"
    assert person["email_addresses"] == [{"address": "jane@example.org"}]  # status is the form's rule
    assert person["phone_numbers"][0]["number"] == "12025550123"  # "(202) 555-0123" normalised
    assert person["postal_addresses"][0]["postal_code"] == "62701"
    assert person["custom_fields"] == {"member_number": "42"}
    assert got["body"]["add_tags"] == ["clean-air"]  # the page's "volunteer" is not on the form's list


def test_a_bad_email_fires_fail_with_the_field_named_and_nothing_is_sent(page, osdi_stack):
    email = page.find_element(By.NAME, "email")
    email.clear()
    email.send_keys("jane@")
    page.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    text = result(page)
    assert text.startswith("fail 422 ")
    answer = json.loads(text[len("fail 422 "):])
    assert answer["status"] == "invalid"
    assert answer["errors"] == {"email_address": ["Enter a valid email address. (at person.email_addresses[0].address)"]}
    assert received(osdi_stack) == []

"""The campaign's funnel in Chromium: source codes that survive navigation, conversion events, a thank-you ladder.

Three 127.0.0.1 origins: the campaign site (its pages load the snippet), the relay started as users run it
(`formrelay serve`), and the sandbox Action Network that records what "the CRM" got. axe-core is installed
from the npm registry into a temporary prefix when the module starts (never vendored) and injected into the
pages with selenium, to check the ladder and the relay's thank-you page against WCAG 2.1 A and AA.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests
from flask import Flask
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from formrelay.sandbox import ServerThread, create_sandbox
from tests.conftest import _need
from tests.servers import running

pytestmark = pytest.mark.e2e

AXE = "axe-core@4"
WCAG_21_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
CHANNELS = ["facebook", "x", "whatsapp", "email", "copy"]
DONATE = "https://give.example.org/clean-air"
FORM = """<form {enhance} method="post" action="{relay}/v1/forms/{slug}">
<p><label for="gn">First name</label> <input id="gn" name="given_name" autocomplete="given-name"></p>
<p><label for="em">Email</label> <input id="em" name="email_address" type="email" autocomplete="email"></p>
<p><button type="submit">Sign</button></p>
</form>"""


def site_page(title: str, body: str, relay: str, mode: str | None) -> str:
    """A campaign page: GTM's dataLayer and a gtag stub defined by the page, then the snippet (unless mode None)."""
    script = "" if mode is None else (
        "<script>window.dataLayer = window.dataLayer || []; window.gtagCalls = [];"
        " function gtag() { gtagCalls.push(Array.prototype.slice.call(arguments)); }</script>"
        f'<script src="{relay}/static/formrelay.js" data-formrelay-attribution="{mode}"></script>')
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f'<link rel="stylesheet" href="{relay}/static/formrelay.css"></head>'
            f"<body><main><h1>{title}</h1>{body}</main>{script}</body></html>")


@pytest.fixture(scope="module")
def axe_script(tmp_path_factory) -> str:
    """axe-core from the npm registry, into a temporary prefix: its source, to inject."""
    npm = shutil.which("npm")
    if npm is None:
        _need("npm")
    prefix = tmp_path_factory.mktemp("npm-axe")
    try:
        done = subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-save", "--no-audit", "--no-fund", "--ignore-scripts",
             "--prefer-offline", "--loglevel=error", AXE],
            capture_output=True, text=True, timeout=240, env={**os.environ, "npm_config_update_notifier": "false"})
    except subprocess.TimeoutExpired:
        done = None
    script = prefix / "node_modules" / "axe-core" / "axe.min.js"
    if done is None or done.returncode != 0 or not script.is_file():
        _need(f"{AXE} from npm ({done.stderr.strip()[-300:] if done else 'timed out'})")
    return script.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def funnel(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Sandbox Action Network, the campaign site, and `formrelay serve` with two petition forms."""
    state: dict[str, Any] = {}
    site_app = Flask("campaign-site")

    @site_app.get("/s/<mode>/<name>")
    def content(mode: str, name: str) -> str:
        return site_page(f"Campaign page {name}", "<p>Clean air for every school.</p>", state["relay"], mode)

    @site_app.get("/s/<mode>/petition/<slug>")
    def petition(mode: str, slug: str) -> str:
        form = FORM.format(enhance="data-formrelay data-formrelay-gtag", relay=state["relay"], slug=slug)
        return site_page("Sign the petition", form, state["relay"], mode)

    @site_app.get("/plain/<slug>")
    def plain(slug: str) -> str:
        return site_page("Sign the petition", FORM.format(enhance="", relay=state["relay"], slug=slug),
                         state["relay"], None)

    @site_app.get("/broken")
    def broken() -> str:
        """Not accessible on purpose (an input without a label), to show the axe check can fail."""
        return '<!doctype html><html lang="en"><head><title>broken</title></head><body><main><input></main></body></html>'

    sandbox = ServerThread(create_sandbox()).start()
    site = ServerThread(site_app).start()
    tmp = tmp_path_factory.mktemp("funnel")
    petition_an = ['provider = "actionnetwork"', 'action = "petition"', 'action_id = "air"']
    config = tmp / "formrelay.toml"
    config.write_text("\n".join([
        "[relay]", f'allowed_origins = ["{site.url}"]', 'rate_limit = ""', "time_trap_min = 0",
        "[queue]", f'path = "{tmp / "q.sqlite3"}"',
        "[providers.actionnetwork]", f'base_url = "{sandbox.url}/actionnetwork/api/v2"',
        "[forms.sign-first]", *petition_an, 'attribution = "first"',
        "[forms.sign-first.thanks]", 'message = "Thank you for signing!"', f"channels = {json.dumps(CHANNELS)}",
        f'donate_url = "{DONATE}"', 'donate_label = "Chip in to keep the campaign going"',
        "[forms.sign-last]", *petition_an,
    ]) + "\n")
    with running("serve", config, tmp, workers=1, threads=4, name="relay") as relay:
        state.update(relay=relay.url, site=site.url, sandbox=sandbox.url)
        yield state
    for server in (site, sandbox):
        server.stop()


@pytest.fixture
def visit(browser, funnel) -> Any:
    """A new visit: the sandbox forgets, and the site's storage is emptied; then open pages of the site."""
    requests.post(f"{funnel['sandbox']}/_control/reset", timeout=5)
    browser.get(f"{funnel['site']}/s/off/blank")
    browser.execute_script("sessionStorage.clear(); localStorage.clear();")

    def open_page(path: str) -> Any:
        browser.get(f"{funnel['site']}{path}")
        WebDriverWait(browser, 10).until(lambda d: d.execute_script("return !!window.FormRelay"))
        return browser
    return open_page


def sign(browser, email: str = "ann@example.org") -> None:
    browser.find_element(By.ID, "gn").send_keys("Ann")
    browser.find_element(By.ID, "em").send_keys(email)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def delivered(browser, funnel) -> dict[str, Any]:
    """Wait for the snippet's answer; the one body the sandbox Action Network received."""
    WebDriverWait(browser, 15).until(lambda d: d.execute_script(
        "return !!document.querySelector('form.formrelay-done')"))
    (got,) = requests.get(f"{funnel['sandbox']}/_control/received/actionnetwork", timeout=5).json()
    return got["body"]


def stored(browser) -> dict[str, Any]:
    return browser.execute_script(
        "return {session: sessionStorage.getItem('formrelay-touch'), local: localStorage.getItem('formrelay-touch')}")


def shared_source(url: str) -> str:
    """The source code carried by the address a share link shares (inside the channel's own address)."""
    if url.startswith("mailto:"):
        url = unquote(url.split("body=", 1)[1])
    elif "?" in url and not url.startswith(("http://127.0.0.1", "https://www.example")):
        url = unquote(url.split("=", 1)[1])
    return parse_qs(urlsplit(url).query)["source"][0]


def the_ladder(ladder) -> str:
    """Check a shown ladder (the config's message, a link per channel with its source code, the donate link);
    the address its copy field offers."""
    assert "Thank you for signing!" in ladder.text
    links = {a.get_attribute("class"): a.get_attribute("href") for a in ladder.find_elements(By.CSS_SELECTOR, "a")}
    copy = ladder.find_element(By.CSS_SELECTOR, "input.formrelay-share-copy").get_attribute("value")
    shared = {channel: shared_source(links[f"formrelay-share-{channel}"]) for channel in CHANNELS[:-1]}
    shared["copy"] = shared_source(copy)
    assert shared == {channel: f"share-{channel}" for channel in CHANNELS}
    assert links["formrelay-donate"] == DONATE
    return copy


def axe_violations(browser, script: str) -> list[dict[str, Any]]:
    """axe-core's WCAG 2.1 A/AA violations on the page now open (and proof that it ran rules)."""
    browser.set_script_timeout(60)
    browser.execute_script(script)
    result = browser.execute_async_script("""
        var done = arguments[arguments.length - 1];
        axe.run(document, {runOnly: {type: 'tag', values: arguments[0]}}).then(function (r) {
          done({passes: r.passes.length, violations: r.violations.map(function (v) {
            return {id: v.id, impact: v.impact, nodes: v.nodes.map(function (n) { return n.html; })}; })});
        }, function (e) { done({error: String(e)}); });""", WCAG_21_AA)
    assert "error" not in result, result
    assert result["passes"] > 5  # axe really checked the page
    return result["violations"]


# -- attribution across pages -------------------------------------------------------------------------------

def test_first_touch_reaches_action_network_from_a_form_page_without_parameters(visit, funnel, axe_script):
    page = visit("/s/session/landing?source=em-1206&utm_content=ann%40example.org")
    touch = stored(page)
    assert touch["local"] is None and "em-1206" in touch["session"] and "@" not in touch["session"]
    visit("/s/session/news")
    page = visit("/s/session/petition/sign-first")
    page.execute_script("document.querySelector('form').addEventListener('formrelay:success',"
                        " function (e) { window.seenDetail = e.detail; });")
    sign(page)
    body = delivered(page, funnel)
    assert body["referrer_data"] == {"source": "em-1206"}

    # Conversion events: the slug and the status, nothing the person typed.
    layer = page.execute_script("return JSON.stringify(window.dataLayer)")
    assert [e for e in json.loads(layer) if e.get("event") == "formrelay_submitted"] == [
        {"event": "formrelay_submitted", "formrelay_form": "sign-first", "formrelay_status": "delivered"}]
    assert "@" not in layer
    assert page.execute_script("return gtagCalls") == [
        ["event", "generate_lead", {"formrelay_form": "sign-first", "formrelay_status": "delivered"}]]
    detail = page.execute_script("return window.seenDetail")
    assert (detail["formrelay_form"], detail["formrelay_status"], detail["ok"]) == ("sign-first", "delivered", True)

    # The ladder in place of the form, focused, with a share link per channel and the donate ask.
    WebDriverWait(page, 5).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".formrelay-thanks"))
    assert page.execute_script("return document.querySelector('form').hidden") is True
    assert page.execute_script("return document.activeElement.className") == "formrelay-thanks"
    ladder = page.find_element(By.CSS_SELECTOR, ".formrelay-thanks")
    copy = the_ladder(ladder)
    assert copy == f"{funnel['site']}/s/session/petition/sign-first?source=share-copy"  # the form's page
    page.execute_cdp_cmd("Browser.grantPermissions", {"origin": funnel["site"],
                                                       "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
    ladder.find_element(By.CSS_SELECTOR, "button").click()
    WebDriverWait(page, 5).until(lambda d: "Link copied." in ladder.find_element(By.CSS_SELECTOR, "[role=status]").text)
    assert page.execute_script("return navigator.clipboard.readText()") == copy
    assert axe_violations(page, axe_script) == []


def test_last_touch_by_default_is_the_latest_campaign_page(visit, funnel):
    visit("/s/session/landing?source=em-1206")
    visit("/s/session/news?source=fb-77")
    page = visit("/s/session/petition/sign-last")
    sign(page)
    assert delivered(page, funnel)["referrer_data"] == {"source": "fb-77"}
    assert "formrelay-thanks" not in page.page_source  # a form without [thanks] keeps the sentence


def test_with_storage_off_neither_touch_is_kept_or_sent(visit, funnel):
    visit("/s/off/landing?source=em-1206")
    assert stored(visit("/s/off/news?source=fb-77")) == {"session": None, "local": None}
    page = visit("/s/off/petition/sign-last")
    sign(page)
    assert "referrer_data" not in delivered(page, funnel)


def test_after_consent_the_touch_is_kept_30_days_across_visits_then_forgotten(visit, funnel, browser):
    page = visit("/s/session/landing?source=em-1206")
    page.execute_script("FormRelay.remember('local')")  # what a consent banner's callback calls
    touch = stored(page)
    assert touch["session"] is None and "em-1206" in touch["local"]
    page.execute_script("sessionStorage.clear()")  # the visit ends; the 30-day memory stays
    page = visit("/s/local/petition/sign-first")
    sign(page)
    assert delivered(page, funnel)["referrer_data"] == {"source": "em-1206"}

    requests.post(f"{funnel['sandbox']}/_control/reset", timeout=5)
    page.execute_script("localStorage.setItem('formrelay-touch', JSON.stringify("
                        "{f: 'source=em-old', l: 'source=em-old', t: Date.now() - 31 * 864e5}))")
    page = visit("/s/local/petition/sign-first")
    sign(page, "bo@example.org")
    assert "referrer_data" not in delivered(page, funnel)


# -- the relay's own thank-you page ---------------------------------------------------------------------------

def test_a_plain_post_thank_you_page_shows_the_same_ladder_and_passes_axe(visit, funnel, browser, axe_script):
    browser.get(f"{funnel['site']}/plain/sign-first")
    sign(browser)
    WebDriverWait(browser, 15).until(lambda d: d.current_url.startswith(f"{funnel['relay']}/v1/forms/sign-first/thanks"))
    copy = the_ladder(browser.find_element(By.CSS_SELECTOR, ".formrelay-thanks"))
    # Chromium tells another origin only the site's origin (strict-origin-when-cross-origin): its home is shared.
    assert copy == f"{funnel['site']}/?source=share-copy"
    (got,) = requests.get(f"{funnel['sandbox']}/_control/received/actionnetwork", timeout=5).json()
    assert got["body"]["person"]["given_name"] == "Ann"
    assert axe_violations(browser, axe_script) == []


def test_the_accessibility_check_finds_a_violation_where_there_is_one(funnel, browser, axe_script):
    browser.get(f"{funnel['site']}/broken")
    assert "label" in {v["id"] for v in axe_violations(browser, axe_script)}

"""formrelay.js in Chromium: fields named like the form's own properties, and a person faster than the time-trap.

Issue 20 item 8: `<input name="action">` made `form.action` an element, and the snippet posted the supporter's
data to `<page-origin>/[object HTMLInputElement]`. Issue 15 item 5: a person who fills the form within a
second (autofill) was taken for a bot by the time-trap and silently dropped.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from selenium.webdriver.common.by import By

from formrelay import create_app
from formrelay.sandbox import ServerThread
from tests.browser.conftest import FIELDS_HTML, page
from tests.browser.test_snippet import PERSON, received, status_text, wait

pytestmark = pytest.mark.e2e

# Each of these names hides a property of the form element (HTMLFormElement lets named fields override its own).
SHADOWING = """
<input type="hidden" name="action" value="not-a-url">
<input type="hidden" name="method" value="get">
<input type="hidden" name="submit" value="x">
<input type="hidden" name="id" value="y">
<input type="hidden" name="reset" value="z">
<input type="hidden" name="getAttribute" value="w">
<input type="hidden" name="elements" value="v">
"""


@pytest.fixture(scope="module")
def relay_site(stack) -> Iterator[dict[str, Any]]:
    """A relay with the default two-second time-trap, and a site with the pages of these tests."""
    site_app = Flask("security-site")
    urls: dict[str, Any] = {"sandbox": stack["sandbox"]}

    @site_app.get("/named")
    def named() -> str:
        form = f'<form data-formrelay method="post" action="{urls["relay"]}/v1/forms/join">{SHADOWING}{FIELDS_HTML}</form>'
        return page(form, urls["relay"])

    @site_app.get("/rendered")
    def rendered() -> str:
        return page(f'<div data-formrelay-form="{urls["relay"]}/v1/forms/join"></div>', urls["relay"])

    @site_app.get("/fast")
    def fast() -> str:
        return page(f'<form data-formrelay method="post" action="{urls["relay"]}/v1/forms/join">{FIELDS_HTML}</form>',
                    urls["relay"])

    site = ServerThread(site_app).start()
    relay = ServerThread(create_app({
        "relay": {"allowed_origins": [site.url], "rate_limit": "", "time_trap_min": 2.0},
        "providers": {"ngp": {"base_url": f"{stack['sandbox']}/ngp/v2", "api_key": "sandbox-ngp-api-key"}},
        "forms": {"join": {"provider": "ngp", "form_id": "demo-petition"}},
    })).start()
    urls.update(site=site.url, relay=relay.url)
    yield urls
    relay.stop()
    site.stop()


def autofill(browser, values: dict[str, str]) -> None:
    """Fill every field at once, as a browser's autofill does."""
    browser.execute_script(
        "for (const [name, value] of Object.entries(arguments[0]))"
        " document.querySelector('[name=\"' + name + '\"]').value = value;", values)


def test_fields_named_like_form_properties_do_not_misdirect_the_snippet(browser, fresh, relay_site):
    browser.get(f"{relay_site['site']}/named")
    wait(browser, lambda d: d.find_elements(By.NAME, "_idempotency_key"))
    wait(browser, lambda d: d.find_elements(By.NAME, "_started"))
    time.sleep(2.1)  # past the time-trap's minimum, so that only the field names are under test
    autofill(browser, PERSON)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser, lambda d: "Thank you for signing" in status_text(d))
    (got,) = received(fresh)
    assert got["fields"]["EmailAddress"] == ["ann@example.org"]
    form = browser.find_element(By.CSS_SELECTOR, "form")
    assert "formrelay-done" in form.get_attribute("class")
    assert browser.find_element(By.NAME, "EmailAddress").get_attribute("value") == ""  # the form was reset


def test_a_form_sent_one_second_after_the_page_loaded_is_delivered(browser, fresh, relay_site):
    browser.get(f"{relay_site['site']}/fast")
    loaded = time.monotonic()
    wait(browser, lambda d: d.find_elements(By.NAME, "_started"), 1)
    autofill(browser, PERSON)
    time.sleep(max(0.0, 1.0 - (time.monotonic() - loaded)))
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    assert "Sending" in status_text(browser)  # the snippet waits out the rest of the two seconds
    assert received(fresh) == []
    wait(browser, lambda d: "Thank you for signing" in status_text(d), 10)
    assert len(received(fresh)) == 1


def test_a_second_submission_from_the_same_page_gets_a_fresh_token(browser, fresh, relay_site):
    browser.get(f"{relay_site['site']}/rendered")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "form.formrelay-form"))
    for n in range(2):
        autofill(browser, {**PERSON, "EmailAddress": f"n{n}@example.org"})
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait(browser, lambda d: len(received(fresh)) == n + 1, 10)
        # The CRM has it before the page has the answer: fill the next one only once the page has reset the form
        # (filled before that, the reset empties it, and the second submission goes out empty: seen on a loaded run).
        wait(browser, lambda d: d.find_element(By.NAME, "EmailAddress").get_attribute("value") == "", 10)
    assert [r["fields"]["EmailAddress"] for r in received(fresh)] == [["n0@example.org"], ["n1@example.org"]]

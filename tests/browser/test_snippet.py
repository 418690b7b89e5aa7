"""formrelay.js in a real browser: enhance, render, errors and ARIA, no-JS posts, strict CSP, retry."""
from __future__ import annotations

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.e2e

PERSON = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009"}


def wait(browser, predicate, seconds: float = 10):
    return WebDriverWait(browser, seconds).until(lambda d: predicate(d))


def fill(browser, values):
    for name, value in values.items():
        field = browser.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)


def status_text(browser) -> str:
    nodes = browser.find_elements(By.CSS_SELECTOR, ".formrelay-status")
    return nodes[0].text if nodes else ""


def received(stack):
    return requests.get(f"{stack['sandbox']}/_control/received/ngp", timeout=5).json()


def test_enhanced_form_delivers_and_shows_the_message(browser, fresh):
    browser.get(f"{fresh['site']}/enhance")
    wait(browser, lambda d: d.find_elements(By.NAME, "_idempotency_key"))
    fill(browser, PERSON)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser, lambda d: "Thank you for signing" in status_text(d))
    (got,) = received(fresh)
    assert got["fields"]["EmailAddress"] == ["ann@example.org"]
    assert not any(name.startswith("_") for name in got["fields"])
    honeypot = browser.find_element(By.NAME, "_hp")
    assert not honeypot.is_displayed() and honeypot.get_attribute("tabindex") == "-1"
    assert browser.find_element(By.CSS_SELECTOR, ".formrelay-status").get_attribute("aria-live") == "polite"


def test_invalid_email_and_missing_field_show_inline_errors_with_aria_and_focus(browser, fresh):
    browser.get(f"{fresh['site']}/enhance")
    wait(browser, lambda d: d.find_elements(By.NAME, "_idempotency_key"))
    fill(browser, {"FirstName": "Ann", "EmailAddress": "not-an-email", "PostalCode": "20009"})
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "p.formrelay-error"))
    email = browser.find_element(By.NAME, "EmailAddress")
    last = browser.find_element(By.NAME, "LastName")
    assert email.get_attribute("aria-invalid") == "true" and last.get_attribute("aria-invalid") == "true"
    note = browser.find_element(By.ID, email.get_attribute("aria-describedby"))
    assert "valid email" in note.text
    assert "required" in browser.find_element(By.ID, last.get_attribute("aria-describedby")).text
    assert browser.switch_to.active_element == last  # the first invalid field in reading order
    assert browser.find_element(By.NAME, "FirstName").get_attribute("aria-invalid") is None
    assert received(fresh) == []
    # fixing the form clears the errors and goes through
    fill(browser, {"LastName": "Lee", "EmailAddress": "ann@example.org"})
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser, lambda d: "Thank you" in status_text(d))
    assert browser.find_elements(By.CSS_SELECTOR, "p.formrelay-error") == []
    assert len(received(fresh)) == 1


def test_rendered_form_mirrors_the_servers_rules(browser, fresh):
    browser.get(f"{fresh['site']}/render")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "form.formrelay-form"))
    email = browser.find_element(By.NAME, "EmailAddress")
    assert email.get_attribute("type") == "email" and email.get_attribute("required") == "true"
    assert email.get_attribute("maxlength") == "100"
    assert browser.find_element(By.NAME, "Phone").get_attribute("type") == "tel"
    label = browser.find_element(By.CSS_SELECTOR, f"label[for='{email.get_attribute('id')}']")
    assert label.text.startswith("Email") and "*" in label.text
    states = browser.find_element(By.NAME, "StateProvince").find_elements(By.TAG_NAME, "option")
    # "Choose…", then US states and DC, territories, military codes and Canadian provinces (NGP "states")
    assert len(states) == 1 + 51 + 8 + 3 + 13 and states[1].get_attribute("value") == "AL"
    assert browser.find_element(By.CSS_SELECTOR, "button[type=submit]").text == "Sign now"
    assert browser.find_element(By.TAG_NAME, "h2").text == "Sign the clean air petition"
    fill(browser, PERSON)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser, lambda d: "Thank you" in status_text(d))
    assert len(received(fresh)) == 1


def test_a_rendered_form_keeps_the_hosts_options_such_as_redirect_off(browser, fresh):
    browser.get(f"{fresh['site']}/render-stay")
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "form.formrelay-form"))
    assert browser.find_element(By.CSS_SELECTOR, "form.formrelay-form").get_attribute("data-formrelay-redirect") == "off"
    fill(browser, PERSON)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser, lambda d: "Thank you" in status_text(d))
    assert browser.current_url == f"{fresh['site']}/render-stay"  # the answer's redirect was not followed
    assert len(received(fresh)) == 1


def test_plain_post_without_javascript_is_redirected(browser, fresh):
    browser.get(f"{fresh['site']}/nojs")
    fill(browser, PERSON)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser, lambda d: d.current_url == f"{fresh['site']}/thanks")
    assert "Thanks from the campaign" in browser.page_source
    assert len(received(fresh)) == 1


def test_works_under_a_strict_content_security_policy(browser, fresh):
    browser.get_log("browser")  # drop earlier pages' messages
    browser.get(f"{fresh['site']}/csp")
    wait(browser, lambda d: d.find_elements(By.NAME, "_idempotency_key"))
    fill(browser, PERSON)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser, lambda d: "Thank you" in status_text(d))
    violations = [e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
    assert violations == []
    assert len(received(fresh)) == 1


def test_retry_after_a_network_failure_delivers_once(browser, fresh):
    browser.get(f"{fresh['site']}/flaky")
    wait(browser, lambda d: d.find_elements(By.NAME, "_idempotency_key"))
    fill(browser, PERSON)
    button = browser.find_element(By.CSS_SELECTOR, "button[type=submit]")
    button.click()
    wait(browser, lambda d: "could not reach" in status_text(d))
    assert button.is_enabled()
    button.click()
    wait(browser, lambda d: "Thank you" in status_text(d))
    assert fresh["posts"] == 2 and len(received(fresh)) == 1

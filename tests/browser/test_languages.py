"""formrelay.js in a Chromium started in French or Spanish: the snippet speaks it with no configuration at all."""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser.conftest import CHROMEDRIVER, CHROMIUM, FLAGS
from tests.conftest import _need

pytestmark = pytest.mark.e2e

# What the supporter must read, per browser language (the relay's catalogue, checked word for word).
EXPECTED = {
    "fr": {"submit": "Envoyer", "choose": "Choisir…", "required": "obligatoire",
           "invalid": "Veuillez corriger les champs signalés.", "field": "Ce champ est obligatoire.",
           "email": "Saisissez une adresse e-mail valide."},
    "es": {"submit": "Enviar", "choose": "Elige…", "required": "obligatorio",
           "invalid": "Corrige los campos marcados.", "field": "Este campo es obligatorio.",
           "email": "Escribe una dirección de correo electrónico válida."},
}


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def speaker(request) -> Iterator[tuple[str, Any]]:
    """A Chromium whose user speaks one language: --lang and the Accept-Language preference, as a person sets it."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        _need("chromium and chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    language = request.param
    profile = tempfile.mkdtemp(prefix=f"formrelay-chromium-{language}-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}", f"--lang={language}"]:
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"intl.accept_languages": f"{language},en;q=0.5"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    yield language, driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait(browser, predicate, seconds: float = 10):
    return WebDriverWait(browser, seconds).until(lambda d: predicate(d))


def test_an_unconfigured_page_speaks_the_browsers_language(speaker, fresh):
    language, browser = speaker
    words = EXPECTED[language]
    browser.get(f"{fresh['site']}/unconfigured")
    assert browser.execute_script("return navigator.language").startswith(language)
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "form.formrelay-form"))
    rendered = browser.find_element(By.CSS_SELECTOR, "form.formrelay-form")
    assert rendered.find_element(By.CSS_SELECTOR, "button[type=submit]").text == words["submit"]
    state = rendered.find_element(By.NAME, "StateProvince").find_elements(By.TAG_NAME, "option")[0]
    assert state.get_attribute("textContent") == words["choose"]
    marker = rendered.find_element(By.CSS_SELECTOR, ".formrelay-required")
    assert marker.get_attribute("title") == words["required"]

    # Errors from the relay and the snippet's own status line, both in the supporter's language.
    rendered.find_element(By.NAME, "EmailAddress").send_keys("not-an-email")
    rendered.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser, lambda d: rendered.find_elements(By.CSS_SELECTOR, "p.formrelay-error"))
    status = rendered.find_element(By.CSS_SELECTOR, ".formrelay-status")
    assert status.text == words["invalid"]
    email = rendered.find_element(By.NAME, "EmailAddress")
    assert browser.find_element(By.ID, email.get_attribute("aria-describedby")).text == words["email"]
    last = rendered.find_element(By.NAME, "LastName")
    assert browser.find_element(By.ID, last.get_attribute("aria-describedby")).text == words["field"]

    # A form the page wrote itself gets the same words once the snippet has read the description.
    own = browser.find_element(By.ID, "own")
    wait(browser, lambda d: own.find_elements(By.NAME, "_started"))
    own.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(browser, lambda d: own.find_elements(By.CSS_SELECTOR, "p.formrelay-error"))
    assert own.find_element(By.CSS_SELECTOR, ".formrelay-status").text == words["invalid"]


def test_the_pages_own_words_still_win(speaker, fresh):
    language, browser = speaker
    browser.get(f"{fresh['site']}/render")  # data-formrelay-text-submit="Sign now"
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "form.formrelay-form"))
    form = browser.find_element(By.CSS_SELECTOR, "form.formrelay-form")
    assert form.find_element(By.CSS_SELECTOR, "button[type=submit]").text == "Sign now"
    marker = form.find_element(By.CSS_SELECTOR, ".formrelay-required")
    assert marker.get_attribute("title") == EXPECTED[language]["required"]

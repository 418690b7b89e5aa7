"""The documentation site in Chromium: its search box finds the page about dead letters, served or from disk."""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port
from tests.docs.conftest import ROOT, build


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("docs") / "site"
    result = build(ROOT / "mkdocs.yml", site)
    assert result.returncode == 0, result.stdout + result.stderr
    return site


@pytest.fixture(scope="module")
def served(built: Path) -> Iterator[str]:
    """The built folder behind a plain static file server on 127.0.0.1 (Python's http.server)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(built)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            requests.get(url + "/index.html", timeout=2)
            break
        except requests.ConnectionError:
            assert proc.poll() is None and time.monotonic() < deadline, "the static server did not start"
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


def search(browser, start: str, words: str) -> list[str]:
    """Type words into the site's search box on the page start; the result links, best first."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(start)
    box = WebDriverWait(browser, 20).until(ready.element_to_be_clickable((By.CSS_SELECTOR, "input.md-search__input")))
    box.click()
    box.send_keys(words)
    links = WebDriverWait(browser, 20).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, ".md-search-result__list a.md-search-result__link"))
    return [link.get_attribute("href") for link in links]


def pages(results: list[str]) -> list[str]:
    """The result pages in order, each once (a page's sections are results of their own)."""
    return list(dict.fromkeys(url.split("?")[0].split("#")[0] for url in results))


def test_the_search_box_finds_the_page_about_dead_letters(browser, served):
    results = search(browser, served + "/index.html", "dead letters")
    first = pages(results)[0]
    assert first.endswith("/operating-the-queue.html"), f"the first page found is not the dead letters': {results}"
    browser.get(first)
    assert "dead letters" in browser.find_element("css selector", "article").text


def test_the_search_works_from_the_built_folder_opened_from_disk(browser, built):
    """Offline: file:// pages, no server, no network (the index inlined, the worker run in a frame)."""
    results = search(browser, (built / "getting-started.html").as_uri(), "dead letters")
    first = pages(results)[0]
    assert first.startswith("file://") and first.endswith("/operating-the-queue.html"), results

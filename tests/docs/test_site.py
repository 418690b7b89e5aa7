"""The site builds with `mkdocs build --strict` (no warning, no broken link or anchor) and works offline."""
from __future__ import annotations

import re
import shutil
import sys

from tests.docs.conftest import DOCS, ROOT, build


def test_the_site_builds_strict_with_no_warning(site):
    assert "WARNING" not in site.output, site.output
    for page in ["index.html", "getting-started.html", "reference/configuration.html", "reference/cli.html",
                 "reference/http-api.html", "reference/openapi.json", "changelog.html", "deploy/systemd.html"]:
        assert (site.path / page).is_file(), page


def test_a_broken_link_or_anchor_fails_the_build(tmp_path):
    """The same mkdocs.yml over a copy of docs/ with one broken link and one broken anchor: the build must fail."""
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copy(ROOT / "CHANGELOG.md", tmp_path / "CHANGELOG.md")
    page = tmp_path / "docs" / "queue.md"
    page.write_text(page.read_text() + "\nSee [nowhere](no-such-page.md) and [there](languages.md#no-such-anchor).\n")
    result = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "no-such-page.md" in output and "no-such-anchor" in output, output


def test_every_page_is_in_the_nav_and_every_nav_entry_exists(site):
    html = (site.path / "index.html").read_text()
    for page in DOCS.rglob("*.md"):
        rel = page.relative_to(DOCS)
        if "hooks" in rel.parts:
            continue
        target = rel.with_suffix(".html").as_posix()
        assert f'href="{target}"' in html or (rel.as_posix() == "index.md"), f"{rel} is not in the nav"


def test_the_built_folder_needs_no_network(site):
    """Offline: no script, stylesheet or font from another host; the search index ships with the site."""
    for page in site.path.rglob("*.html"):
        text = page.read_text()
        remote = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', text)
        remote = [url for url in remote if not url.startswith("https://github.com/")]  # the repository link
        assert not remote, f"{page.relative_to(site.path)} loads {remote}"
    index = site.path / "search" / "search_index.js"  # what the pages load from disk (the offline plugin)
    assert index.read_text().startswith("var __index = {"), "the offline plugin did not inline the search index"
    assert "dead letters" in index.read_text()
    assert 'src="assets/javascripts/formrelay-iframe-worker.js"' in (site.path / "index.html").read_text()


def test_the_docs_extra_is_part_of_the_test_extra():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert "formrelay[docs]" in extras["test"]
    names = {re.split(r"[<>=\[ ]", d)[0].lower() for d in extras["docs"]}
    assert {"mkdocs", "mkdocs-material", "mkdocs-click", "pymdown-extensions"} <= names
    assert sys.version_info >= (3, 11)


def test_every_page_has_one_title(site):
    """One <h1> a page (its title in the nav, the search results and the browser's tab)."""
    for page in site.path.rglob("*.html"):
        if page.name == "404.html":
            continue
        titles = re.findall(r"<h1[ >]", page.read_text())
        assert len(titles) == 1, f"{page.relative_to(site.path)}: {len(titles)} titles"

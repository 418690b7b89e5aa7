"""The README is a front door: short, the two commands (the same as CI's and the site's), links into the site."""
from __future__ import annotations

import re

from tests.docs.conftest import DOCS, ROOT, fenced

README = ROOT / "README.md"


def shell_lines(text: str) -> list[str]:
    return [line.strip() for _, code, _ in fenced(text, "sh") for line in code.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def ci_command() -> str:
    lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    return lines[-1].strip()


def test_the_readme_is_at_most_200_lines():
    assert len(README.read_text().splitlines()) <= 200


def test_the_test_command_is_the_one_ci_runs_and_the_site_shows():
    command = ci_command()
    assert command == "python3 -m venv .venv && . .venv/bin/activate && pip install -q -e '.[test]' && python -m pytest"
    assert command in shell_lines(README.read_text())
    assert command in shell_lines((DOCS / "getting-started.md").read_text())


def test_the_demo_command_is_one_line_that_sets_up_and_runs_the_demo():
    readme = [line for line in shell_lines(README.read_text()) if "formrelay demo" in line]
    site = [line for line in shell_lines((DOCS / "getting-started.md").read_text()) if "formrelay demo" in line]
    assert len(readme) == 1 and readme == site
    assert readme[0].startswith("python3 -m venv .venv && . .venv/bin/activate && pip install ")
    assert readme[0].endswith("&& formrelay demo")


def test_every_link_in_the_readme_resolves(site):
    text = README.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert len(links) >= 20
    for link in links:
        if link.startswith(("http://", "https://")):
            continue
        path, _, anchor = link.partition("#")
        assert (ROOT / path).exists(), link
        if anchor:
            page = site.path / (ROOT / path).relative_to(DOCS).with_suffix(".html")
            assert f'id="{anchor}"' in page.read_text(), link


def test_the_readme_links_to_the_pages_a_newcomer_looks_for():
    text = README.read_text()
    for page in ["docs/getting-started.md", "docs/guides/ngp.md", "docs/guides/ens.md", "docs/guides/actionnetwork.md",
                 "docs/guides/engageone.md", "docs/reference/configuration.md", "docs/reference/cli.md",
                 "docs/reference/http-api.md", "docs/deploy/index.md", "docs/operating-the-queue.md", "CHANGELOG.md"]:
        assert f"]({page}" in text, page

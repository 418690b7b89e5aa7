"""The documentation site, built once per test session the way a reader (and CI) builds it."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
DOCS = ROOT / "docs"
MKDOCS = Path(sys.executable).parent / "mkdocs"


@dataclass
class Built:
    path: Path
    output: str


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """`mkdocs build --strict` into site, as the README says; the end-of-life banner of Material 9 is turned off."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([str(MKDOCS), "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
                          cwd=config.parent, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Built:
    """The built site (fails the tests that need it when the strict build fails)."""
    out = tmp_path_factory.mktemp("site") / "site"
    result = build(ROOT / "mkdocs.yml", out)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return Built(out, result.stdout + result.stderr)


def pages() -> list[Path]:
    """Every Markdown page of the site (not the hooks' code)."""
    return sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.relative_to(DOCS).parts)


def fenced(text: str, *languages: str) -> list[tuple[str, str, int]]:
    """The fenced code blocks of a Markdown text in one of the languages: (language, code, line number)."""
    out: list[tuple[str, str, int]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        stripped = lines[i].lstrip()
        if stripped.startswith("```"):
            indent = len(lines[i]) - len(stripped)
            language = stripped[3:].strip().split(" ")[0]
            start = i
            i += 1
            body: list[str] = []
            while i < len(lines) and not lines[i].lstrip().startswith("```"):
                body.append(lines[i][indent:])
                i += 1
            if language in languages:
                out.append((language, "\n".join(body) + "\n", start + 1))
        i += 1
    return out

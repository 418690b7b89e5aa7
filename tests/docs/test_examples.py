"""The examples in the docs run: every TOML block is a config the project's own loader takes, every JSON block parses.

A TOML block is loaded with formrelay.core.config.parse_config, with a placeholder value for each `${NAME}` it
uses. Most blocks are a whole config; some show only the part a page is about ([forms.join.person], a [queue]
table). Those are laid over a small config that has the providers and the forms they refer to (BASE): a form
table that names its provider replaces the base form of that slug, one that does not adds to it, and a
[providers.x] table replaces the base's.
"""
from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

import formrelay.cli  # noqa: F401  (the tables the CLI registers before it reads a config: [queue], [alerts], ...)
from formrelay.core import config
from formrelay.core.config import ConfigError, parse_config
from tests.docs.conftest import ROOT, fenced, pages

TOP = {*config.TABLES, *getattr(config, "OPTIONAL_TABLES", ())}  # the top-level tables the loader reads
WEBHOOK_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZn"

BASE: dict[str, Any] = {
    "providers": {
        "ngp": {"api_key": "placeholder-ngp-key"},
        "ens": {"base_url": "https://ca.engagingnetworks.app/ens/service", "api_token": "placeholder-ens-token"},
        "actionnetwork": {},
        "engageone": {"api_url": "https://api.example.org", "client_id": "c", "secret": "s", "customer_id": "x"},
    },
    "forms": {
        "join": {"provider": "ngp", "form_id": "3173630362412646400"},
        "petition": {"provider": "actionnetwork", "action": "petition", "action_id": "5d2c6e0e-7c44-4c6e-9a3c-2f1e8b0d4a61"},
    },
}


def blocks(language: str) -> list[tuple[str, str, int]]:
    """(file, code, line) of every block in that language, in the site's pages, the README and the changelog."""
    out = []
    for page in [*pages(), ROOT / "README.md", ROOT / "CHANGELOG.md"]:
        for _, code, line in fenced(page.read_text(), language):
            out.append((str(page.relative_to(ROOT)), code, line))
    return out


def placeholders(code: str) -> dict[str, str]:
    env = {}
    for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", code):
        if name.endswith("_URL"):  # an address kept in the environment because it is a credential (chat webhooks)
            env[name] = f"https://placeholder.example.org/{name.lower()}"
        elif "WEBHOOK" in name:
            env[name] = WEBHOOK_SECRET
        else:
            env[name] = f"placeholder-{name.lower().replace('_', '-')}"
    return env


def merge(base: dict[str, Any], block: dict[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(base)
    for table, value in block.items():
        if table == "providers":
            raw["providers"].update(value)
        elif table == "forms":
            for slug, form in value.items():
                if "provider" in form or slug not in raw["forms"]:
                    raw["forms"][slug] = form
                else:
                    raw["forms"][slug] = {**raw["forms"][slug], **form}
        else:
            raw.setdefault(table, {}).update(value)
    return raw


TOML_BLOCKS = blocks("toml")


def test_the_docs_have_config_examples():
    assert len(TOML_BLOCKS) >= 15


@pytest.mark.parametrize("where,code,line", TOML_BLOCKS, ids=[f"{w}:{n}" for w, _, n in TOML_BLOCKS])
def test_every_toml_example_is_a_config_the_loader_takes(where, code, line):
    block = tomllib.loads(code)
    assert set(block) <= TOP, f"{where}:{line}: not a formrelay config ({sorted(set(block) - TOP)})"
    try:
        parse_config(merge(BASE, block), env=placeholders(code), source=f"{where}:{line}")
    except ConfigError as exc:
        pytest.fail(str(exc))


def test_a_wrong_example_is_caught():
    """The check can fail: a typo in a key of a documented example is refused by the loader."""
    where, code, line = next(b for b in TOML_BLOCKS if "rate_limit = " in b[1])
    wrong = code.replace("rate_limit = ", "rate_limt = ", 1)
    with pytest.raises(ConfigError, match="rate_limt: unknown key"):
        parse_config(merge(BASE, tomllib.loads(wrong)), env=placeholders(wrong))


JSON_BLOCKS = blocks("json")


@pytest.mark.parametrize("where,code,line", JSON_BLOCKS, ids=[f"{w}:{n}" for w, _, n in JSON_BLOCKS])
def test_every_json_example_parses(where, code, line):
    json.loads(code)


def test_the_site_has_no_config_blocks_outside_toml_fences():
    """A config shown in a ```text or unlabelled fence would escape the check above."""
    for page in pages():
        for language, code, line in fenced(page.read_text(), "", "text", "ini", "conf"):
            first = code.lstrip().splitlines()[0] if code.strip() else ""
            assert not re.match(r"\[(relay|providers|forms|queue|metrics|logging)[.\]]", first), \
                f"{page.relative_to(ROOT)}:{line}: label this block ```toml"


def test_example_paths_exist():
    assert Path(ROOT / "docs").is_dir()


GUIDES = ["getting-started.md", "guides/ngp.md", "guides/ens.md", "guides/actionnetwork.md", "guides/engageone.md",
          "../README.md"]


@pytest.mark.parametrize("page", GUIDES)
def test_each_guide_opens_with_a_complete_config_that_loads_alone(page):
    """The first config of Getting started and of each CRM guide is a whole file: it loads with nothing added."""
    from tests.docs.conftest import DOCS

    code = next(code for _, code, _ in fenced((DOCS / page).read_text(), "toml"))
    try:
        config = parse_config(tomllib.loads(code), env=placeholders(code), source=page)
    except ConfigError as exc:
        pytest.fail(str(exc))
    assert config.forms, f"{page}: the config has no form"

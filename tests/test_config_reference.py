"""reference() and the loader agree key for key: what the reference lists is accepted where it says, with the
default it says, and what the loader accepts (every key the documentation's examples use) is listed."""
from __future__ import annotations

import base64
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

import formrelay.alerts  # noqa: F401  ([alerts], registered by the cli and web floors)
import formrelay.delivery.relay  # noqa: F401  (the start-up registrations: providers, [queue], captcha)
from formrelay.core.config import ConfigError, parse_config, reference
from formrelay.core.settings import REQUIRED

ROOT = Path(__file__).resolve().parent.parent
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
# The least each table needs to load, so that one key at a time can be added to it.
PROVIDERS: dict[str, dict[str, Any]] = {
    "ngp": {"api_key": "ngp-key-1234"},  # optional on main, required once issue 30 lands
    "actionnetwork": {},
    "ens": {"base_url": "https://ens.example/ens/service", "api_token": "ens-token-1234"},
    "engageone": {"api_url": "https://eo.example", "client_id": "client", "secret": "eo-secret-1234",
                  "customer_id": "customer"},
}
FORMS: dict[str, dict[str, Any]] = {
    "ngp": {"form_id": "1"},
    "actionnetwork": {"action": "signup"},
    "ens": {"page_id": 1, "fields": {"Email Address": {}}},
    "engageone": {"campaign": "welcome", "communication": "welcome-mail"},
}
SUBTABLES: dict[str, Any] = {
    "captcha": {"provider": "turnstile", "secret": "captcha-secret"},
    "followup": {"campaign": "welcome", "communication": "welcome-mail"},
    "contact_message": {"subject": "Clean air", "message": "Dear MP"},
    "origin_source": {"code": "web", "category": "site"},
    "webhooks[]": {"url": "https://hooks.example/in", "secret": SECRET},
}
TOP = ("relay", "queue", "logging", "metrics", "alerts")
LEFT_OUT = object()  # a key given this value is left out of the table, even where the least contents have it
REFERENCE = reference()


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if v is not LEFT_OUT}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def build(section: str, keys: dict[str, Any]) -> dict[str, Any]:
    """A config whose table `section` (as reference() names it) holds `keys` over the least it needs."""
    return _strip(_build(section, keys))


def _build(section: str, keys: dict[str, Any]) -> dict[str, Any]:
    path, _, provider = section.partition(" (")
    provider = provider.rstrip(")")
    parts = path.split(".")
    if parts[0] in TOP:
        return {parts[0]: dict(keys)}
    if parts[0] == "providers":
        return {"providers": {parts[1]: {**PROVIDERS[parts[1]], **keys}}}
    kind = provider or "actionnetwork"
    providers = {kind: PROVIDERS[kind]}
    form: dict[str, Any] = {"provider": kind, **FORMS[kind]}
    rest = parts[2:]
    if not rest:
        form.update(keys)
    elif rest[0] == "webhooks[]":
        form["webhooks"] = [{**SUBTABLES["webhooks[]"], **keys}]
    elif len(rest) == 2:  # a table of tables: fields.<name>, custom_fields.<name>
        tables = dict(form.get(rest[0], {}))
        name = next(iter(tables), "Employer")
        tables[name] = {**tables.get(name, {}), **keys}
        form[rest[0]] = tables
    else:
        form[rest[0]] = {**SUBTABLES.get(rest[0], {}), **keys}
        if rest[0] == "followup":
            providers["engageone"] = PROVIDERS["engageone"]
    return {"providers": providers, "forms": {"f": form}}


SECTIONS = sorted(REFERENCE)
ROWS = [(section, row) for section in SECTIONS for row in REFERENCE[section]]


def test_reference_names_every_table_the_relay_reads():
    expected = {"relay", "queue", "logging", "metrics", "alerts", "forms.<slug>", "forms.<slug>.osdi", "forms.<slug>.thanks",
                "forms.<slug>.captcha", "forms.<slug>.followup", "forms.<slug>.webhooks[]",
                "forms.<slug>.contact_message (ens)", "forms.<slug>.fields.<name> (ens)",
                "forms.<slug>.origin_source (ens)", "forms.<slug>.custom_fields.<name> (actionnetwork)",
                "forms.<slug>.fields.<name> (engageone)"}
    expected |= {f"providers.{name}" for name in PROVIDERS} | {f"forms.<slug> ({name})" for name in PROVIDERS}
    assert set(REFERENCE) == expected


@pytest.mark.parametrize("section", SECTIONS)
def test_each_table_loads_with_the_least_it_needs(section):
    parse_config(build(section, {}))


@pytest.mark.parametrize("section,row", ROWS, ids=[f"{s}:{r.key}" for s, r in ROWS])
def test_every_listed_key_is_accepted_and_its_default_is_what_a_missing_key_takes(section, row):
    assert row.meaning and len(row.meaning) < 200 and "\n" not in row.meaning, "one line of meaning"
    assert row.type
    if row.default is REQUIRED:
        # A required key is checked where it is listed: a value of the wrong kind is named in the error.
        with pytest.raises(ConfigError, match=rf"[.\]]{re.escape(row.key)}: "):
            parse_config(build(section, {row.key: ["not", "this"]}))
        return
    without = parse_config(build(section, {row.key: LEFT_OUT}))
    with_default = parse_config(build(section, {row.key: row.default}))
    assert with_default == without


@pytest.mark.parametrize("section", SECTIONS)
def test_a_key_the_reference_does_not_list_is_refused(section):
    with pytest.raises(ConfigError, match=r"zz_not_a_key: (unknown key|Unknown field)"):
        parse_config(build(section, {"zz_not_a_key": 1}))


def _documented_configs() -> list[dict[str, Any]]:
    """Every ```toml block of the README and docs/ that is a whole TOML document."""
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for block in re.findall(r"```toml\n(.*?)```", page.read_text(encoding="utf-8"), re.DOTALL):
            try:
                found.append(tomllib.loads(block))
            except tomllib.TOMLDecodeError:
                continue  # a fragment with "..." in it
    return found


def _keys(section: str) -> set[str]:
    return {row.key for row in REFERENCE[section]}


def _check_form(slug: str, form: dict[str, Any], problems: list[str]) -> None:
    kinds = [form["provider"]] if form.get("provider") in PROVIDERS else list(PROVIDERS)
    own = set().union(*(_keys(f"forms.<slug> ({kind})") for kind in kinds))
    for key, value in form.items():
        if key not in _keys("forms.<slug>") | own:
            problems.append(f"forms.{slug}.{key}")
            continue
        sub = f"forms.<slug>.{key}"
        tables = [f"{sub} ({kind})" for kind in kinds] + [sub]
        named = [f"forms.<slug>.{key}.<name> ({kind})" for kind in kinds]
        if key == "webhooks":
            problems += [f"forms.{slug}.webhooks.{k}" for hook in value for k in hook if k not in _keys(sub + "[]")]
        elif isinstance(value, dict) and any(t in REFERENCE for t in named):
            allowed = set().union(*(_keys(t) for t in named if t in REFERENCE))
            problems += [f"forms.{slug}.{key}.*.{k}" for table in value.values() if isinstance(table, dict)
                         for k in table if k not in allowed]
        elif isinstance(value, dict) and any(t in REFERENCE for t in tables):
            allowed = set().union(*(_keys(t) for t in tables if t in REFERENCE))
            problems += [f"forms.{slug}.{key}.{k}" for k in value if k not in allowed]


def test_every_key_the_documentation_uses_is_in_the_reference():
    configs = _documented_configs()
    assert len(configs) >= 10, "the README's examples were not found"
    problems: list[str] = []
    seen = 0
    for config in configs:
        for table, keys in config.items():
            if table in TOP:
                problems += [f"{table}.{k}" for k in keys if k not in _keys(table)]
                seen += len(keys)
            elif table == "providers":
                for name, settings in keys.items():
                    problems += [f"providers.{name}.{k}" for k in settings if k not in _keys(f"providers.{name}")]
                    seen += len(settings)
            elif table == "forms":
                for slug, form in keys.items():
                    _check_form(slug, form, problems)
                    seen += len(form)
    assert seen >= 100
    assert problems == []

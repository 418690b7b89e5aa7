"""The generated configuration reference against the config loader itself.

A key the loader accepts and the reference leaves out, or a key the reference names and the loader refuses, fails
here. "Refuses" is asked of the loader (formrelay.core.config.parse_config): each documented key is set in a
config that loads, in the table the reference puts it in, and the loader must not call it unknown. "Accepts" is
read from the schemas the loader validates with (every table registered with the config, every provider's, and
the tables nested in them): each of their keys must be in the reference, with a default.
"""
from __future__ import annotations

import copy
import re
import sys
from typing import Any

import pytest
from marshmallow import Schema, fields

from tests.docs.conftest import DOCS

sys.path.insert(0, str(DOCS / "hooks"))

import config_reference  # noqa: E402

from formrelay.core import config  # noqa: E402
from formrelay.core.config import ConfigError, parse_config  # noqa: E402
from formrelay.providers import REGISTRY  # noqa: E402

SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZn"
ENV = {"NGP_API_KEY": "placeholder-ngp-key", "ENS_API_TOKEN": "placeholder-ens-token"}

# A config that loads: every provider, one form of each, and each table a form may hold.
BASE: dict[str, Any] = {
    "relay": {}, "queue": {}, "logging": {}, "metrics": {},
    "providers": {
        "ngp": {"api_key": "${NGP_API_KEY}"},
        "ens": {"base_url": "https://ca.engagingnetworks.app/ens/service", "api_token": "${ENS_API_TOKEN}"},
        "actionnetwork": {},
        "engageone": {"api_url": "https://api.example.org", "client_id": "c", "secret": "s", "customer_id": "x"},
    },
    "forms": {
        "join": {"provider": "ngp", "form_id": "1",
                 "captcha": {"provider": "turnstile", "secret": "t"},
                 "followup": {"campaign": "Thanks", "communication": "Thanks"},
                 "webhooks": [{"url": "https://hooks.example.org/x", "secret": SECRET}],
                 "osdi": {}, "thanks": {}},
        "mp": {"provider": "ens", "page_id": 1, "fields": {"Email Address": {}},
               "contact_message": {"subject": "s", "message": "m"}},
        "air": {"provider": "actionnetwork", "action": "petition", "action_id": "abc",
                "custom_fields": {"Employer": {}}},
        "toolkit": {"provider": "engageone", "campaign": "C", "communication": "K", "fields": {"first_name": {}}},
    },
}
FORM_OF = {"ngp": "join", "ens": "mp", "actionnetwork": "air", "engageone": "toolkit"}


def location(section: config_reference.Section) -> list[Any]:
    """Where the reference's section lives in BASE: the path of keys to its table."""
    path = section.path
    if "." not in path:  # a top-level table: [relay], [queue], [alerts], ...
        return [path]
    if path.startswith("providers."):
        return ["providers", path.split(".", 1)[1]]
    provider = re.fullmatch(r'provider = "(\w+)"', section.scope)
    form = FORM_OF[provider.group(1)] if provider else "join"
    rest = path.removeprefix("forms.<slug>").lstrip(".")
    where: list[Any] = ["forms", form]
    for part in rest.split(".") if rest else []:
        if part == "<name>":
            table = BASE["forms"][form][where[-1]] if len(where) == 3 else None
            assert table, f"BASE has no entry under {path}: add one"
            where.append(next(iter(table)))
        else:
            where.append(part)
    if section.array:
        where.append(0)
    return where


def table_at(raw: dict[str, Any], where: list[Any]) -> dict[str, Any]:
    """The table at where, made empty if BASE has none there (a key that may be a value or a table)."""
    node: Any = raw
    for part in where:
        node = node.setdefault(part, {}) if isinstance(part, str) and not isinstance(node.get(part), (dict, list)) \
            else node[part]
    assert isinstance(node, dict)
    return node


def sample(key: config_reference.Key) -> Any:
    return {"boolean": True, "integer": 1, "number": 1}.get(key.type, [] if key.type.startswith("list") else "x")


def unknown(message: str, key: str) -> bool:
    return bool(re.search(rf"(^|[.\s]){re.escape(key)}: (unknown key|Unknown field)", message))


def load(raw: dict[str, Any]) -> str:
    """'' when the config loads, else the loader's message."""
    try:
        parse_config(raw, env=ENV)
    except ConfigError as exc:
        return str(exc)
    return ""


SECTIONS = config_reference.reference()


def test_the_base_config_loads():
    assert load(copy.deepcopy(BASE)) == ""


@pytest.mark.parametrize("section", SECTIONS, ids=lambda s: f"{s.path} {s.scope}".strip())
def test_every_documented_key_is_one_the_loader_accepts(section):
    where = location(section)
    assert section.keys, f"{section.path}: no keys documented"
    for key in section.keys:
        raw = copy.deepcopy(BASE)
        table = table_at(raw, where)
        table.setdefault(key.name, sample(key))
        message = load(raw)
        assert not unknown(message, key.name), f"[{section.path}] {key.name}: the loader refuses it: {message}"
    # ... and the probe can tell: a key nobody defined is refused in that very table.
    raw = copy.deepcopy(BASE)
    table_at(raw, where)["no_such_key"] = "x"
    assert unknown(load(raw), "no_such_key"), f"[{section.path}] accepts any key: the check above proves nothing"


def walk(schema: Any, seen: dict[str, set[str]]) -> None:
    """Every key of schema and of the tables nested in it, by schema class name."""
    schema = schema() if isinstance(schema, type) else schema
    keys = seen.setdefault(type(schema).__name__, set())
    for name, f in schema.fields.items():
        keys.add(f.data_key or name)
        if isinstance(f, fields.Nested):
            walk(f.nested, seen)
        elif isinstance(f, fields.Dict) and isinstance(f.value_field, fields.Nested):
            walk(f.value_field.nested, seen)
        elif callable(f.metadata.get("table")):  # a key that may be written as a table (ENS origin_source)
            walk(f.metadata["table"](), seen)


def accepted() -> dict[str, set[str]]:
    """The keys the loader validates with, per schema: everything registered with the config, and what it holds."""
    seen: dict[str, set[str]] = {}
    roots: list[Schema | type[Schema]] = [config.RelaySchema, config.LoggingSchema, config.MetricsSchema,
                                          config.CommonFormSchema, config.WebhookSchema]
    roots += list(config._SECTIONS.values())
    for name in set(REGISTRY) | set(config._PROVIDERS):
        cls: Any = config.provider_schemas(name)
        roots += [cls.settings_schema(), cls.form_schema()]
        if hasattr(cls, "followup_schema"):
            roots.append(cls.followup_schema())
    for root in roots:
        walk(root, seen)
    return seen


def test_every_key_the_loader_accepts_is_in_the_reference_with_its_default():
    """Each schema the loader validates a table with (walked from the registrations, not from the reference)
    has all its keys in one section of the reference; and every key shows a default."""
    tables = [{k.name for k in section.keys} for section in SECTIONS]
    for section in SECTIONS:
        for key in section.keys:
            assert key.default, f"[{section.path}] {key.name}: no default shown"
    missing = {schema: sorted(keys - max(tables, key=lambda t: len(t & keys)))
               for schema, keys in accepted().items()}
    missing = {schema: keys for schema, keys in missing.items() if keys}
    assert not missing, f"keys the loader accepts that the reference lacks: {missing}"


def test_the_keys_every_form_takes_are_all_in_the_reference():
    form = next(s for s in SECTIONS if s.path == "forms.<slug>" and not s.scope)
    assert config.COMMON_FORM_KEYS <= {k.name for k in form.keys}


def test_the_built_page_lists_every_section_and_key(site):
    html = (site.path / "reference" / "configuration.html").read_text()
    for section in SECTIONS:
        assert f'id="{section.anchor}"' in html, section.path
        for key in section.keys:
            assert f"<code>{key.name}</code>" in html, (section.path, key.name)



def test_every_key_in_the_reference_has_a_meaning():
    """One line of meaning a key (the settings' metadata["description"]), fit for a table cell."""
    lacking = [f"[{s.path}] {k.name}" for s in SECTIONS for k in s.keys if not k.meaning]
    assert not lacking, f"keys without a meaning: {lacking}"
    for section in SECTIONS:
        for key in section.keys:
            assert "\n" not in key.meaning, (section.path, key.name)

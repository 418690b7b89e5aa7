"""The configuration reference page, from formrelay.core.config.reference(): the loader's own list of tables.

Every table the loader reads ([relay], [queue], [logging], [metrics], [providers.<name>], [forms.<slug>] and the
tables inside a form) with each key's type, default, allowed values and meaning, as the settings declare them
(formrelay/core/settings.py: the default is the marshmallow field's load_default, the meaning its
metadata["description"]). docs/hooks/reference.py renders it into docs/reference/configuration.md at build time;
tests/docs/test_config_reference.py checks it against the loader, and tests/test_config_reference.py checks
reference() itself.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Importing the relay makes the floors above core register their schemas with the config (as create_app does).
import formrelay.cli  # noqa: F401  (and every table the CLI registers: [alerts], ...)
import formrelay.delivery.relay  # noqa: F401
from formrelay.core import config
from formrelay.core.settings import REQUIRED

TITLES = {
    "relay": "Relay-wide settings",
    "queue": "The durable queue",
    "logging": "Logs",
    "metrics": "Metrics and operator access",
    "alerts": "Alerts: email or chat when a CRM fails or the queue backs up",
    "forms.<slug>": "Every form, whatever its provider",
    "forms.<slug>.osdi": "What an OSDI body may still decide",
    "forms.<slug>.thanks": "A form's thank-you ladder",
    "forms.<slug>.captcha": "A form's CAPTCHA",
    "forms.<slug>.followup": "A form's follow-up email (EngageOne)",
    "forms.<slug>.webhooks": "A form's webhooks (one table each)",
}


@dataclass
class Key:
    name: str
    type: str
    default: str
    allowed: str
    meaning: str


@dataclass
class Section:
    path: str          # the TOML table: "relay", "providers.ngp", "forms.<slug>", "forms.<slug>.fields.<name>"
    title: str
    keys: list[Key] = field(default_factory=list)
    intro: str = ""
    scope: str = ""    # 'provider = "ens"' for a provider's own form keys
    array: bool = False  # an array of tables: [[path]]

    @property
    def heading(self) -> str:
        return f"[[{self.path}]]" if self.array else f"[{self.path}]"

    @property
    def anchor(self) -> str:
        return _anchor(f"{self.path} {self.scope}")


def _literal(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '""' if value == "" else f'"{value}"'
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else "{" + ", ".join(f"{k} = {_literal(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (int, float)):
        return f"{value:_}".replace("_", ",") if abs(value) >= 10_000 else str(value)
    return "(a table of its defaults)" if hasattr(value, "__dataclass_fields__") else str(value)


def _default(value: Any) -> str:
    return "required" if value is REQUIRED else _literal(value)


def reference() -> list[Section]:
    """The loader's tables (config.reference()), in its order, as sections of the page."""
    out: list[Section] = []
    for table, rows in config.reference().items():
        match = re.fullmatch(r"(.+?)(\[\])?(?: \((\w+)\))?", table)
        assert match, table
        path, array, provider = match.group(1), bool(match.group(2)), match.group(3) or ""
        scope = f'provider = "{provider}"' if provider else ""
        if path in TITLES:
            title = TITLES[path]
        elif provider:
            title = f"Forms of provider {provider}: {path.removeprefix('forms.<slug>').lstrip('.')}"
        elif path.startswith("providers."):
            title = f"Provider {path.split('.', 1)[1]}"
        else:
            title = f"The [{path}] table"
        if provider and path == "forms.<slug>":
            title = f'Forms with provider = "{provider}"'
        intro = (f'Keys of a form with `provider = "{provider}"`, beside the keys every form takes.'
                 if provider and path == "forms.<slug>" else "")
        keys = [Key(name=r.key, type=str(r.type), default=_default(r.default), allowed=str(r.allowed or ""),
                    meaning=str(r.meaning or "")) for r in rows]
        out.append(Section(path=path, title=title, keys=keys, intro=intro, scope=scope, array=array))
    return out


def _anchor(path: str) -> str:
    """The heading id of a section: its path in lower case, runs of other characters as one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")


def _cell(text: str) -> str:
    """Text for a table cell: pipes escaped; < and > escaped outside code spans (`<slug>` is not a tag)."""
    parts = text.replace("|", "\\|").replace("\n", " ").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;").replace(">", "&gt;") for i, p in enumerate(parts))


def markdown() -> str:
    """The reference as Markdown: one heading and one table per section."""
    lines: list[str] = []
    sections = reference()
    # a key whose value is a table of its own: its meaning links to that table's section
    tables = {(s.path, s.scope): s for s in sections}
    for section in sections:
        for key in section.keys:
            for sub in (f"{section.path}.{key.name}", f"{section.path}.{key.name}.<name>"):
                inner = tables.get((sub, section.scope)) or tables.get((sub, ""))
                if inner is not None:
                    key.meaning += f" (the table: [`{inner.heading}`](#{inner.anchor}))"
    for section in sections:
        scope = f" ({section.scope})" if section.scope else ""
        lines += [f"### `{section.heading}`{_cell(scope)} {{#{section.anchor}}}", "", f"{section.title}."]
        if section.intro:
            lines += ["", section.intro]
        lines += ["", "| key | type | default | allowed values | meaning |", "|---|---|---|---|---|"]
        for k in section.keys:
            allowed = _cell(k.allowed)
            lines.append(f"| `{k.name}` | {_cell(k.type)} | `{_cell(k.default)}` | {allowed} | {_cell(k.meaning)} |")
        lines.append("")
    return "\n".join(lines)

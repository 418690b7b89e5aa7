"""The configuration reference, read from the very schemas the config loader validates with.

Every table the loader reads ([relay], [queue], [logging], [metrics], [providers.<name>], [forms.<slug>] and the
tables inside a form) is listed with each key's type, default, allowed values and meaning (the marshmallow
field's metadata["description"]). docs/hooks/reference.py renders it into docs/reference/configuration.md at
build time; tests/docs/test_config_reference.py checks it against the loader.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any

from marshmallow import Schema, fields, missing, validate

# Importing the relay makes the floors above core register their schemas with the config (as create_app does).
import formrelay.delivery.relay  # noqa: F401
from formrelay.core import config
from formrelay.providers import REGISTRY

# Keys of [forms.<slug>] that CommonFormSchema reads as free-form values: the table below them is read by a
# schema of its own (a [forms.x.<key>] section of this reference) or is keyed by the form's own field names.
FORM_SUBTABLES = {
    "captcha": "forms.<slug>.captcha",
    "followup": "forms.<slug>.followup",
    "webhooks": "forms.<slug>.webhooks",
    "osdi": "forms.<slug>.osdi",
    "thanks": "forms.<slug>.thanks",
}
FREE_TABLES = {
    "aliases": "a table: another field name = the form's field it stands for",
    "labels": "a table: field = label (every language), or a language tag = {field = label}",
    "titles": "a table: language tag = the form's title in that language",
    "person": "a table: person key (given_name, email, custom.<key>, ...) = the form's field",
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
    schema: str        # the schema's class name, for whoever edits it
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


def _type(f: fields.Field) -> str:
    if f.metadata.get("kind"):  # a settings field that names its own type (formrelay.core.settings, r-config)
        return str(f.metadata["kind"])
    if isinstance(f, fields.List):
        return f"list of {_type(f.inner)}"
    if isinstance(f, fields.Nested):
        return "table"
    if isinstance(f, fields.Dict):
        values = f.value_field
        if isinstance(values, fields.Nested):
            return "table of tables"
        return f"table of {_type(values)}" if values is not None else "table"
    names = [(fields.Url, "URL"), (fields.Email, "email"), (fields.Boolean, "boolean"), (fields.Integer, "integer"),
             (fields.Float, "number"), (fields.String, "string")]
    for cls, name in names:
        if isinstance(f, cls):
            return name
    doc = type(f).__doc__  # a formrelay field of its own says what it takes in its docstring's first line
    return doc.strip().splitlines()[0] if doc and type(f).__module__.startswith("formrelay") else "any"


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


def _default(f: fields.Field) -> str:
    if f.required:
        return "required"
    default = f.load_default
    if default is missing:
        return "unset"
    if callable(default):
        try:
            default = default()
        except TypeError:
            return "(computed)"
    return _literal(default)


def _validator(v: Any, unit: str = "characters") -> str:
    if isinstance(v, validate.URL):
        return "an http(s) URL"
    if isinstance(v, validate.OneOf):
        return ", ".join(_literal(c) for c in v.choices)
    if isinstance(v, validate.Range):
        low = "" if v.min is None else _literal(v.min)
        high = "" if v.max is None else _literal(v.max)
        if low and high:
            return f"{low} to {high}"
        return f"at least {low}" if low else f"at most {high}"
    if isinstance(v, validate.Length):
        if v.equal is not None:
            return f"exactly {v.equal} {unit}"
        parts = [f"at least {v.min}" if v.min else "", f"at most {v.max}" if v.max else ""]
        return " and ".join(p for p in parts if p) + f" {unit}"
    if isinstance(v, validate.Regexp):
        return f"matches `{v.regex.pattern}`"
    doc = inspect.getdoc(v)
    if doc:
        return doc.splitlines()[0]
    name = getattr(v, "__name__", "")
    return "" if name == "<lambda>" else re.sub(r"^_|_ok$", "", name).replace("_", " ")


def _allowed(f: fields.Field) -> str:
    if f.metadata.get("allowed"):  # said in words where the field is declared
        return str(f.metadata["allowed"])
    checks = list(f.validators)
    inner = f.inner if isinstance(f, fields.List) else (f.key_field if isinstance(f, fields.Dict) else None)
    unit = "entries" if isinstance(f, (fields.List, fields.Dict)) else "characters"
    parts = [_validator(v, unit) for v in checks]
    if inner is not None:
        parts += [("each: " if isinstance(f, fields.List) else "keys: ") + _validator(v) for v in inner.validators]
    if isinstance(f, fields.Dict) and f.value_field is not None and not isinstance(f.value_field, fields.Nested):
        parts += ["values: " + _validator(v) for v in f.value_field.validators]
    return "; ".join(p for p in parts if p)


def _meaning(f: fields.Field) -> str:
    return str(f.metadata.get("description", "")).strip()


def _key(name: str, f: fields.Field) -> Key:
    return Key(name=f.data_key or name, type=_type(f), default=_default(f), allowed=_allowed(f), meaning=_meaning(f))


def _schema_instance(schema: Any) -> Schema:
    return schema() if isinstance(schema, type) else schema


def _sections_of(path: str, title: str, schema: Any, intro: str = "", scope: str = "",
                 array: bool = False) -> list[Section]:
    """A section for schema's keys, then one for each table nested in it (Nested, or a table of Nested)."""
    schema = _schema_instance(schema)
    section = Section(path=path, title=title, schema=type(schema).__name__, intro=intro, scope=scope, array=array)
    out = [section]
    for name, f in schema.fields.items():
        key = f.data_key or name
        section.keys.append(_key(name, f))
        if isinstance(f, fields.Nested):
            out += _sections_of(f"{path}.{key}", f"{title}: {key}", f.nested, scope=scope)
        elif isinstance(f, fields.Dict) and isinstance(f.value_field, fields.Nested):
            out += _sections_of(f"{path}.{key}.<name>", f"{title}: each entry of {key}", f.value_field.nested,
                                scope=scope)
        elif callable(f.metadata.get("table")):  # a key written as a value or as a table (ENS origin_source)
            out += _sections_of(f"{path}.{key}", f"{title}: {key} written as a table", f.metadata["table"](),
                                scope=scope)
    return out


def reference() -> list[Section]:
    """Every table and key the loader reads, in the order a config file is usually written."""
    out: list[Section] = []
    out += _sections_of("relay", "Relay-wide settings", config.RelaySchema)
    out += _sections_of("queue", "The durable queue", config._SECTIONS["queue"])
    out += _sections_of("logging", "Logs", config.LoggingSchema)
    out += _sections_of("metrics", "Metrics and operator access", config.MetricsSchema)
    for name in REGISTRY:
        cls = config.provider_schemas(name)
        assert cls is not None, name
        need = "needed by its forms" if cls.needs_settings else "optional"
        out += _sections_of(f"providers.{name}", f"Provider {name}", cls.settings_schema(),
                            intro=f"The `[providers.{name}]` table is {need}.")
    common = config.CommonFormSchema()
    form = Section(path="forms.<slug>", title="Every form", schema="CommonFormSchema",
                   intro="Keys every form takes, whatever its provider; the provider's own keys follow.")
    out.append(form)
    for name, f in common.fields.items():
        key = _key(name, f)
        if name in FREE_TABLES and not key.meaning:
            key.meaning = FREE_TABLES[name]
        if name in FORM_SUBTABLES and not key.meaning:
            key.meaning = f"see [`{FORM_SUBTABLES[name]}`](#{_anchor(FORM_SUBTABLES[name] + ' ')})"
        form.keys.append(key)
    for name in REGISTRY:
        cls = config.provider_schemas(name)
        assert cls is not None
        out += _sections_of("forms.<slug>", f"Forms of provider {name}", cls.form_schema(),
                            scope=f'provider = "{name}"',
                            intro=f'Keys of a form with `provider = "{name}"`, beside the keys every form takes.')
    out += _sections_of("forms.<slug>.captcha", "A form's CAPTCHA", config._SECTIONS["captcha"])
    engageone: Any = config.provider_schemas("engageone")
    out += _sections_of("forms.<slug>.followup", "A form's follow-up email (EngageOne)", engageone.followup_schema())
    out += _sections_of("forms.<slug>.webhooks", "A form's webhooks (one table each)", config.WebhookSchema,
                        array=True)
    osdi = common.fields["osdi"]
    thanks = common.fields["thanks"]
    assert isinstance(osdi, fields.Nested) and isinstance(thanks, fields.Nested)
    out += _sections_of("forms.<slug>.osdi", "What an OSDI body may still decide", osdi.nested)
    out += _sections_of("forms.<slug>.thanks", "A form's thank-you ladder", thanks.nested)
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
    for section in reference():
        scope = f" ({section.scope})" if section.scope else ""
        lines += [f"### `{section.heading}`{_cell(scope)} {{#{section.anchor}}}", "",
                  f"{section.title}. Schema: `{section.schema}`."]
        if section.intro:
            lines += ["", section.intro]
        lines += ["", "| key | type | default | allowed values | meaning |", "|---|---|---|---|---|"]
        for k in section.keys:
            allowed = _cell(k.allowed)
            lines.append(f"| `{k.name}` | {_cell(k.type)} | `{_cell(k.default)}` | {allowed} | {_cell(k.meaning)} |")
        lines.append("")
    return "\n".join(lines)

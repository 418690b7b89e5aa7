"""The HTTP API reference: the relay's own OpenAPI document (formrelay/web/openapi.py), rendered as Markdown.

The document is built at docs build time exactly as `GET /v1/openapi.json` builds it, for an example config
with one form whose fields come from the config (an EngageOne send), so nothing is fetched from a CRM.
"""
from __future__ import annotations

import json
from typing import Any

from formrelay.core.config import parse_config
from formrelay.core.version import __version__
from formrelay.delivery.relay import Relay
from formrelay.web.openapi import build_document

# The example form of the reference. Every form's request body has the same shape: its own fields (derived from
# its CRM's definition), beside the relay's controls.
EXAMPLE = {
    "providers": {"engageone": {"api_url": "https://api.example.org", "client_id": "example",
                                "secret": "example-secret", "customer_id": "example"}},
    "forms": {"join": {"provider": "engageone", "campaign": "Welcome", "communication": "Welcome", "fields": {
        "first_name": {"label": "First name", "required": True},
        "postcode": {"label": "Postcode", "max_length": 10}}}},
}


def document() -> dict[str, Any]:
    """The OpenAPI document for the example config, as the relay serves it."""
    return build_document(Relay(parse_config(EXAMPLE, env={})), __version__)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref:
        node: Any = doc
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
        return dict(node)
    return schema


def _type(doc: dict[str, Any], schema: dict[str, Any]) -> str:
    schema = _resolve(doc, schema)
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_type(doc, schema.get('items', {}))}"
    if "enum" in schema:
        return f"{kind}: " + ", ".join(f"`{v}`" for v in schema["enum"])
    if "format" in schema:
        return f"{kind} ({schema['format']})"
    return str(kind)


def _limits(schema: dict[str, Any]) -> str:
    names = {"maxLength": "at most {} characters", "minLength": "at least {} characters",
             "maximum": "at most {}", "minimum": "at least {}", "pattern": "matches `{}`"}
    return "; ".join(text.format(schema[key]) for key, text in names.items() if key in schema)


def _properties(doc: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> list[tuple[str, str, bool, str]]:
    """(name, type, required, description) for every property, nested objects and arrays of objects as a.b."""
    schema = _resolve(doc, schema)
    rows: list[tuple[str, str, bool, str]] = []
    for part in schema.get("allOf", []):
        rows += _properties(doc, part, prefix)
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        prop = _resolve(doc, prop)
        text = " ".join(t for t in (prop.get("description", ""), _limits(prop)) if t)
        rows.append((prefix + name, _type(doc, prop), name in required, text))
        items = prop.get("items", {})
        if prop.get("type") == "object" and "properties" in prop:
            rows += _properties(doc, prop, prefix + name + ".")
        elif isinstance(items, dict) and _resolve(doc, items).get("properties"):
            rows += _properties(doc, items, prefix + name + "[].")
    return rows


def _table(rows: list[tuple[str, str, bool, str]]) -> list[str]:
    if not rows:
        return ["(no properties)", ""]
    out = ["| name | type | required | description |", "|---|---|---|---|"]
    out += [f"| `{_cell(n)}` | {_cell(t)} | {'yes' if r else ''} | {_cell(d)} |" for n, t, r, d in rows]
    return out + [""]


def _body(doc: dict[str, Any], media: str, schema: dict[str, Any]) -> list[str]:
    out = [f"**Request body, `{media}`**", ""]
    if "oneOf" in schema:
        out += [f"One of {len(schema['oneOf'])} shapes:", ""]
        for number, choice in enumerate(schema["oneOf"], 1):
            title = choice.get("title") or choice.get("description") or ("a flat body" if number == 1 else "")
            out += [f"*Shape {number}*{': ' + _cell(title) if title else ''}", ""] + _table(_properties(doc, choice))
        return out
    return out + _table(_properties(doc, schema))


def markdown(doc: dict[str, Any] | None = None) -> str:
    doc = doc or document()
    lines: list[str] = [f"OpenAPI {doc['openapi']}, formrelay {doc['info']['version']}: "
                        f"{_cell(doc['info'].get('description', ''))}", ""]
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            lines += [f"### `{method.upper()} {path}`", "", _cell(op.get("summary", "")), ""]
            params = op.get("parameters", [])
            if params:
                lines += ["| parameter | in | type | required |", "|---|---|---|---|"]
                lines += [f"| `{p['name']}` | {p['in']} | {_cell(_type(doc, p.get('schema', {})))} | "
                          f"{'yes' if p.get('required') else ''} |" for p in params] + [""]
            for media, content in op.get("requestBody", {}).get("content", {}).items():
                lines += _body(doc, media, content.get("schema", {}))
            lines += ["| answer | meaning | content | headers |", "|---|---|---|---|"]
            for code, answer in op.get("responses", {}).items():
                media = ", ".join(f"`{m}`" for m in answer.get("content", {}))
                headers = ", ".join(f"`{h}`" for h in answer.get("headers", {}))
                lines.append(f"| `{code}` | {_cell(answer.get('description', ''))} | {media} | {headers} |")
            lines.append("")
    lines += ["## Shapes", ""]
    for name, schema in doc["components"]["schemas"].items():
        lines += [f"### `{name}`", ""]
        if schema.get("description"):
            lines += [_cell(schema["description"]), ""]
        lines += _table(_properties(doc, schema))
    return "\n".join(lines)


def json_text() -> str:
    return json.dumps(document(), indent=2, sort_keys=False) + "\n"

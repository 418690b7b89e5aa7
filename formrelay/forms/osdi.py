"""OSDI helper bodies (what the OSDI jQuery plugin posts), read into a form's own fields within the form's allow-lists.

An OSDI body at any form's URL is mapped through the form's person mapping (forms/person.py) to a flat body
in the form's own field names, which the form then validates exactly like a flat body. What is taken from
the body, and what is not:

- taken: the person (names, the primary email, phone and postal address, custom fields), `comments` where the
  form has a field for it, `referrer_data.source` / `referrer_data.referrer` as page context, and top-level
  relay controls (`_hp`, `_started`, `_idempotency_key`) and page context (`utm_*`, `source`, `referrer`);
- taken only where `[forms.x.osdi]` allows it: `add_tags` / `remove_tags` named in `allow_add_tags` /
  `allow_remove_tags`, an autoresponse not asked for (`triggers.autoresponse.enabled` false or absent, as the
  plugin's `autoresponse: false` sends) with `allow_autoresponse_off`, and an email or
  phone `status` of "subscribed" (which ticks the form's consent field) with `allow_status`;
- never: any other top-level key (flat field names beside `person` included), other triggers, other statuses.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from formrelay.core.config import OSDISettings
from formrelay.core.errors import BadRequest
from formrelay.core.i18n import Msg
from formrelay.core.i18n import gettext as _
from formrelay.forms.person import (
    CUSTOM_PREFIX,
    OSDIShapeError,
    PersonMapping,
    osdi_path,
    person_from_osdi,
    to_values,
)
from formrelay.forms.submission import CONTEXT_KEYS, CONTROL_PREFIX, OSDIBody, Value

REFERRER_KEYS = ("source", "referrer")
PATH_ECHO_MAX = 200  # a path may hold a custom field's name, which the page chose: echo a bounded amount
UNREADABLE = Msg("Not an OSDI body the relay can read: {path} {problem}.")
# TRANSLATORS: a field's message, then where in the OSDI body the field's value was found.
AT_PATH = Msg("{message} (at {path})")


@dataclass(frozen=True)
class OSDIRead:
    """An OSDI body read for one form: a flat body, where each field came from, and what the page may decide."""

    values: dict[str, Value]
    paths: Mapping[str, str] = field(default_factory=dict)
    page_options: Mapping[str, Any] = field(default_factory=dict)

    def annotate(self, errors: Mapping[str, list[str]]) -> dict[str, list[str]]:
        """The form's errors with the OSDI path in each message, so a developer finds the part of the body."""
        return {name: [AT_PATH.format(message=message, path=self.paths[name]) if name in self.paths else message
                       for message in messages]
                for name, messages in errors.items()}


def _allowed_tags(raw: Any, allowed: tuple[str, ...], where: str) -> list[str]:
    """The tags of `raw` that the allow-list names, in the config's spelling (matched ignoring case)."""
    if not allowed or raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
        raise BadRequest(Msg("{where} must be a list of strings.").format(where=where))
    by_lower = {tag.lower(): tag for tag in allowed}
    return list(dict.fromkeys(by_lower[t.strip().lower()] for t in raw if t.strip().lower() in by_lower))


def _autoresponse_off(triggers: Any) -> bool:
    """Whether the page asked for no autoresponse: anything but `triggers.autoresponse.enabled = true`.

    In OSDI a helper's autoresponse is a trigger the body asks for; the OSDI jQuery plugin's documented
    `autoresponse: false` option asks by leaving `triggers` out altogether (it never sends `enabled: false`).
    So an absent trigger says "off" as plainly as `enabled: false` does.
    """
    autoresponse = triggers.get("autoresponse") if isinstance(triggers, Mapping) else None
    return not (isinstance(autoresponse, Mapping) and autoresponse.get("enabled") is True)


def read_osdi(body: OSDIBody, mapping: PersonMapping, allow: OSDISettings) -> OSDIRead:
    """An OSDI body -> the form's flat body, within the allow-lists (pure). 400 when the shape is wrong."""
    doc = body.doc
    try:
        person, found = person_from_osdi(doc["person"])
    except OSDIShapeError as exc:
        path = exc.path if len(exc.path) <= PATH_ECHO_MAX else exc.path[:PATH_ECHO_MAX] + "..."
        raise BadRequest(UNREADABLE.format(path=path, problem=_(exc.message))) from None
    if not allow.allow_status:
        person = person.without_statuses()
    values: dict[str, Value] = dict(to_values(mapping, person))
    paths = {name: found.get(key, osdi_path(key)) for key, name in mapping.fields.items()}
    for custom in person.custom_fields:
        name = mapping.field_for(f"{CUSTOM_PREFIX}{custom}")
        if name is not None:
            paths.setdefault(name, osdi_path(f"{CUSTOM_PREFIX}{custom}"))

    comments_field = mapping.fields.get("comments")
    comments = doc.get("comments")
    if comments_field is not None and comments is not None:
        if not isinstance(comments, str):
            raise BadRequest(UNREADABLE.format(path="comments", problem=_(Msg("must be a string"))))
        values[comments_field] = comments

    # Relay controls and page context ride at the top level, as beside a flat body's fields.
    for key, value in body.items():
        bare = key[len(CONTROL_PREFIX):] if key.startswith(CONTROL_PREFIX) else key
        if key.startswith(CONTROL_PREFIX) or bare in CONTEXT_KEYS:
            values[CONTROL_PREFIX + bare if bare in CONTEXT_KEYS else key] = value
    referrer = doc.get("referrer_data")
    if isinstance(referrer, Mapping):
        for key in REFERRER_KEYS:
            if isinstance(referrer.get(key), str):
                values.setdefault(CONTROL_PREFIX + key, referrer[key])

    options: dict[str, Any] = {}
    add = _allowed_tags(doc.get("add_tags"), allow.allow_add_tags, "add_tags")
    remove = _allowed_tags(doc.get("remove_tags"), allow.allow_remove_tags, "remove_tags")
    if add:
        options["add_tags"] = add
    if remove:
        options["remove_tags"] = remove
    if allow.allow_autoresponse_off and _autoresponse_off(doc.get("triggers")):
        options["autoresponse"] = False
    return OSDIRead(values=values, paths=paths, page_options=options)


def _maps_to(mapping: PersonMapping, key: str) -> dict[str, Any]:
    name = mapping.fields.get(key)
    return {"type": "string", "description": f"-> the form's field {name!r}"} if name else {"type": "string"}


def request_schema(mapping: PersonMapping, allow: OSDISettings, controls: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenAPI (JSON Schema) description of an OSDI body for one form: what maps to which of its fields.

    Only `person` is required here; the form's own rules (required fields, formats) are its schema's, checked
    after mapping, exactly as for a flat body.
    """
    def has(*keys: str) -> bool:
        return any(k in mapping.fields for k in keys)

    person: dict[str, Any] = {}
    for key in ("given_name", "family_name"):
        if has(key):
            person[key] = _maps_to(mapping, key)
    if has("email"):
        email = {"address": {**_maps_to(mapping, "email"), "format": "email"}}
        if allow.allow_status and has("email_status"):
            email["status"] = {"type": "string", "enum": ["subscribed"],
                               "description": f"ticks the form's field {mapping.fields['email_status']!r}"}
        person["email_addresses"] = {"type": "array", "description": "the first (or `primary`) one is used",
                                     "items": {"type": "object", "required": ["address"], "properties": email}}
    if has("phone"):
        phone = {"number": _maps_to(mapping, "phone")}
        if allow.allow_status and has("phone_status"):
            phone["status"] = {"type": "string", "enum": ["subscribed"],
                               "description": f"ticks the form's field {mapping.fields['phone_status']!r}"}
        person["phone_numbers"] = {"type": "array", "description": "the first (or `primary`) one is used",
                                   "items": {"type": "object", "required": ["number"], "properties": phone}}
    if has("street", "street2", "locality", "region", "postal_code", "country"):
        lines = [mapping.fields[k] for k in ("street", "street2") if k in mapping.fields]
        address: dict[str, Any] = {}
        if lines:
            address["address_lines"] = {"type": "array", "items": {"type": "string"}, "maxItems": 10,
                                        "description": "-> " + ", ".join(repr(n) for n in lines)}
        for key in ("locality", "region", "postal_code", "country"):
            if has(key):
                address[key] = _maps_to(mapping, key)
        person["postal_addresses"] = {"type": "array", "description": "the first (or `primary`) one is used",
                                      "items": {"type": "object", "properties": address}}
    if mapping.custom is not None or any(k.startswith(CUSTOM_PREFIX) for k in mapping.fields):
        person["custom_fields"] = {"type": "object", "additionalProperties": {"type": "string"},
                                   "description": f"-> the form's field {mapping.custom or '(as configured)'!r}"
                                                  .replace("{key}", "<key>")}
    properties: dict[str, Any] = {"person": {"type": "object", "properties": person}}
    if has("comments"):
        properties["comments"] = _maps_to(mapping, "comments")
    tags_note = "ignored unless [forms.x.osdi] {} names the tag"
    properties["add_tags"] = {"type": "array", "items": {"type": "string"}, "description": tags_note.format("allow_add_tags")}
    properties["remove_tags"] = {"type": "array", "items": {"type": "string"},
                                 "description": tags_note.format("allow_remove_tags")}
    properties["triggers"] = {"type": "object", "description": "only autoresponse.enabled is read, and only with "
                                                               "[forms.x.osdi] allow_autoresponse_off: anything but "
                                                               "true (absent too) is no autoresponse"}
    properties["referrer_data"] = {"type": "object", "properties": {k: {"type": "string"} for k in REFERRER_KEYS}}
    properties.update(controls)
    return {"type": "object", "required": ["person"], "properties": properties,
            "description": "An OSDI helper body (as the OSDI jQuery plugin posts), mapped to this form's fields"}

"""The common person model (the OSDI person) and the pure mapping between it and any form's own fields.

Every provider names a form's fields in its own words: NGP `EmailAddress`, ENS `Email Address`, Action
Network `email_address`, an EngageOne data-set key such as `email`. A `PersonMapping` says which field of one
form holds which part of a person. Each provider builds its forms' mappings in one pure function (exposed as
`Provider.person_mapping(form, definition)`), and `[forms.x.person]` in the config overrides it
(`apply_overrides`). The relay's `Form.person_mapping` is the result, cached with the form's definition.

With two mappings, a submission validated for form A (any provider) can be carried to form B (any provider):

    from formrelay.forms.person import from_values, to_values

    person = from_values(mapping_a, values_a)     # form A's validated values -> Person
    values_b = to_values(mapping_b, person)        # Person -> form B's field names, as a flat body
    # or in one line, as the fan-out to `also = [...]` forms does it:
    values_b = to_values(relay.form("b").person_mapping,
                         from_values(relay.form("a").person_mapping, submission.values))
    submission_b = relay.form("b").validate(values_b)   # B's own schema has the last word (422 as usual)

An OSDI person document (the `person` object of an OSDI helper body) converts both ways with
`person_from_osdi` and `Person.to_osdi`; `formrelay.forms.osdi` reads whole helper bodies with it.

Person keys, the names a mapping maps from:
- `given_name`, `family_name`;
- `email`, `email_status` (the primary email address and its OSDI status; a status maps to a checkbox field,
  ticked for "subscribed"), `phone`, `phone_status` (likewise);
- `street`, `street2` (the first two address lines), `locality`, `region`, `postal_code`, `country`;
- `custom.<key>` for one custom field; the mapping's `custom` pattern names all the others
  (`"custom[{key}]"` on Action Network, `"{key}"` where a custom field is a same-named form field);
- `comments`: not part of the person but of an OSDI helper body beside it; mapped the same way.

Pure: no I/O, no Flask; imports only the relay's core and forms floors.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from formrelay.core.i18n import Msg
from formrelay.forms.fields import Definition, to_text

NAME_KEYS = ("given_name", "family_name")
EMAIL_KEYS = ("email", "email_status")
PHONE_KEYS = ("phone", "phone_status")
ADDRESS_KEYS = ("street", "street2", "locality", "region", "postal_code", "country")
PERSON_KEYS: tuple[str, ...] = (*NAME_KEYS, *EMAIL_KEYS, *PHONE_KEYS, *ADDRESS_KEYS)
STATUS_KEYS = ("email_status", "phone_status")
ACTION_KEYS = ("comments",)
CUSTOM_PREFIX = "custom."
SUBSCRIBED = "subscribed"
# A checkbox or OPT answer that means "yes": a status field ticked means subscribed.
YES = {"true", "on", "1", "yes", "y", "checked", SUBSCRIBED}

PATHS: Mapping[str, str] = {
    "given_name": "person.given_name",
    "family_name": "person.family_name",
    "email": "person.email_addresses[0].address",
    "email_status": "person.email_addresses[0].status",
    "phone": "person.phone_numbers[0].number",
    "phone_status": "person.phone_numbers[0].status",
    "street": "person.postal_addresses[0].address_lines[0]",
    "street2": "person.postal_addresses[0].address_lines[1]",
    "locality": "person.postal_addresses[0].locality",
    "region": "person.postal_addresses[0].region",
    "postal_code": "person.postal_addresses[0].postal_code",
    "country": "person.postal_addresses[0].country",
    "comments": "comments",
}
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class MappingError(ValueError):
    """A mapping (usually a config override) that cannot be used; the message names the key and the field."""


class OSDIShapeError(ValueError):
    """An OSDI document whose shape is wrong at `path` (a list where an object belongs, ...)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


@dataclass(frozen=True)
class EmailAddress:
    address: str
    status: str | None = None


@dataclass(frozen=True)
class PhoneNumber:
    number: str
    status: str | None = None
    number_type: str | None = None


@dataclass(frozen=True)
class PostalAddress:
    address_lines: tuple[str, ...] = ()
    locality: str | None = None
    region: str | None = None
    postal_code: str | None = None
    country: str | None = None


@dataclass(frozen=True)
class Person:
    """An OSDI person: names, emails, phones, postal addresses and custom fields (the first of each is primary)."""

    given_name: str | None = None
    family_name: str | None = None
    email_addresses: tuple[EmailAddress, ...] = ()
    phone_numbers: tuple[PhoneNumber, ...] = ()
    postal_addresses: tuple[PostalAddress, ...] = ()
    custom_fields: Mapping[str, str] = field(default_factory=dict)

    def get(self, key: str) -> str | None:
        """The value of one person key (primary email, phone and address), or None."""
        if key in NAME_KEYS:
            return getattr(self, key)  # type: ignore[no-any-return]
        if key in EMAIL_KEYS:
            email = self.email_addresses[0] if self.email_addresses else None
            return None if email is None else (email.address if key == "email" else email.status)
        if key in PHONE_KEYS:
            phone = self.phone_numbers[0] if self.phone_numbers else None
            return None if phone is None else (phone.number if key == "phone" else phone.status)
        if key in ADDRESS_KEYS:
            address = self.postal_addresses[0] if self.postal_addresses else None
            if address is None:
                return None
            if key in ("street", "street2"):
                index = 0 if key == "street" else 1
                return address.address_lines[index] if len(address.address_lines) > index else None
            return getattr(address, key)  # type: ignore[no-any-return]
        if key.startswith(CUSTOM_PREFIX):
            return self.custom_fields.get(key[len(CUSTOM_PREFIX):])
        raise KeyError(key)

    def without_statuses(self) -> Person:
        """The same person with no email or phone status: what a page may not decide."""
        return replace(
            self,
            email_addresses=tuple(replace(e, status=None) for e in self.email_addresses),
            phone_numbers=tuple(replace(p, status=None) for p in self.phone_numbers),
        )

    def to_osdi(self) -> dict[str, Any]:
        """The OSDI `person` object (only what is set)."""
        out: dict[str, Any] = {}
        for key in NAME_KEYS:
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.email_addresses:
            out["email_addresses"] = [_drop_none({"address": e.address, "status": e.status})
                                      for e in self.email_addresses]
        if self.phone_numbers:
            out["phone_numbers"] = [_drop_none({"number": p.number, "number_type": p.number_type,
                                                "status": p.status}) for p in self.phone_numbers]
        if self.postal_addresses:
            out["postal_addresses"] = [
                _drop_none({"address_lines": list(a.address_lines) or None, "locality": a.locality,
                            "region": a.region, "postal_code": a.postal_code, "country": a.country})
                for a in self.postal_addresses
            ]
        if self.custom_fields:
            out["custom_fields"] = dict(self.custom_fields)
        return out

    @classmethod
    def from_keys(cls, flat: Mapping[str, str | None]) -> Person:
        """A person from {person key: text} (the inverse of `get` for the primary items)."""
        def text(key: str) -> str | None:
            value = flat.get(key)
            return value if value not in (None, "") else None

        email, phone = text("email"), text("phone")
        lines = tuple(line for line in (text("street"), text("street2")) if line)
        address = PostalAddress(lines, text("locality"), text("region"), text("postal_code"), text("country"))
        custom = {k[len(CUSTOM_PREFIX):]: v for k, v in flat.items()
                  if k.startswith(CUSTOM_PREFIX) and v not in (None, "")}
        return cls(
            given_name=text("given_name"),
            family_name=text("family_name"),
            email_addresses=(EmailAddress(email, text("email_status")),) if email else (),
            phone_numbers=(PhoneNumber(phone, text("phone_status")),) if phone else (),
            postal_addresses=(address,) if address != PostalAddress() else (),
            custom_fields=custom,  # type: ignore[arg-type]
        )


def _drop_none(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if v is not None}


def person_key_ok(key: str) -> bool:
    """Whether `key` is something a mapping can map: a person key, an action key, or custom.<key>."""
    return key in PERSON_KEYS or key in ACTION_KEYS or (key.startswith(CUSTOM_PREFIX) and len(key) > len(CUSTOM_PREFIX))


def osdi_path(key: str) -> str:
    """Where a person key sits in an OSDI helper body, for messages that help a developer find it."""
    if key.startswith(CUSTOM_PREFIX):
        name = key[len(CUSTOM_PREFIX):]
        return f"person.custom_fields.{name}" if IDENTIFIER.match(name) else f'person.custom_fields["{name}"]'
    return PATHS[key]


@dataclass(frozen=True)
class PersonMapping:
    """Which of a form's fields holds which person key; `custom` names the form's field for any other custom field.

    `custom` is a pattern with `{key}`: "custom[{key}]" (Action Network), "{key}" (a custom field is the
    form's field of the same name), or None (the form takes no custom fields). A form's own schema drops
    names it does not have, so a pattern may name fields the form lacks.
    """

    fields: Mapping[str, str] = field(default_factory=dict)
    custom: str | None = None

    def __post_init__(self) -> None:
        for key in self.fields:
            if not person_key_ok(key):
                raise MappingError(f"{key!r} is not a person key (one of {', '.join(PERSON_KEYS + ACTION_KEYS)}, "
                                   "or custom.<key>)")
        names = list(self.fields.values())
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise MappingError(f"field(s) {', '.join(map(repr, doubled))} mapped from more than one person key")
        if self.custom is not None and self.custom.count("{key}") != 1:
            raise MappingError(f"custom pattern {self.custom!r} must hold {{key}} once")

    def field_for(self, key: str) -> str | None:
        """The form's field for a person key (custom keys through the pattern), or None."""
        if key in self.fields:
            return self.fields[key]
        if key.startswith(CUSTOM_PREFIX) and self.custom is not None:
            name = self.custom.replace("{key}", key[len(CUSTOM_PREFIX):])
            # A custom field never lands on a field that holds a standard part of the person.
            return None if name in self.fields.values() else name
        return None

    def custom_key(self, name: str) -> str | None:
        """The custom key a form field holds through the pattern (inverse of field_for), or None."""
        if self.custom is None or name in self.fields.values():
            return None
        before, _, after = self.custom.partition("{key}")
        if name.startswith(before) and name.endswith(after) and len(name) > len(before) + len(after):
            return name[len(before):len(name) - len(after)]
        return None

    def paths(self) -> dict[str, str]:
        """{form field: OSDI path} for every explicitly mapped field."""
        return {name: osdi_path(key) for key, name in self.fields.items()}


def from_values(mapping: PersonMapping, values: Mapping[str, Any]) -> Person:
    """A form's validated values -> Person (pure). Lists are joined with ","; a ticked status field is "subscribed"."""
    flat: dict[str, str | None] = {}
    for key, name in mapping.fields.items():
        if name not in values or key in ACTION_KEYS:
            continue
        text = _text(values[name])
        if key in STATUS_KEYS:
            flat[key] = SUBSCRIBED if text.strip().lower() in YES else None
        else:
            flat[key] = text
    for name, value in values.items():
        custom = mapping.custom_key(name)
        if custom is not None and f"{CUSTOM_PREFIX}{custom}" not in flat:
            flat[f"{CUSTOM_PREFIX}{custom}"] = _text(value)
    # A status rides on its email or phone: without the address or number it has nowhere to live.
    return Person.from_keys(flat)


def to_values(mapping: PersonMapping, person: Person) -> dict[str, str | bool]:
    """Person -> a flat body in the form's own field names (pure), for the form's schema to validate.

    A status field gets True for "subscribed" and is left out otherwise: a person who did not subscribe is
    an unticked box, never a ticked one.
    """
    out: dict[str, str | bool] = {}
    for key, name in mapping.fields.items():
        if key in ACTION_KEYS:
            continue
        value = person.get(key)
        if value in (None, ""):
            continue
        assert value is not None
        if key in STATUS_KEYS:
            if value.strip().lower() == SUBSCRIBED:
                out[name] = True
        else:
            out[name] = value
    for custom, value in person.custom_fields.items():
        name = mapping.field_for(f"{CUSTOM_PREFIX}{custom}")
        if name is not None and name not in out and value not in (None, ""):
            out[name] = value
    return out


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(to_text(v) for v in value)
    return to_text(value)


# -- building a form's mapping ------------------------------------------------------------------------------


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


# Common names of each part, for forms whose names are free (an EngageOne data set) and as the default of any
# provider. Matched ignoring case, spaces and punctuation, so `first_name` also finds `FirstName`, `First Name`.
COMMON_NAMES: Mapping[str, tuple[str, ...]] = {
    "given_name": ("given_name", "first_name", "firstname", "first", "fname"),
    "family_name": ("family_name", "last_name", "surname", "last", "lname"),
    "email": ("email", "email_address", "e_mail"),
    "phone": ("phone", "phone_number", "mobile", "mobile_phone", "mobile_number", "telephone", "tel"),
    "street": ("street", "address_line1", "address1", "address_1", "address", "street_address"),
    "street2": ("street2", "address_line2", "address2", "address_2"),
    "locality": ("locality", "city", "town"),
    "region": ("region", "state", "state_province", "province", "county"),
    "postal_code": ("postal_code", "postcode", "zip", "zip_code", "zipcode"),
    "country": ("country", "country_code"),
    "comments": ("comments", "comment"),
}
BY_TYPE: Mapping[str, str] = {"email": "email", "phone": "tel"}


def match_fields(definition: Definition, candidates: Mapping[str, Sequence[str]], custom: str | None = "{key}",
                 by_type: Mapping[str, str] | None = None) -> PersonMapping:
    """A mapping from a definition by field names (pure): the first candidate name the form has wins.

    Names match ignoring case, spaces and punctuation (`Email Address` = `EmailAddress` = `email_address`).
    `by_type` maps a person key to a field type ("email", "tel") for forms whose names match no candidate:
    the form's first field of that type is taken. Each field holds one key at most.
    """
    by_name = {}
    for spec in definition.fields:
        by_name.setdefault(_squash(spec.name), spec.name)
    used: set[str] = set()
    fields_: dict[str, str] = {}
    for key, names in candidates.items():
        for candidate in names:
            found = by_name.get(_squash(candidate))
            if found is not None and found not in used:
                fields_[key] = found
                used.add(found)
                break
    for key, ftype in (by_type or {}).items():
        if key in fields_:
            continue
        spec = next((s for s in definition.fields if s.type == ftype and s.name not in used), None)
        if spec is not None:
            fields_[key] = spec.name
            used.add(spec.name)
    return PersonMapping(fields_, custom)


def apply_overrides(mapping: PersonMapping, overrides: Mapping[str, str], field_names: Iterable[str]) -> PersonMapping:
    """The mapping with `[forms.x.person]` applied (pure): key = field name; "" unmaps the key.

    Raises MappingError for an unknown key or a field the form does not have, so a typo is caught when the
    form's definition is loaded (and by `formrelay check`), not at the first submission.
    """
    if not overrides:
        return mapping
    known = set(field_names)
    fields_ = dict(mapping.fields)
    for key, name in overrides.items():
        if not person_key_ok(key):
            raise MappingError(f"person.{key}: not a person key (one of {', '.join(PERSON_KEYS + ACTION_KEYS)}, "
                               "or custom.<key>)")
        if name == "":
            fields_.pop(key, None)
            continue
        if name not in known:
            raise MappingError(f"person.{key}: the form has no field {name!r}")
        # The field now holds this key only.
        fields_ = {k: v for k, v in fields_.items() if v != name}
        fields_[key] = name
    return PersonMapping(fields_, mapping.custom)


# -- OSDI person documents ----------------------------------------------------------------------------------


def _scalar(value: Any, path: str) -> str | None:
    """An OSDI string value: numbers become text (a ZIP code sent as 62701); objects are a shape error."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise OSDIShapeError(path, Msg("must be a string"))


def _items(person: Mapping[str, Any], name: str) -> list[tuple[int, Mapping[str, Any]]]:
    raw = person.get(name)
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise OSDIShapeError(f"person.{name}", Msg("must be a list of objects"))
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise OSDIShapeError(f"person.{name}[{i}]", Msg("must be an object"))
        out.append((i, item))
    # OSDI marks the primary item with `primary: true`; without one, the first is primary.
    out.sort(key=lambda pair: 0 if pair[1].get("primary") is True else 1)
    return out


def person_from_osdi(doc: Any) -> tuple[Person, dict[str, str]]:
    """An OSDI `person` object -> (Person, {person key: the exact path it was read from}) (pure).

    Raises OSDIShapeError naming the path when the shape is wrong. Unknown keys are ignored, as OSDI asks.
    """
    if not isinstance(doc, Mapping):
        raise OSDIShapeError("person", Msg("must be an object"))
    paths: dict[str, str] = {}
    flat: dict[str, str | None] = {}

    def take(key: str, value: Any, path: str) -> None:
        text = _scalar(value, path)
        if text is not None and text != "":
            flat[key] = text
        paths[key] = path

    for key in NAME_KEYS:
        take(key, doc.get(key), f"person.{key}")
    # Emails and phones have one shape: a value and a status; the first of each fills the form's fields.
    emails, phones = _items(doc, "email_addresses"), _items(doc, "phone_numbers")
    for items, list_key, value_key, key in ((emails, "email_addresses", "address", "email"),
                                            (phones, "phone_numbers", "number", "phone")):
        for rank, (i, item) in enumerate(items):
            path = f"person.{list_key}[{i}]"
            _scalar(item.get(value_key), f"{path}.{value_key}")
            _scalar(item.get("status"), f"{path}.status")
            if rank == 0:
                take(key, item.get(value_key), f"{path}.{value_key}")
                take(f"{key}_status", item.get("status"), f"{path}.status")
    addresses = _items(doc, "postal_addresses")
    for rank, (i, item) in enumerate(addresses):
        path = f"person.postal_addresses[{i}]"
        lines = item.get("address_lines")
        if lines is not None and not isinstance(lines, list):
            raise OSDIShapeError(f"{path}.address_lines", Msg("must be a list of strings"))
        checked = [_scalar(line, f"{path}.address_lines[{n}]") for n, line in enumerate(lines or [])]
        for name in ("locality", "region", "postal_code", "country"):
            _scalar(item.get(name), f"{path}.{name}")
        if rank == 0:
            texts = [t for t in checked if t]
            for n, key in enumerate(("street", "street2")):
                take(key, texts[n] if len(texts) > n else None, f"{path}.address_lines[{n}]")
            if len(texts) > 2:
                # More than two lines: the second field keeps them all, so nothing typed is lost.
                flat["street2"] = ", ".join(texts[1:])
            for name in ("locality", "region", "postal_code", "country"):
                take(name, item.get(name), f"{path}.{name}")
    custom = doc.get("custom_fields")
    if custom is not None:
        if not isinstance(custom, Mapping):
            raise OSDIShapeError("person.custom_fields", Msg("must be an object"))
        for name, value in custom.items():
            key = f"{CUSTOM_PREFIX}{name}"
            take(key, value, osdi_path(key))
    person = Person.from_keys(flat)
    # The model is the whole person: every email and phone is kept, the primary first (mappings use the first).
    return replace(
        person,
        email_addresses=tuple(EmailAddress(str(item["address"]), _opt(item.get("status")))
                              for _, item in emails if _opt(item.get("address"))),
        phone_numbers=tuple(PhoneNumber(str(item["number"]), _opt(item.get("status")), _opt(item.get("number_type")))
                            for _, item in phones if _opt(item.get("number"))),
    ), paths


def _opt(value: Any) -> str | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    return value if isinstance(value, str) and value != "" else None

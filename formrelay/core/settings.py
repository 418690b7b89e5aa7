"""Each setting written once: a dataclass field holds its default, meaning and check; the schema is derived.

A settings dataclass declares every key with `setting(default, "one line of meaning", ...)`. `schema_for(cls)`
reads `dataclasses.fields()` and builds the marshmallow Schema the config loads the TOML table with: each field
gets `load_default` = the dataclass default and `metadata["description"]` = the meaning, and the loaded data
becomes an instance of the dataclass. `rows(schema)` lists a schema's keys for the configuration reference.

Why not marshmallow-dataclass: see docs/libraries-config.md (8.7.1 hands every metadata key to marshmallow 4's
Field constructor, which refuses them). May import: nothing of ours.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from marshmallow import RAISE, Schema, ValidationError, fields, missing, post_load, validate

# A dataclass field that is no TOML key (filled by the loader: a form's slug, its provider's typed options).
NOT_A_KEY = "not_a_key"


class _Required:
    """The default of a key that has none: the config must set it."""

    def __repr__(self) -> str:
        return "required"


REQUIRED = _Required()


class Setting(NamedTuple):
    """One row of the configuration reference."""

    key: str
    type: str
    default: Any  # the value a missing key takes (tuples as lists), REQUIRED, or None
    allowed: str  # the values accepted, in words ("" when the type says it all)
    meaning: str


def setting(default: Any = dataclasses.MISSING, meaning: str = "", *, field: Callable[..., fields.Field] | None = None,
            validate: Any = None, convert: Callable[[Any], Any] | None = None, allowed: str = "",
            default_factory: Any = dataclasses.MISSING, key: str | None = None, kind: str = "",
            table: Callable[[], Schema] | None = None, repr: bool = True) -> Any:
    """A dataclass field that is a config key.

    `field` builds the marshmallow field when the type alone does not say it (a URL, a custom field); it gets
    load_default/required/validate/metadata as keywords. `convert` tidies a loaded value (never None) before
    the dataclass is made; `allowed` says in words what `validate` accepts when its own repr would not;
    `key` is the TOML name when it differs from the attribute's; `kind` names the type in the reference when
    the marshmallow field's class does not (a custom field); `table` gives the schema of a key that may also
    be written as a table, for the reference.
    """
    metadata = {"description": meaning, "field": field, "validate": validate, "convert": convert,
                "allowed": allowed, "key": key, "kind": kind, "table": table}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata, repr=repr)
    return dataclasses.field(default=default, metadata=metadata, repr=repr)


def derived(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field the loader fills from other keys: no TOML key of its own."""
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={NOT_A_KEY: True})
    return dataclasses.field(default=default, metadata={NOT_A_KEY: True})


def url_field(**kwargs: Any) -> fields.Url:
    """An http(s) URL; a host without a dot (localhost, a service name) is fine."""
    return fields.Url(schemes={"http", "https"}, require_tld=False, **kwargs)


def rate_limit_ok(value: str) -> None:
    """A per-client limit such as '10/minute;100/hour'; "" turns it off."""
    from limits import parse_many

    if value == "":
        return
    try:
        items = parse_many(value)
    except ValueError:
        raise ValidationError(f"{value!r} is not a rate limit such as '10/minute;100/hour' "
                              "(a number, '/', and second, minute, hour or day; ';' between several)") from None
    if any(item.amount == 0 for item in items):
        raise ValidationError(f"{value!r} would refuse every submission; to turn this limit off, set it to \"\"")


def rate_ok(value: str, example: str) -> None:
    """A budget such as '4/second' (Action Network's `rate`, ENS's `page_budget`), checked at start-up."""
    from limits import parse

    try:
        item = parse(value)
    except ValueError:
        raise ValidationError(f"{value!r} is not a rate such as {example!r}") from None
    if item.amount == 0:
        raise ValidationError(f"{value!r} allows no calls at all; use at least 1")


def _is_tuple(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple


def _without_none(tp: Any) -> Any:
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


_SIMPLE: dict[Any, Callable[..., fields.Field]] = {
    str: fields.String, int: fields.Integer, float: fields.Float, bool: fields.Boolean,
}


def _field_for(tp: Any, name: str, **kwargs: Any) -> fields.Field:
    tp = _without_none(tp)
    if tp in _SIMPLE:
        return _SIMPLE[tp](**kwargs)
    origin = typing.get_origin(tp)
    if origin is tuple:
        return fields.List(_field_for(typing.get_args(tp)[0], name), **kwargs)
    if origin in (Mapping, dict) or tp in (Mapping, dict):
        args = typing.get_args(tp)
        if args:
            return fields.Dict(keys=_field_for(args[0], name), values=_field_for(args[1], name), **kwargs)
        return fields.Dict(**kwargs)
    if dataclasses.is_dataclass(tp):
        return fields.Nested(schema_for(tp), **kwargs)
    raise TypeError(f"setting {name}: no marshmallow field for {tp!r}; give setting(field=...)")


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory
    if isinstance(f.default, tuple):
        items = list(f.default)
        return lambda: list(items)  # a fresh list, like any TOML array; made a tuple again in make()
    return f.default


def schema_for(cls: type, *, make: Callable[[dict[str, Any]], Any] | None = None, unknown: str = RAISE,
               name: str | None = None) -> type[Schema]:
    """The marshmallow Schema of a settings dataclass: one field per key, loading into an instance of cls.

    `make` builds the result from the loaded keys (by attribute name, tuples made, values converted) when more
    than `cls(**data)` is needed: cross-key checks, derived fields.
    """
    hints = typing.get_type_hints(cls)
    declared: dict[str, fields.Field] = {}
    tuples: list[str] = []
    converters: dict[str, Callable[[Any], Any]] = {}
    renamed: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if meta.get(NOT_A_KEY):
            continue
        kwargs: dict[str, Any] = {"metadata": {"description": meta.get("description", "")}}
        for extra in ("allowed", "kind", "table"):
            if meta.get(extra):
                kwargs["metadata"][extra] = meta[extra]
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs["required"] = True
        else:
            kwargs["load_default"] = _default(f)
        if meta.get("validate") is not None:
            kwargs["validate"] = meta["validate"]
        # A key named like a Schema attribute ("fields") is declared under another name and renamed back in make.
        attribute = f"{f.name}_" if hasattr(Schema, f.name) else f.name
        if meta.get("key") or attribute != f.name:
            kwargs["data_key"] = meta.get("key") or f.name
        if attribute != f.name:
            renamed[attribute] = f.name
        build = meta.get("field")
        declared[attribute] = built = build(**kwargs) if build is not None else _field_for(hints[f.name], f.name,
                                                                                           **kwargs)
        if isinstance(built, fields.Dict) and callable(built.load_default) and built.load_default() == []:
            built.load_default = dict  # a table read into a tuple (e.g. custom fields): empty in the file is {}
        if _is_tuple(_without_none(hints[f.name])):
            tuples.append(f.name)
        if meta.get("convert") is not None:
            converters[f.name] = meta["convert"]

    class Derived(Schema):
        class Meta:
            pass

        @post_load
        def _make(self, data: dict[str, Any], **_: Any) -> Any:
            for declared_as, name in renamed.items():
                if declared_as in data:
                    data[name] = data.pop(declared_as)
            for key in tuples:
                if isinstance(data.get(key), list):
                    data[key] = tuple(data[key])
            for key, convert in converters.items():
                if data.get(key) is not None:
                    data[key] = convert(data[key])
            return make(data) if make is not None else cls(**data)

    Derived.Meta.unknown = unknown  # type: ignore[attr-defined]  # read when from_dict makes the class below
    return Derived.from_dict(declared, name=name or f"{cls.__name__}Schema")


def keys_of(schema: Schema | type[Schema]) -> list[str]:
    """The TOML keys a schema accepts."""
    instance = schema() if isinstance(schema, type) else schema
    return [f.data_key or name for name, f in instance.fields.items()]


def type_of(f: fields.Field) -> str:
    """A field's type in the words of the reference."""
    if f.metadata.get("kind"):
        return str(f.metadata["kind"])
    if isinstance(f, fields.Url):
        return "URL"
    if isinstance(f, fields.String):
        return "string"
    if isinstance(f, fields.Boolean):
        return "boolean"
    if isinstance(f, fields.Integer):
        return "integer"
    if isinstance(f, fields.Float | fields.Number):
        return "number"
    if isinstance(f, fields.List):
        return f"list of {type_of(f.inner)}"
    if isinstance(f, fields.Nested):
        return "table"
    if isinstance(f, fields.Dict):
        values = f.value_field
        return f"table of {type_of(values)}" if values is not None and not isinstance(values, fields.Nested) \
            else "table of tables" if values is not None else "table"
    return "string or table"


def _number(value: Any) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" if n != 1 else f"1 {unit[:-3] + 'y' if unit.endswith('ies') else unit[:-1]}"


def _allowed(validators: Iterable[Any], unit: str) -> str:
    words: list[str] = []
    for v in validators:
        if isinstance(v, validate.OneOf):
            words.append("one of " + ", ".join(repr(c) for c in v.choices))
        elif isinstance(v, validate.Range):
            if v.min is not None and v.max is not None:
                words.append(f"{_number(v.min)} to {_number(v.max)}")
            elif v.min is not None:
                words.append(f"at least {_number(v.min)}")
            elif v.max is not None:
                words.append(f"at most {_number(v.max)}")
        elif isinstance(v, validate.Length):
            if v.equal is not None:
                words.append(f"exactly {_count(v.equal, unit)}")
            elif v.min is not None and v.max is not None:
                words.append(f"{v.min} to {v.max} {unit}")
            elif v.min is not None:
                words.append(f"at least {_count(v.min, unit)}")
            elif v.max is not None:
                words.append(f"at most {_count(v.max, unit)}")
        elif isinstance(v, validate.URL):
            schemes = "/".join(sorted(v.schemes or ()))
            words.append(f"an {schemes} URL" if schemes else "a URL")
        elif isinstance(v, validate.Regexp):
            custom = v.error and v.error != validate.Regexp.default_message
            words.append(v.error if custom else f"matching {v.regex.pattern}")
    return "; ".join(words)


def allowed_of(f: fields.Field) -> str:
    """What a field accepts beyond its type, in words."""
    if f.metadata.get("allowed"):
        return str(f.metadata["allowed"])
    unit = "items" if isinstance(f, fields.List) else "entries" if isinstance(f, fields.Dict) else "characters"
    own = _allowed(f.validators, unit)
    if isinstance(f, fields.List):
        inner = allowed_of(f.inner)
        own = "; ".join(filter(None, [own, f"each {inner}" if inner else ""]))
    return own


def default_of(f: fields.Field) -> Any:
    """The value a missing key takes, as TOML would write it."""
    if f.required:
        return REQUIRED
    value = f.load_default
    if callable(value):
        value = value()
    if isinstance(value, tuple):
        value = list(value)
    if dataclasses.is_dataclass(value):
        value = {}  # a nested table left out: each of its keys takes its own default
    return None if value is missing else value


def rows(schema: Schema | type[Schema]) -> list[Setting]:
    """One reference row per key of a schema."""
    instance = schema() if isinstance(schema, type) else schema
    return [Setting(f.data_key or name, type_of(f), default_of(f), allowed_of(f), f.metadata.get("description", ""))
            for name, f in instance.fields.items()]

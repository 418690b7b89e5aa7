"""core/settings.py: a settings dataclass becomes its schema, each default and meaning written once."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pytest
from marshmallow import EXCLUDE, ValidationError, fields, validate

from formrelay.core.settings import REQUIRED, derived, rows, schema_for, setting, url_field


@dataclass(frozen=True)
class Inner:
    depth: int = setting(1, "how deep", validate=validate.Range(min=1, max=9))


@dataclass(frozen=True, kw_only=True)
class Sample:
    name: str = setting(meaning="a required name", validate=validate.Length(min=1))
    count: int = setting(3, "how many", validate=validate.Range(min=0, max=10))
    ratio: float = setting(0.5, "a share")
    on: bool = setting(False, "a switch")
    url: str | None = setting(None, "where", field=url_field, convert=lambda u: u.rstrip("/"))
    tags: tuple[str, ...] = setting(("a", "b"), "some tags", convert=lambda t: tuple(sorted(t)))
    names: Mapping[str, str] = setting(meaning="a table", default_factory=dict)
    inner: Inner = setting(Inner(), "a nested table")
    fields: tuple[str, ...] = setting((), "named like a Schema's attribute")
    slug: str = derived("")


Schema = schema_for(Sample)


def test_missing_keys_take_the_dataclass_defaults_and_the_result_is_the_dataclass():
    loaded = Schema().load({"name": "x"})
    assert loaded == Sample(name="x", count=3, ratio=0.5, on=False, url=None, tags=("a", "b"), names={},
                            inner=Inner(1), fields=())


def test_given_keys_are_checked_converted_and_typed():
    loaded = Schema().load({"name": "x", "count": 4, "url": "https://h.example/", "tags": ["z", "y"],
                            "names": {"k": "v"}, "inner": {"depth": 2}, "fields": ["f"]})
    assert loaded.url == "https://h.example"
    assert loaded.tags == ("y", "z")
    assert loaded.inner == Inner(2)
    assert loaded.fields == ("f",)
    with pytest.raises(ValidationError) as err:
        Schema().load({"count": 11, "inner": {"depth": 0}, "slug": "derived keys are not keys", "zz": 1})
    assert err.value.messages == {
        "name": ["Missing data for required field."],
        "count": ["Must be greater than or equal to 0 and less than or equal to 10."],
        "inner": {"depth": ["Must be greater than or equal to 1 and less than or equal to 9."]},
        "slug": ["Unknown field."],
        "zz": ["Unknown field."],
    }


def test_a_default_list_is_fresh_on_every_load():
    first = Schema().load({"name": "x"})
    second = Schema().load({"name": "y"})
    assert first.tags == second.tags == ("a", "b")
    assert Schema().fields["tags"].load_default() is not Schema().fields["tags"].load_default()


def test_make_builds_something_else_and_unknown_can_be_excluded():
    loose = schema_for(Sample, make=lambda data: sorted(data), unknown=EXCLUDE, name="Loose")
    assert loose().load({"name": "x", "zz": 1}) == sorted(
        ["name", "count", "ratio", "on", "url", "tags", "names", "inner", "fields"])


def test_rows_carry_key_type_default_allowed_and_meaning():
    by_key = {row.key: row for row in rows(Schema)}
    assert list(by_key) == ["name", "count", "ratio", "on", "url", "tags", "names", "inner", "fields"]
    assert by_key["name"] == ("name", "string", REQUIRED, "at least 1 character", "a required name")
    assert by_key["count"] == ("count", "integer", 3, "0 to 10", "how many")
    assert by_key["ratio"][1:3] == ("number", 0.5)
    assert by_key["url"][1:4] == ("URL", None, "an http/https URL")
    assert by_key["tags"][1:3] == ("list of string", ["a", "b"])
    assert by_key["names"][1:3] == ("table of string", {})
    assert by_key["inner"][1:3] == ("table", {})
    assert all(isinstance(f, fields.Field) and f.metadata["description"] for f in Schema().fields.values())


def test_a_type_without_a_field_must_be_given_one():
    @dataclass(frozen=True)
    class Odd:
        when: complex = setting(0j, "no field for this")

    with pytest.raises(TypeError, match="give setting\\(field=...\\)"):
        schema_for(Odd)

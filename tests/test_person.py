"""The common person model: OSDI documents in and out, each provider's mapping, overrides, and form A -> form B."""
from __future__ import annotations

import copy

import pytest

from formrelay.forms.fields import Definition, FieldSpec
from formrelay.forms.person import (
    MappingError,
    OSDIShapeError,
    Person,
    PersonMapping,
    apply_overrides,
    from_values,
    person_from_osdi,
    to_values,
)
from formrelay.providers import actionnetwork, engageone, ens, ngp
from formrelay.sandbox.ngp import PETITION

# The body the OSDI jQuery plugin posts (facts from its documentation), as in issue 16.
PLUGIN_PERSON = {
    "given_name": "Jane", "family_name": "Doe",
    "email_addresses": [{"address": "jane@example.org", "status": "subscribed"}],
    "postal_addresses": [{"address_lines": ["1 Main St"], "locality": "Springfield", "region": "IL",
                          "postal_code": "62701", "country": "US"}],
    "phone_numbers": [{"number": "12025550123"}],
    "custom_fields": {"member_number": "42"},
}


def an_form(**options):
    return actionnetwork.ANFormSchema().load({"action": "petition", "action_id": "air", **options})


def ngp_definition() -> Definition:
    return ngp.definition_from_ngp(copy.deepcopy(PETITION))


def test_the_plugins_person_is_read_whole_with_the_path_of_every_part():
    person, paths = person_from_osdi(PLUGIN_PERSON)
    assert person.get("given_name") == "Jane" and person.get("family_name") == "Doe"
    assert person.get("email") == "jane@example.org" and person.get("email_status") == "subscribed"
    assert person.get("phone") == "12025550123" and person.get("street") == "1 Main St"
    assert (person.get("locality"), person.get("region"), person.get("postal_code"), person.get("country")) == \
        ("Springfield", "IL", "62701", "US")
    assert person.custom_fields == {"member_number": "42"}
    assert paths["email"] == "person.email_addresses[0].address"
    assert paths["custom.member_number"] == "person.custom_fields.member_number"
    assert person.to_osdi() == PLUGIN_PERSON


def test_the_primary_item_wins_numbers_become_text_and_extra_lines_are_kept():
    person, paths = person_from_osdi({
        "email_addresses": [{"address": "old@example.org"}, {"address": "new@example.org", "primary": True}],
        "postal_addresses": [{"address_lines": ["Flat 2", "1 Main St", "Rear"], "postal_code": 62701}],
    })
    assert person.get("email") == "new@example.org" and paths["email"] == "person.email_addresses[1].address"
    assert [e.address for e in person.email_addresses] == ["new@example.org", "old@example.org"]
    assert person.get("postal_code") == "62701"
    assert person.get("street") == "Flat 2" and person.get("street2") == "1 Main St, Rear"


@pytest.mark.parametrize(("doc", "path"), [
    ([], "person"),
    ({"email_addresses": {"address": "a@example.org"}}, "person.email_addresses"),
    ({"email_addresses": ["a@example.org"]}, "person.email_addresses[0]"),
    ({"given_name": {"first": "Jane"}}, "person.given_name"),
    ({"phone_numbers": [{"number": ["1"]}]}, "person.phone_numbers[0].number"),
    ({"postal_addresses": [{"address_lines": "1 Main St"}]}, "person.postal_addresses[0].address_lines"),
    ({"custom_fields": ["x"]}, "person.custom_fields"),
    ({"custom_fields": {"a b": {"x": 1}}}, 'person.custom_fields["a b"]'),
])
def test_a_wrong_shape_names_its_path(doc, path):
    with pytest.raises(OSDIShapeError) as caught:
        person_from_osdi(doc)
    assert caught.value.path == path


def test_action_network_maps_natively_with_consent_boxes_as_statuses():
    mapping = actionnetwork.person_mapping_for(an_form(email_consent_field="updates", custom_fields={"member_number": {}}))
    person, _ = person_from_osdi(PLUGIN_PERSON)
    values = to_values(mapping, person)
    assert values["email_address"] == "jane@example.org" and values["updates"] is True
    assert values["custom[member_number]"] == "42" and "comments" not in values
    # Without "subscribed" the consent box stays unticked: no status is ever invented.
    assert "updates" not in to_values(mapping, person.without_statuses())
    back = from_values(mapping, {**values, "updates": True})
    assert back.get("email_status") == "subscribed" and back.custom_fields == {"member_number": "42"}
    assert from_values(mapping, {**values, "updates": False}).get("email_status") is None


def test_ngp_maps_from_the_definitions_element_names():
    mapping = ngp.person_mapping_for(ngp_definition())
    assert mapping.fields == {
        "given_name": "FirstName", "family_name": "LastName", "email": "EmailAddress", "phone": "Phone",
        "street": "AddressLine1", "locality": "City", "region": "StateProvince", "postal_code": "PostalCode",
        "comments": "Comments",
    }
    person, _ = person_from_osdi({**PLUGIN_PERSON, "custom_fields": {"SmsOptIn": "on", "FirstName": "Mallory"}})
    values = to_values(mapping, person)
    assert values["FirstName"] == "Jane" and values["SmsOptIn"] == "on"  # a custom field never beats a mapped one


def test_ngp_forms_with_other_names_are_matched_by_type():
    definition = Definition("t", (FieldSpec("Courriel", "Courriel", type="email"),
                                  FieldSpec("Portable", "Portable", type="tel")))
    assert ngp.person_mapping_for(definition).fields == {"email": "Courriel", "phone": "Portable"}


def test_ens_maps_by_the_accounts_field_property_then_by_name():
    definition = Definition("t", tuple(FieldSpec(n, n) for n in ("Email Address", "First Name", "ZIP", "Opt-in")),
                            extra={"properties": {"Email Address": "emailAddress", "First Name": "firstName",
                                                  "ZIP": "postcode"}})
    mapping = ens.person_mapping_for(definition)
    assert mapping.fields == {"given_name": "First Name", "email": "Email Address", "postal_code": "ZIP"}
    person, _ = person_from_osdi({**PLUGIN_PERSON, "custom_fields": {"Opt-in": "Y"}})
    assert to_values(mapping, person) == {"First Name": "Jane", "Email Address": "jane@example.org",
                                          "ZIP": "62701", "Opt-in": "Y"}


def test_engageone_maps_from_the_data_set_keys():
    fields = ("email", "first_name", "surname", "postcode", "mobile", "topic")
    mapping = engageone.person_mapping_for(Definition("t", tuple(FieldSpec(n, n) for n in fields)))
    assert mapping.fields == {"given_name": "first_name", "family_name": "surname", "email": "email",
                              "phone": "mobile", "postal_code": "postcode"}


def test_overrides_reassign_unmap_and_refuse_typos():
    mapping = ngp.person_mapping_for(ngp_definition())
    names = [spec.name for spec in ngp_definition().fields]
    changed = apply_overrides(mapping, {"email_status": "SmsOptIn", "comments": "", "custom.why": "Comments"}, names)
    assert changed.fields["email_status"] == "SmsOptIn" and "comments" not in changed.fields
    assert changed.fields["custom.why"] == "Comments"
    moved = apply_overrides(mapping, {"phone": "City"}, names)
    assert moved.fields["phone"] == "City" and "locality" not in moved.fields  # one key per field
    with pytest.raises(MappingError, match="person.phone: the form has no field 'Mobile'"):
        apply_overrides(mapping, {"phone": "Mobile"}, names)
    with pytest.raises(MappingError, match="person.zip: not a person key"):
        apply_overrides(mapping, {"zip": "PostalCode"}, names)
    with pytest.raises(MappingError, match="more than one person key"):
        PersonMapping({"email": "X", "phone": "X"})


def test_a_submission_for_form_a_is_carried_to_form_b_of_another_provider():
    """Issue 18's one line: values_b = to_values(mapping_b, from_values(mapping_a, values_a))."""
    mapping_a = ngp.person_mapping_for(ngp_definition())
    mapping_b = actionnetwork.person_mapping_for(an_form(custom_fields={"SmsOptIn": {}}))
    values_a = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "Phone": "2025550123",
                "PostalCode": "20009", "StateProvince": "DC", "SmsOptIn": True, "Comments": "Clean air"}
    values_b = to_values(mapping_b, from_values(mapping_a, values_a))
    assert values_b == {"given_name": "Ann", "family_name": "Lee", "email_address": "ann@example.org",
                        "phone_number": "2025550123", "region": "DC", "postal_code": "20009",
                        "custom[SmsOptIn]": "true"}
    # and back again: nothing of the person is lost on the way
    again = to_values(mapping_a, from_values(mapping_b, values_b))
    assert {k: again[k] for k in ("FirstName", "LastName", "EmailAddress", "Phone", "PostalCode", "StateProvince")} \
        == {k: values_a[k] for k in ("FirstName", "LastName", "EmailAddress", "Phone", "PostalCode", "StateProvince")}


def test_an_empty_person_maps_to_nothing():
    assert to_values(actionnetwork.person_mapping_for(an_form()), Person()) == {}
    assert from_values(PersonMapping({"email": "e"}), {}) == Person()

"""Attribution across pages: touches bounded and validated, the credited one reaching each CRM's source fields."""
from __future__ import annotations

import json
from urllib.parse import parse_qs

import pytest
import responses
from marshmallow import ValidationError

from formrelay import create_app
from formrelay.core.config import ConfigError, parse_config
from formrelay.forms import attribution
from formrelay.forms.fields import Definition, FieldSpec
from formrelay.forms.submission import split_controls
from formrelay.providers.ens import ENSFormSchema
from formrelay.providers.ens import build_payload as ens_payload
from formrelay.webhooks import event_body
from tests.conftest import base_config

AN_BASE = "https://an.test/api/v2"
AN_URL = f"{AN_BASE}/petitions/p-1/signatures"
PERSON = {"given_name": "Ann", "email_address": "ann@example.org"}
FIRST = "source=em-1206&utm_medium=email"
LAST = "source=fb-77&utm_source=facebook"


# -- touches, pure ----------------------------------------------------------------------------------------

def test_a_touch_keeps_checked_names_and_bounded_values_and_nothing_personal():
    text = ("source=+em-1206+&bad%20name=x&utm_medium=&referrer=ann%40example.org&refcode=" + "r" * 300
            + "&source=second&ea.tracking.id=x1" + "".join(f"&p{i}=v" for i in range(40)))
    touch = attribution.parse(text)
    assert touch["source"] == "em-1206"  # trimmed, the first value wins
    assert "bad name" not in touch and "utm_medium" not in touch  # a name that is no parameter; an empty value
    assert "referrer" not in touch  # holds '@': looks like an address, never kept
    assert touch["refcode"] == "r" * attribution.TOUCH_VALUE_MAX and touch["ea.tracking.id"] == "x1"
    assert len(touch) == attribution.TOUCH_MAX_PARAMS
    assert attribution.parse("source=" + "a" * 20_000) == {"source": "a" * attribution.TOUCH_VALUE_MAX}
    assert attribution.parse(None) == {} and attribution.clean("a@b=c&x=%ZZ") == "x=%25ZZ"


def test_the_form_page_own_values_stay_when_the_browser_remembered_no_touch():
    _, _, context = split_controls({"source": "page", "utm_source": "u", "email": "a@b.org"}, {"email"}, "first")
    assert context == {"source": "page", "utm_source": "u"}


@pytest.mark.parametrize(("credit", "source", "medium"), [("first", "em-1206", "email"), ("last", "fb-77", None)])
def test_the_credited_touch_replaces_the_page_own_attribution(credit, source, medium):
    body = {"source": "page-own", "utm_medium": "page-medium", "_first_touch": FIRST, "_last_touch": LAST,
            "_page_url": "https://www.example.org/sign?ms=x"}
    values, controls, context = split_controls(body, set(), credit)
    assert values == {} and controls == {}
    assert context["source"] == source and context.get("utm_medium") == medium  # nothing of the page's mixed in
    assert context[attribution.CREDITED] == credit
    assert context["first_touch"] == FIRST and context["last_touch"] == LAST  # both kept for mappings and webhooks


def test_a_field_of_the_form_named_like_a_parameter_stays_the_person_s_value():
    values, _, context = split_controls({"source": "typed", "_last_touch": "source=fb-77"}, {"source"}, "last")
    assert values == {"source": "typed"} and context["source"] == "fb-77"


def test_lookup_names_either_touch_the_credited_one_or_the_page():
    context = {"first_touch": FIRST + "&ea.tracking.id=T1", "last_touch": LAST, attribution.CREDITED: "last",
               "page_url": "https://www.example.org/p?midqs=M-7&utm_medium=page", "source": "fb-77"}
    assert attribution.lookup(context, "first.source") == "em-1206"
    assert attribution.lookup(context, "last.utm_source") == "facebook"
    assert attribution.lookup(context, "first.ea.tracking.id") == "T1"
    assert attribution.lookup(context, "source") == "fb-77"
    assert attribution.lookup(context, "utm_medium") == ""  # an attribution parameter the credited touch lacks
    assert attribution.lookup(context, "midqs") == "M-7"  # any other parameter still comes from the page
    assert attribution.lookup({"page_url": "javascript:x?ms=1"}, "ms") == ""
    assert attribution.lookup({"page_url": "https://a.org/"}, "page_url") == ""


# -- config ---------------------------------------------------------------------------------------------

def test_attribution_is_first_or_last_and_defaults_to_last():
    raw = base_config()
    assert parse_config(raw, env={}).forms["join"].attribution == "last"
    raw["forms"]["join"]["attribution"] = "first"
    assert parse_config(raw, env={}).forms["join"].attribution == "first"
    raw["forms"]["join"]["attribution"] = "middle"
    with pytest.raises(ConfigError, match="forms.join.attribution"):
        parse_config(raw, env={})


# -- each CRM's own source fields -------------------------------------------------------------------------

def an_app(**form):
    return create_app({
        "relay": {"rate_limit": ""},
        "providers": {"actionnetwork": {"base_url": AN_BASE, "rate": "100/second"}},
        "forms": {"act": {"provider": "actionnetwork", "action": "petition", "action_id": "p-1", **form}},
        "queue": {"embedded_worker": False},
    })


@pytest.fixture
def an():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.post(AN_URL, json={})
        yield rsps


@pytest.mark.parametrize(("form", "expected"), [
    ({"attribution": "first"}, {"source": "em-1206"}),
    ({}, {"source": "fb-77"}),
])
def test_action_network_referrer_data_is_the_credited_touch(an, form, expected):
    client = an_app(**form).test_client()
    client.post("/v1/forms/act", json={**PERSON, "source": "page", "_first_touch": FIRST, "_last_touch": LAST})
    client.post("/v1/forms/act", json={**PERSON, "source": "page"})  # no snippet memory: the page's own
    with_touches, without = (json.loads(c.request.body) for c in an.calls)
    assert with_touches["referrer_data"] == expected
    assert without["referrer_data"] == {"source": "page"}


def test_a_touch_holding_a_card_number_never_reaches_the_crm(an):
    an_app().test_client().post("/v1/forms/act", json={**PERSON, "_last_touch": "source=4111111111111111"})
    (call,) = an.calls
    assert b"4111" not in call.request.body and "referrer_data" not in json.loads(call.request.body)


ENS_FORM = {"page_id": 1, "fields": {"A": {}}}
ENS_DEFINITION = Definition("t", (FieldSpec("A", "A"),))


def test_ens_tracking_id_comes_from_the_credited_touch_else_the_config():
    form = ENSFormSchema().load({**ENS_FORM, "tracking_id": "config-id"})
    touched = {"first_touch": "ea.tracking.id=first-id", "last_touch": "ea.tracking.id=last-id",
               attribution.CREDITED: "first"}
    assert ens_payload(form, ENS_DEFINITION, {"A": "x"}, touched)["trackingId"] == "first-id"
    assert ens_payload(form, ENS_DEFINITION, {"A": "x"}, {})["trackingId"] == "config-id"
    page = {"page_url": "https://ea.example.org/page/1?ea.tracking.id=page-id"}
    assert ens_payload(form, ENS_DEFINITION, {"A": "x"}, page)["trackingId"] == "page-id"
    own = ENSFormSchema().load({**ENS_FORM, "tracking_id": "config-id", "tracking_from_page": "utm_campaign"})
    assert ens_payload(own, ENS_DEFINITION, {"A": "x"}, {**touched, "first_touch": "utm_campaign=spring"}
                       )["trackingId"] == "spring"
    off = ENSFormSchema().load({**ENS_FORM, "tracking_from_page": ""})
    assert "trackingId" not in ens_payload(off, ENS_DEFINITION, {"A": "x"}, touched)


def test_ens_txn_mappings_name_either_touch():
    form = ENSFormSchema().load({**ENS_FORM, "txn_from_page": {
        "txn1": "utm_source", "txn2": "first.source", "txn3": "last.source", "txn4": "first.refcode"}})
    context = {"first_touch": FIRST, "last_touch": LAST, attribution.CREDITED: "last", "utm_source": "facebook"}
    body = ens_payload(form, ENS_DEFINITION, {"A": "x"}, context)
    assert (body["txn1"], body["txn2"], body["txn3"]) == ("facebook", "em-1206", "fb-77") and "txn4" not in body
    with pytest.raises(ValidationError, match="txn_from_page"):
        ENSFormSchema().load({**ENS_FORM, "txn_from_page": {"txn1": "first.gclid"}})


def test_ngp_hidden_query_string_elements_take_the_credited_touch(mocked):
    from formrelay.sandbox.ngp import SIGNUP
    from tests.conftest import NGP_BASE, NGP_SUCCESS

    raw = base_config()
    raw["forms"] = {"signup": {"provider": "ngp", "form_id": "demo-signup", "attribution": "first"}}
    raw["queue"] = {"embedded_worker": False}
    mocked.get(f"{NGP_BASE}/forms/demo-signup", json=SIGNUP)
    mocked.post(f"{NGP_BASE}/forms/demo-signup", json=NGP_SUCCESS)
    create_app(raw).test_client().post("/v1/forms/signup", json={
        "FirstName": "Ann", "EmailAddress": "ann@example.org", "PostalCode": "20009",
        "_page_url": "https://www.example.org/join?ms=page-ms&midqs=M-77",
        "_first_touch": "ms=email-0412", "_last_touch": "ms=page-ms"})
    (call,) = [c for c in mocked.calls if c.request.method == "POST"]
    sent = parse_qs(call.request.body)
    assert sent["MarketSource"] == ["email-0412"] and sent["MailingId"] == ["M-77"]


# -- webhooks -------------------------------------------------------------------------------------------

def test_every_webhook_event_carries_both_touches_even_without_personal_data():
    context = {"first_touch": FIRST, "last_touch": LAST, attribution.CREDITED: "first", "source": "em-1206",
               "page_url": "https://www.example.org/sign?email=ann@example.org"}
    submission = {"id": "s1", "values": {"email_address": "ann@example.org"},
                  "context": attribution.without_personal_data(context)}
    data = json.loads(event_body("delivered", 0, "act", submission, {"status": "delivered"}, False))["data"]
    assert data["attribution"] == {"credited": "first", "first": {"source": "em-1206", "utm_medium": "email"},
                                   "last": {"source": "fb-77", "utm_source": "facebook"}}
    assert "fields" not in data and "context" not in data and "@" not in json.dumps(data)
    plain = json.loads(event_body("delivered", 0, "act", {"id": "s2", "context": {"source": "x"}}, {}, True))["data"]
    assert "attribution" not in plain and plain["context"] == {"source": "x"}

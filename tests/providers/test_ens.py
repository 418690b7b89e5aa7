"""ENS: token caching and re-authentication, schema from the account, payload, answers, budget, origin source."""
from __future__ import annotations

import json
import logging
import threading
import time

import pytest
import responses
from marshmallow import ValidationError

from formrelay import create_app
from formrelay.core.errors import DefinitionError, TryLater
from formrelay.forms.fields import Definition, FieldSpec
from formrelay.providers.ens import ENSFormSchema, build_payload, read_answer
from formrelay.sandbox.ens import FIELDS, PAGES, QUESTION_DETAIL, QUESTIONS

BASE = "https://ens.test/ens/service"
TOKEN = "ens-api-token-7f3e9b2a"
VALID = {"First Name": "Ann", "Email Address": "ann@example.org", "Postcode": "SW1A 1AA"}


def ens_config(**form):
    return {
        "relay": {"rate_limit": ""},
        "providers": {"ens": {"base_url": BASE, "api_token": TOKEN}},
        "forms": {"mp": {"provider": "ens", "page_id": 12345, "fields": {
            "First Name": {"required": True}, "Email Address": {"required": True, "label": "Email"},
            "Postcode": {}, "Opt-in": {}, "Volunteer": {}, "Why": {}, "Date of Birth": {}}, **form}},
        "queue": {"embedded_worker": False},
    }


class FakeENS:
    """ENS at the HTTP layer: counts authenticate calls and hands out numbered tokens."""

    def __init__(self, rsps: responses.RequestsMock) -> None:
        self.rsps = rsps
        self.auth_calls = 0
        self.auth_lock = threading.Lock()
        self.auth_delay = 0.0
        rsps.add_callback(responses.POST, f"{BASE}/authenticate", callback=self.authenticate)
        rsps.get(f"{BASE}/supporter/fields", json=FIELDS)
        rsps.get(f"{BASE}/supporter/questions", json=QUESTIONS)
        for qid, detail in QUESTION_DETAIL.items():
            rsps.get(f"{BASE}/supporter/questions/{qid}", json=detail)
        rsps.get(f"{BASE}/page/12345", json=PAGES[12345])

    def authenticate(self, request):
        time.sleep(self.auth_delay)
        with self.auth_lock:
            self.auth_calls += 1
            n = self.auth_calls
        if request.body not in (TOKEN, TOKEN.encode()):
            return 401, {}, json.dumps({"message": f"Invalid api key [{request.body!s}]"})
        return 200, {}, json.dumps({"ens-auth-token": f"session-token-{n}-abcdef", "expires": 3_600_000})

    def process(self, *answers):
        """Queue answers for page processing, each (status, body)."""
        queue = list(answers)

        def callback(request):
            status, body = queue.pop(0) if len(queue) > 1 else queue[0]
            return status, {}, body if isinstance(body, str) else json.dumps(body)

        self.rsps.add_callback(responses.POST, f"{BASE}/page/12345/process", callback=callback)


@pytest.fixture
def ens():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield FakeENS(rsps)


@pytest.fixture
def app(ens, tmp_path):
    raw = ens_config()
    raw["queue"]["path"] = str(tmp_path / "q.sqlite3")
    return create_app(raw)


def process_bodies(ens):
    return [json.loads(c.request.body) for c in ens.rsps.calls if c.request.url.endswith("/process")]


SUCCESS = (200, {"status": "SUCCESS", "id": 1, "supporterId": 77, "supporterEmailAddress": "ann@example.org"})


# -- schema from the account ---------------------------------------------------------------------

def test_description_uses_account_fields_questions_and_known_formats(app):
    fields = {f["name"]: f for f in app.test_client().get("/v1/forms/mp").get_json()["fields"]}
    assert fields["Email Address"] == {"name": "Email Address", "label": "Email", "type": "email",
                                       "required": True, "max_length": 500}
    assert fields["Postcode"]["max_length"] == 200 and fields["Date of Birth"]["type"] == "date"
    assert fields["Opt-in"]["type"] == "checkbox" and fields["Opt-in"]["label"] == "Keep me updated by email"
    assert fields["Volunteer"]["type"] == "radio"
    assert [o["value"] for o in fields["Volunteer"]["options"]] == ["Y", "P", "N"]
    assert fields["Why"]["type"] == "textarea" and fields["Why"]["max_length"] == 2000


def test_formats_are_validated(app):
    answer = app.test_client().post("/v1/forms/mp", json={
        **VALID, "Email Address": "nope", "Date of Birth": "12/01/1990", "Volunteer": "Maybe", "Why": "x" * 2001})
    assert answer.status_code == 422
    assert set(answer.get_json()["errors"]) == {"Email Address", "Date of Birth", "Volunteer", "Why"}


def test_a_name_the_account_lacks_is_a_config_error(ens):
    raw = ens_config()
    raw["forms"]["mp"]["fields"]["Shoe Size"] = {}
    relay = create_app(raw).extensions["formrelay"]
    with pytest.raises(DefinitionError, match="Shoe Size"):
        relay.form("mp").definition
    assert create_app(raw).test_client().get("/v1/forms/mp").status_code == 503


def test_form_config_is_validated():
    with pytest.raises(ValidationError, match="fields"):
        ENSFormSchema().load({"page_id": 1})
    with pytest.raises(ValidationError, match="campaign_references"):
        ENSFormSchema().load({"page_id": 1, "fields": {"A": {}}, "campaign_references": ["1"] * 6})


# -- authentication --------------------------------------------------------------------------------

def test_a_thousand_submissions_cost_one_authenticate(ens):
    raw = ens_config()
    raw["providers"]["ens"]["page_budget"] = "2000/5minute"
    raw["relay"]["global_rate_limit"] = ""
    ens.process(SUCCESS)
    client = create_app(raw).test_client()
    for i in range(1000):
        assert client.post("/v1/forms/mp", json={**VALID, "Email Address": f"p{i}@example.org"}).status_code == 200
    assert ens.auth_calls == 1
    calls = [c for c in ens.rsps.calls if c.request.url.endswith("/authenticate")]
    assert calls[0].request.body in (TOKEN, TOKEN.encode())  # the raw token, no JSON quotes
    assert all(c.request.headers["ens-auth-token"] == "session-token-1-abcdef"
               for c in ens.rsps.calls if c.request.url.endswith("/process"))


def test_concurrent_first_use_authenticates_once(ens):
    ens.auth_delay = 0.2
    provider = create_app(ens_config()).extensions["formrelay"].providers["ens"]
    tokens = []
    threads = [threading.Thread(target=lambda: tokens.append(provider.tokens.get())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ens.auth_calls == 1 and len(set(tokens)) == 1


def test_the_token_is_renewed_before_it_expires(app, ens, monkeypatch):
    ens.process(SUCCESS)
    client = app.test_client()
    client.post("/v1/forms/mp", json=VALID)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)  # an hour later, here and in the shared store
    client.post("/v1/forms/mp", json=VALID)
    assert ens.auth_calls == 2


def test_invalid_session_token_reauthenticates_and_retries_once(app, ens):
    ens.process((401, {"message": "Invalid ens-auth-token"}), SUCCESS)
    answer = app.test_client().post("/v1/forms/mp", json=VALID)
    assert answer.status_code == 200 and ens.auth_calls == 2 and len(process_bodies(ens)) == 2


def test_usage_limit_is_not_retried_and_the_submission_is_kept(app, ens):
    ens.process((401, {"message": "The user with username [api] has exceeded its api limit."}))
    answer = app.test_client().post("/v1/forms/mp", json=VALID)
    assert answer.status_code == 202 and ens.auth_calls == 1 and len(process_bodies(ens)) == 1
    status = app.extensions["formrelay"].providers["ens"].status()
    assert status["state"] == "failing" and "limit" in status["problem"]


def test_a_bad_key_is_reported_without_ever_showing_it(ens, caplog, tmp_path):
    raw = ens_config()
    raw["providers"]["ens"]["api_token"] = "wrong-key-0d9a8c7b"
    raw["queue"]["path"] = str(tmp_path / "q.sqlite3")
    app = create_app(raw)
    with caplog.at_level(logging.DEBUG):
        described = app.test_client().get("/v1/forms/mp")
    assert described.status_code == 503
    assert "wrong-key-0d9a8c7b" not in described.get_data(as_text=True) + str(described.headers)
    assert "wrong-key-0d9a8c7b" not in caplog.text and "refused" in caplog.text
    problems = app.extensions["formrelay"].providers["ens"].check(app.extensions["formrelay"].form("mp").config)
    assert problems and "wrong-key" not in problems[0]


# -- answers ---------------------------------------------------------------------------------------

def test_error_status_is_rejected_with_a_public_message(app, ens):
    ens.process((200, {"status": "ERROR", "error": "Gateway rule 12 blocked supporter 991"}))
    answer = app.test_client().post("/v1/forms/mp", json=VALID)
    assert answer.status_code == 502
    assert answer.get_json()["status"] == "rejected" and "991" not in answer.get_json()["message"]


def test_error_naming_a_field_is_422_on_it(app, ens):
    ens.process((200, {"status": "ERROR", "error": "Field Postcode is not valid"}))
    answer = app.test_client().post("/v1/forms/mp", json=VALID)
    assert answer.status_code == 422 and answer.get_json()["errors"] == {"Postcode": ["Field Postcode is not valid"]}


@pytest.mark.parametrize("answer", [(503, "<html>busy</html>"), (500, {}), (429, {}), (200, "<html>maintenance</html>"),
                                    (200, {"status": "WHAT"})])
def test_anything_unexpected_is_try_later_and_queued(app, ens, answer):
    ens.process(answer)
    assert app.test_client().post("/v1/forms/mp", json=VALID).status_code == 202


def test_read_answer_needs_both_200_and_success():
    definition = Definition("t", (FieldSpec("Postcode", "Postcode"),))
    assert read_answer(200, {"status": "SUCCESS", "supporterId": 5}, definition).reference == "5"
    with pytest.raises(TryLater):
        read_answer(201, {"status": "SUCCESS"}, definition)


# -- payload ---------------------------------------------------------------------------------------

def test_payload_carries_supporter_questions_config_values_and_utm(ens):
    raw = ens_config(appeal_code="AP1", tracking_id="TR9", campaign_references=["ref-a", "ref-b"],
                     txn_from_page={"txn1": "utm_source", "txn5": "utm_term", "txn2": "utm_medium"},
                     suppress_auto_responder=True, demo=True, locale="en-GB",
                     contact_message={"subject": "Act", "message": "Dear MP"})
    app = create_app(raw)
    ens.process(SUCCESS)
    app.test_client().post("/v1/forms/mp", json={
        **VALID, "Opt-in": "on", "Volunteer": "P", "Why": "Asthma", "utm_source": "mail", "utm_term": "air",
        "txn6": "from-browser", "appealCode": "HACK"})
    (body,) = process_bodies(ens)
    assert body["supporter"] == {"First Name": "Ann", "Email Address": "ann@example.org", "Postcode": "SW1A 1AA",
                                 "questions": {"Opt-in": "Y", "Volunteer": "P", "Why": "Asthma"}}
    assert body["txn1"] == "mail" and body["txn5"] == "air" and "txn2" not in body
    assert body["txn6"] == "ref-a" and body["txn7"] == "ref-b"
    assert body["appealCode"] == "AP1" and body["trackingId"] == "TR9" and body["locale"] == "en-GB"
    assert body["demo"] is True and body["suppressAutoResponder"] is True
    assert body["contactMessage"] == {"subject": "Act", "message": "Dear MP"}


def test_editable_contact_message_comes_from_the_supporter(ens):
    app = create_app(ens_config(contact_message={"subject": "Act", "message": "Dear MP", "editable": True}))
    ens.process(SUCCESS)
    app.test_client().post("/v1/forms/mp", json={**VALID, "contact_message": "My own words"})
    body = process_bodies(ens)[0]
    assert body["contactMessage"] == {"subject": "Act", "message": "My own words"}
    assert "contact_message" not in body["supporter"]


def test_docs_opt_ins_only_ever_send_y_so_an_unticked_box_is_left_out():
    """EN's REST services page only ever sends opt-in questions as "Y"; "N" for an existing supporter can opt them
    out. An unticked box (even an explicit false) is left out unless the form asks for `unticked_opt_ins = "N"`."""
    definition = Definition("t", (FieldSpec("Opt-in", "Opt", type="checkbox"),), extra={"questions": {"Opt-in": "OPT"}})
    form = ENSFormSchema().load({"page_id": 1, "fields": {"Opt-in": {}}})
    assert build_payload(form, definition, {"Opt-in": False}, {})["supporter"] == {}
    assert build_payload(form, definition, {"Opt-in": True}, {})["supporter"] == {"questions": {"Opt-in": "Y"}}
    explicit = ENSFormSchema().load({"page_id": 1, "fields": {"Opt-in": {}}, "unticked_opt_ins": "N"})
    assert build_payload(explicit, definition, {"Opt-in": False}, {})["supporter"] == {"questions": {"Opt-in": "N"}}
    assert build_payload(explicit, definition, {}, {})["supporter"] == {}
    with pytest.raises(ValidationError, match="unticked_opt_ins"):
        ENSFormSchema().load({"page_id": 1, "fields": {"Opt-in": {}}, "unticked_opt_ins": "no"})


@pytest.mark.parametrize("name", ["Credit Card Number", "ccnumber", "ccvv", "ccexpire", "Card CVV"])
def test_card_fields_are_refused_for_ens_forms(app, ens, name):
    answer = app.test_client().post("/v1/forms/mp", json={**VALID, name: "4111111111111111"})
    assert answer.status_code == 422 and name in answer.get_json()["errors"]
    assert process_bodies(ens) == []
    assert app.extensions["formrelay"].store.jobs() == []


# -- origin source and budget ----------------------------------------------------------------------

def test_origin_source_table_form_follows_success_and_its_failure_never_fails_the_submission(ens):
    """The operator-requested table form keeps EN's OpenAPI v6 separate call (/supporter/{id}/originsource)."""
    app = create_app(ens_config(origin_source={"code": "web", "category": "formrelay"}))
    ens.process(SUCCESS)
    ens.rsps.post(f"{BASE}/supporter/77/originsource", json={"status": "SUCCESS"})
    assert app.test_client().post("/v1/forms/mp", json=VALID).status_code == 200
    (call,) = [c for c in ens.rsps.calls if "originsource" in c.request.url]
    assert json.loads(call.request.body) == {"code": "web", "category": "formrelay"}
    ens.rsps.replace(responses.POST, f"{BASE}/supporter/77/originsource", status=500)
    assert app.test_client().post("/v1/forms/mp", json=VALID).status_code == 200


def test_the_page_budget_holds_calls_back(ens, tmp_path):
    raw = ens_config()
    raw["providers"]["ens"]["page_budget"] = "3/5minute"
    raw["queue"]["path"] = str(tmp_path / "q.sqlite3")
    app = create_app(raw)
    ens.process(SUCCESS)
    codes = [app.test_client().post("/v1/forms/mp", json=VALID).status_code for _ in range(5)]
    assert codes == [200, 200, 200, 202, 202]
    assert len(process_bodies(ens)) == 3
    assert len(app.extensions["formrelay"].store.jobs()) == 2


# -- one token for every worker and host that shares the store -----------------------------------------

def workers_sharing(tmp_path, count, store=None):
    """`count` relays as separate gunicorn workers would be: own memory, one queue store."""
    apps = []
    for _ in range(count):
        raw = ens_config()
        if store is None:
            raw["queue"]["path"] = str(tmp_path / "shared.sqlite3")
        else:
            raw["relay"]["redis_url"] = store
            raw["relay"]["rate_limit"] = ""
        apps.append(create_app(raw))
    return apps


@pytest.mark.parametrize("storage", ["sqlite", "redis"])
def test_workers_sharing_a_store_authenticate_once(ens, tmp_path, storage, request):
    store = request.getfixturevalue("redis_url") if storage == "redis" else None
    ens.process(SUCCESS)
    ens.auth_delay = 0.2  # so the workers' first submissions overlap the one authenticate
    apps = workers_sharing(tmp_path, 3, store)
    threads = [threading.Thread(target=lambda a=a: a.test_client().post("/v1/forms/mp", json=VALID)) for a in apps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for a in apps:
        assert a.test_client().post("/v1/forms/mp", json=VALID).status_code == 200
    assert ens.auth_calls == 1
    tokens = {c.request.headers["ens-auth-token"] for c in ens.rsps.calls if c.request.url.endswith("/process")}
    assert tokens == {"session-token-1-abcdef"} and len(process_bodies(ens)) == 6


def test_a_refused_shared_token_is_replaced_once_for_everyone(ens, tmp_path):
    ens.process(SUCCESS)
    first, second = workers_sharing(tmp_path, 2)
    assert first.test_client().post("/v1/forms/mp", json=VALID).status_code == 200
    ens.process((401, {"message": "Invalid ens-auth-token"}), SUCCESS)  # the session ended early upstream
    assert first.test_client().post("/v1/forms/mp", json=VALID).status_code == 200  # re-authenticates
    assert second.test_client().post("/v1/forms/mp", json=VALID).status_code == 200  # takes the new one
    assert ens.auth_calls == 2
    last = [c.request.headers["ens-auth-token"] for c in ens.rsps.calls if c.request.url.endswith("/process")][-1]
    assert last == "session-token-2-abcdef"


def test_a_failing_store_does_not_stop_authentication(ens, tmp_path):
    from tests.conftest import free_port

    raw = ens_config()
    raw["relay"]["redis_url"] = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    raw["relay"]["rate_limit"] = ""
    raw["relay"]["global_rate_limit"] = ""
    ens.process(SUCCESS)
    provider = create_app(raw).extensions["formrelay"].providers["ens"]
    assert provider.tokens.get() == "session-token-1-abcdef" and ens.auth_calls == 1


# -- second pass against the documentation (issue 19) -------------------------------------------------

def test_docs_origin_source_string_goes_into_the_process_body_without_a_second_call(ens):
    """EN's "REST services" page: `"originSource": "<value>"` is a top-level string of the page-process body,
    beside appealCode, trackingId and txn1 (CONTRACT section 8: `origin_source = "<value>"`)."""
    app = create_app(ens_config(origin_source="spring-web", appeal_code="AP1"))
    ens.process(SUCCESS)
    assert app.test_client().post("/v1/forms/mp", json=VALID).status_code == 200
    (body,) = process_bodies(ens)
    assert body["originSource"] == "spring-web" and body["appealCode"] == "AP1"
    assert not [c for c in ens.rsps.calls if "originsource" in c.request.url]


def test_origin_source_must_be_text_or_a_code_and_category_table():
    assert ENSFormSchema().load({"page_id": 1, "fields": {"A": {}}, "origin_source": " web "}).origin_source == "web"
    for bad in ("", 12, {"code": "x"}):
        with pytest.raises(ValidationError, match="origin_source"):
            ENSFormSchema().load({"page_id": 1, "fields": {"A": {}}, "origin_source": bad})


@pytest.mark.parametrize(("expires", "lifetime"), [
    (3_600_000, 3600),                # live transcripts: a lifetime in milliseconds
    (600_000, 600),
    (1_000 * (1_800_000_000 + 900), 900),   # an epoch timestamp in milliseconds, 15 minutes ahead
    (1_800_000_000 + 1200, 1200),     # an epoch timestamp in seconds, 20 minutes ahead
    (1_000 * (1_800_000_000 + 86_400 * 365 * 30), 3600),  # decades ahead: never cached past an hour
    (86_400_000, 3600),               # a day in milliseconds: capped at an hour
    ("soon", 3600), (None, 3600),
])
def test_docs_token_comes_with_an_expiry_date_epoch_or_lifetime_never_past_an_hour(expires, lifetime):
    """The documentation says the token comes "with an expiry date"; live answers carry milliseconds of lifetime.
    Both readings are handled, and no token is ever cached longer than an hour."""
    from formrelay.providers.ens import token_lifetime

    assert token_lifetime(expires, now=1_800_000_000) == pytest.approx(lifetime, abs=0.01)


def test_an_epoch_expires_is_not_cached_for_decades(ens, monkeypatch):
    ens.rsps.replace(responses.POST, f"{BASE}/authenticate",
                     json={"ens-auth-token": "epoch-token-1", "expires": int(time.time() * 1000) + 10**13})
    provider = create_app(ens_config()).extensions["formrelay"].providers["ens"]
    provider.tokens.get()
    assert provider.tokens.expires_at <= time.time() + 3600


@pytest.mark.parametrize("message", ["Invalid ens-auth-token", "Session expired", ""])
def test_docs_any_401_but_the_api_limit_reauthenticates_once(app, ens, message):
    """Documented 401s: the expired session and the hourly API limit. Any 401 that is not the API limit
    re-authenticates once, so recovery does not hang on one exact error text."""
    ens.process((401, {"message": message} if message else "<html>401</html>"), SUCCESS)
    answer = app.test_client().post("/v1/forms/mp", json=VALID)
    assert answer.status_code == 200 and ens.auth_calls == 2 and len(process_bodies(ens)) == 2


def test_a_401_twice_is_kept_for_later_not_looped(app, ens):
    ens.process((401, {"message": "Session expired"}))
    answer = app.test_client().post("/v1/forms/mp", json=VALID)
    assert answer.status_code == 202 and ens.auth_calls == 2 and len(process_bodies(ens)) == 2


def test_docs_txn_fields_carry_no_utm_unless_the_form_maps_them(ens):
    """The documentation calls txn1..txn10 "external references": no page value is written there by default,
    so an account's own references are never overwritten; `txn_from_page` maps them per form."""
    app = create_app(ens_config())
    ens.process(SUCCESS)
    app.test_client().post("/v1/forms/mp", json={**VALID, "utm_source": "mail", "utm_campaign": "air"})
    (body,) = process_bodies(ens)
    assert not [k for k in body if k.startswith("txn")]
    form = ENSFormSchema().load({"page_id": 1, "fields": {"A": {}}, "txn_from_page": {"txn9": "source"}})
    definition = Definition("t", (FieldSpec("A", "A"),))
    assert build_payload(form, definition, {"A": "x"}, {"source": "newsletter", "utm_source": "mail"})["txn9"] == "newsletter"


def test_txn_from_page_is_checked_against_names_and_campaign_references():
    for bad in ({"txn11": "utm_source"}, {"txn1": "gclid"}):
        with pytest.raises(ValidationError, match="txn_from_page"):
            ENSFormSchema().load({"page_id": 1, "fields": {"A": {}}, "txn_from_page": bad})
    with pytest.raises(ValidationError, match="txn6"):
        ENSFormSchema().load({"page_id": 1, "fields": {"A": {}}, "campaign_references": ["r"],
                              "txn_from_page": {"txn6": "utm_source"}})


def test_docs_5000_requests_an_hour_per_api_user_counts_authentication_and_definition(ens, tmp_path):
    """Documented: 5,000 requests per hour per API user, blocked beyond. The relay budgets every call, the
    authenticate and the definition lookups included, and keeps submissions (202) once its budget is spent."""
    raw = ens_config()
    raw["providers"]["ens"]["api_budget"] = "8/hour"
    raw["queue"]["path"] = str(tmp_path / "q.sqlite3")
    app = create_app(raw)
    ens.process(SUCCESS)
    client = app.test_client()
    # authenticate + fields + questions + 3 question details + page = 7 calls before the first process
    assert client.post("/v1/forms/mp", json=VALID).status_code == 200
    assert client.post("/v1/forms/mp", json=VALID).status_code == 202
    assert len(ens.rsps.calls) == 8 and len(process_bodies(ens)) == 1
    assert "8/hour" in app.extensions["formrelay"].store.jobs()[0].last_error


def test_the_api_budget_is_per_api_user_not_per_process(ens, tmp_path):
    raw = ens_config()
    raw["providers"]["ens"]["api_budget"] = "9/hour"
    first = create_app(raw).extensions["formrelay"].providers["ens"]
    second = create_app(raw).extensions["formrelay"].providers["ens"]
    assert first.api_budget.name == second.api_budget.name and TOKEN not in first.api_budget.name


def test_docs_check_says_supporter_lookups_need_the_manage_individual_supporters_permission(ens):
    relay = create_app(ens_config(origin_source={"code": "web", "category": "relay"})).extensions["formrelay"]
    warnings = relay.providers["ens"].warnings(relay.forms["mp"].config)
    assert any("Manage individual supporters" in w and "5000/hour" in w for w in warnings)
    assert any("second call" in w for w in warnings)
    ens.rsps.replace(responses.GET, f"{BASE}/supporter/fields", status=403, json={"message": "Forbidden"})
    with pytest.raises(TryLater, match="Manage individual supporters"):
        relay.forms["mp"].definition


# -- the documentation, third reading (issue 30) ---------------------------------------------------------

def test_docs_authenticate_sends_json_with_the_charset(app, ens):
    """ENS REST documentation: POST /authenticate with `Content-Type: application/json; charset=UTF-8`."""
    ens.process(SUCCESS)
    assert app.test_client().post("/v1/forms/mp", json=VALID).status_code == 200
    auth = [c.request for c in ens.rsps.calls if c.request.url.endswith("/authenticate")]
    assert auth and auth[0].headers["Content-Type"] == "application/json; charset=UTF-8"


def test_docs_a_page_process_sent_again_after_reauthenticating_counts_against_the_page_budget(ens, tmp_path):
    """"Page processing: 200 requests per 5 minutes": a process resent after a 401 re-authentication is a second
    request, so it spends the budget again; with 3 allowed, two submissions that each needed a resend use four."""
    raw = ens_config()
    raw["providers"]["ens"]["page_budget"] = "3/5minute"
    raw["queue"]["path"] = str(tmp_path / "q.sqlite3")
    app = create_app(raw)
    ens.process((401, {"message": "Invalid ens-auth-token"}), SUCCESS)
    first = app.test_client().post("/v1/forms/mp", json=VALID)
    assert first.status_code == 200 and len(process_bodies(ens)) == 2
    second = app.test_client().post("/v1/forms/mp", json=VALID)  # one page process left in the budget
    third = app.test_client().post("/v1/forms/mp", json=VALID)
    assert second.status_code == 200 and third.status_code == 202
    assert len(process_bodies(ens)) == 3

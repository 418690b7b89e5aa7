"""The public routes against a faked NGP: every answer of the contract, in JSON and as a browser form post."""
from __future__ import annotations

import json
from urllib.parse import parse_qs

import pytest
import requests
import responses

from formrelay import create_app
from tests.conftest import NGP_FORM_URL, NGP_KEY, NGP_SUCCESS, base_config

VALID = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009"}
JSON = {"Accept": "application/json"}


def posts(mocked):
    return [c for c in mocked.calls if c.request.method == "POST"]


# -- description ---------------------------------------------------------------------------------------

def test_description_lists_real_fields_and_hides_fixed_values(client):
    answer = client.get("/v1/forms/join")
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["form"] == "join" and body["provider"] == "ngp" and body["title"] == "Sign the clean air petition"
    names = [f["name"] for f in body["fields"]]
    assert "YesSignMeUpForUpdatesForBinder" not in names and "type" not in names and "Submit" not in names
    email = next(f for f in body["fields"] if f["name"] == "EmailAddress")
    assert email["type"] == "email" and email["required"] is True and email["max_length"] == 100
    state = next(f for f in body["fields"] if f["name"] == "StateProvince")
    assert state["type"] == "select" and {"value": "NY", "label": "New York"} in state["options"]


def test_unknown_form_is_404_in_the_contract_shape(client):
    for answer in (client.get("/v1/forms/nope"), client.post("/v1/forms/nope", json={})):
        assert answer.status_code == 404
        assert answer.get_json()["status"] == "not_found" and answer.get_json()["ok"] is False


def test_definition_is_fetched_once_for_many_requests(client, mocked):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    for _ in range(5):
        client.get("/v1/forms/join")
        assert client.post("/v1/forms/join", json=VALID).status_code == 200
    gets = [c for c in mocked.calls if c.request.method == "GET"]
    assert len(gets) == 1 and len(posts(mocked)) == 5


def test_definition_outage_without_cache_is_503(config):
    with responses.RequestsMock() as rsps:
        rsps.get(NGP_FORM_URL, status=503)
        client = create_app(config).test_client()
        answer = client.get("/v1/forms/join")
        assert answer.status_code == 503 and answer.get_json()["status"] == "unavailable"


def test_stale_definition_is_kept_when_a_refresh_fails(mocked):
    app = create_app(base_config(schema_ttl=0.000001))
    client = app.test_client()
    assert client.get("/v1/forms/join").status_code == 200
    mocked.replace(responses.GET, NGP_FORM_URL, status=500)
    assert client.get("/v1/forms/join").status_code == 200


# -- submission: JSON ----------------------------------------------------------------------------------

def test_delivered_json_submission_forwards_exactly_the_form(client, mocked):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    answer = client.post("/v1/forms/join", json={
        **VALID, "Unknown": "dropped", "_hp": "", "_idempotency_key": "k1", "type": "SignupForm",
        "YesSignMeUpForUpdatesForBinder": "false", "utm_source": "newsletter",
    })
    assert answer.status_code == 200
    assert answer.get_json() == {"ok": True, "status": "delivered", "message": "Thanks & welcome!",
                                 "redirect": "https://www.example.org/thanks"}
    (call,) = posts(mocked)
    assert call.request.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert parse_qs(call.request.body) == {
        "FirstName": ["Ann"], "LastName": ["Lee"], "EmailAddress": ["ann@example.org"], "PostalCode": ["20009"],
        "YesSignMeUpForUpdatesForBinder": ["true"], "type": ["PetitionForm"]}


def test_values_are_trimmed_and_emails_normalised(client, mocked):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    client.post("/v1/forms/join", json={**VALID, "FirstName": "  Ann ", "EmailAddress": "Ann@EXAMPLE.org"})
    body = parse_qs(posts(mocked)[0].request.body)
    assert body["FirstName"] == ["Ann"] and body["EmailAddress"] == ["Ann@example.org"]


def test_aliases_from_the_definition_and_config(mocked):
    raw = base_config()
    raw["forms"]["join"]["aliases"] = {"zip": "PostalCode"}
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    client = create_app(raw).test_client()
    answer = client.post("/v1/forms/join", json={"fn": "Ann", "ln": "Lee", "em": "a@example.org", "zip": "20009"})
    assert answer.status_code == 200
    body = parse_qs(posts(mocked)[0].request.body)
    assert body["FirstName"] == ["Ann"] and body["PostalCode"] == ["20009"] and "zip" not in body


def test_invalid_submission_names_each_field_and_sends_nothing(client, mocked):
    answer = client.post("/v1/forms/join", json={"FirstName": "x" * 21, "EmailAddress": "nope", "PostalCode": "1",
                                                 "StateProvince": "ZZ", "Phone": "12"})
    assert answer.status_code == 422
    body = answer.get_json()
    assert body["ok"] is False and body["status"] == "invalid"
    assert set(body["errors"]) == {"FirstName", "LastName", "EmailAddress", "PostalCode", "StateProvince", "Phone"}
    assert body["errors"]["LastName"] == ["This field is required."]
    assert all(isinstance(m, str) for msgs in body["errors"].values() for m in msgs)
    assert posts(mocked) == []


def test_blank_required_value_is_missing(client):
    body = client.post("/v1/forms/join", json={**VALID, "LastName": "   "}).get_json()
    assert body["errors"] == {"LastName": ["This field is required."]}


def test_two_values_for_a_single_field_are_invalid(client):
    answer = client.post("/v1/forms/join", json={**VALID, "FirstName": ["Ann", "Bob"]})
    assert answer.status_code == 422 and "FirstName" in answer.get_json()["errors"]


def test_card_data_is_refused_and_never_sent(client, mocked, caplog):
    answer = client.post("/v1/forms/join", json={**VALID, "Comments": "4111 1111 1111 1111"})
    assert answer.status_code == 422 and "Comments" in answer.get_json()["errors"]
    answer = client.post("/v1/forms/join", json={**VALID, "card_number": "4000056655665556"})
    assert answer.status_code == 422 and "card_number" in answer.get_json()["errors"]
    assert posts(mocked) == []
    assert "4111" not in caplog.text and "4000056655665556" not in caplog.text


def test_ngp_field_refusal_is_422_on_that_field(client, mocked):
    mocked.post(NGP_FORM_URL, json={"resultCode": "Failure", "errors": [
        {"properties": ["firstName"], "text": "First name may not contain numbers"}]})
    answer = client.post("/v1/forms/join", json=VALID)
    assert answer.status_code == 422
    assert answer.get_json()["errors"] == {"FirstName": ["First name may not contain numbers"]}


def test_ngp_general_refusal_is_502_with_its_public_text(client, mocked):
    mocked.post(NGP_FORM_URL, json={"resultCode": "Failure", "errors": [{"text": "Form closed"}]})
    answer = client.post("/v1/forms/join", json=VALID)
    assert answer.status_code == 502
    assert answer.get_json() == {"ok": False, "status": "rejected", "message": "Form closed"}


@pytest.mark.parametrize("fake", [
    {"status": 500, "body": "<html>oops</html>"},
    {"status": 503, "json": {}},
    {"body": requests.ConnectTimeout("connect timeout")},
    {"body": requests.ReadTimeout("read timeout")},
    {"body": requests.ConnectionError("refused")},
])
def test_outage_is_queued_durably(app, client, mocked, fake):
    mocked.post(NGP_FORM_URL, **fake)
    answer = client.post("/v1/forms/join", json=VALID)
    assert answer.status_code == 202
    assert answer.get_json()["status"] == "queued" and answer.get_json()["ok"] is True
    (job,) = app.extensions["formrelay"].store.jobs()
    assert job.form == "join" and job.submission["values"]["EmailAddress"] == "ann@example.org"


# -- submission: bodies --------------------------------------------------------------------------------

def test_urlencoded_and_multipart_bodies(client, mocked):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    answer = client.post("/v1/forms/join", data=VALID, headers=JSON)
    assert answer.status_code == 200 and answer.get_json()["status"] == "delivered"
    answer = client.post("/v1/forms/join", data=VALID, content_type="multipart/form-data", headers=JSON)
    assert answer.status_code == 200
    assert len(posts(mocked)) == 2
    assert parse_qs(posts(mocked)[1].request.body)["EmailAddress"] == ["ann@example.org"]


@pytest.mark.parametrize(("body", "content_type"), [
    (b"{not json", "application/json"),
    (b"[1, 2]", "application/json"),
    (b'"text"', "application/json"),
    (b'{"FirstName": {"nested": 1}}', "application/json"),
    (b"\xff\xfe", "application/json"),
    (b"FirstName=%FF", "application/x-www-form-urlencoded"),
    (b"[" * 100000, "application/json"),
])
def test_unparseable_bodies_are_400(client, body, content_type):
    answer = client.post("/v1/forms/join", data=body, content_type=content_type, headers=JSON)
    assert answer.status_code in (400, 413)
    assert answer.get_json()["status"] in ("bad_request", "too_large")


def test_file_uploads_are_refused(client):
    import io

    answer = client.post("/v1/forms/join", data={**VALID, "f": (io.BytesIO(b"x"), "x.txt")},
                         content_type="multipart/form-data", headers=JSON)
    assert answer.status_code == 400 and answer.get_json()["status"] == "bad_request"


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "", "application/json; charset=latin-1"])
def test_other_media_types_are_415(client, content_type):
    answer = client.post("/v1/forms/join", data=b"x=1", content_type=content_type, headers=JSON)
    assert answer.status_code == 415 and answer.get_json()["status"] == "unsupported_media_type"


def test_body_over_the_limit_is_413(mocked):
    client = create_app(base_config(max_body_bytes=2048)).test_client()
    answer = client.post("/v1/forms/join", data=json.dumps({"Comments": "x" * 5000}), content_type="application/json")
    assert answer.status_code == 413 and answer.get_json()["status"] == "too_large"


def test_too_many_fields_is_413(mocked):
    client = create_app(base_config(max_fields=5)).test_client()
    answer = client.post("/v1/forms/join", data="&".join(f"f{i}=1" for i in range(20)),
                         content_type="application/x-www-form-urlencoded", headers=JSON)
    assert answer.status_code == 413


def test_overlong_value_for_an_unbounded_field_is_invalid(mocked):
    client = create_app(base_config(max_value_length=50)).test_client()
    mocked.replace(responses.GET, NGP_FORM_URL, json={"title": "t", "type": "SignupForm", "form_elements": [
        {"type": "textarea", "name": "Story"}]})
    answer = client.post("/v1/forms/join", json={"Story": "x" * 51})
    assert answer.status_code == 422 and "Story" in answer.get_json()["errors"]


# -- browser form posts --------------------------------------------------------------------------------

def test_plain_post_success_is_303_to_success_url(client, mocked):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    answer = client.post("/v1/forms/join", data=VALID)
    assert answer.status_code == 303 and answer.headers["Location"] == "https://www.example.org/thanks"


def test_plain_post_without_success_url_goes_to_the_builtin_thanks_page(mocked):
    raw = base_config()
    del raw["forms"]["join"]["success_url"]
    client = create_app(raw).test_client()
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    answer = client.post("/v1/forms/join", data=VALID)
    assert answer.status_code == 303
    page = client.get(answer.headers["Location"])
    assert page.status_code == 200 and b"Thank you" in page.data


def test_plain_post_invalid_lists_errors_by_label_escaped(client):
    answer = client.post("/v1/forms/join", data={**VALID, "EmailAddress": "<script>alert(1)</script>"},
                         headers={"Referer": "https://www.example.org/join?x=\"><b>"})
    assert answer.status_code == 422 and answer.mimetype == "text/html"
    html = answer.get_data(as_text=True)
    assert "Email</strong>" in html and "<script>alert(1)" not in html
    assert '"><b>' not in html and "https://www.example.org/join" in html
    assert answer.headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_plain_post_invalid_goes_to_error_url_when_configured(mocked):
    raw = base_config()
    raw["forms"]["join"]["error_url"] = "https://www.example.org/join"
    answer = create_app(raw).test_client().post("/v1/forms/join", data={"FirstName": "A"})
    assert answer.status_code == 303 and answer.headers["Location"] == "https://www.example.org/join"


def test_plain_post_refusal_and_outage_get_html_pages(client, mocked):
    mocked.post(NGP_FORM_URL, json={"resultCode": "Failure", "errors": [{"text": "Closed <now>"}]})
    answer = client.post("/v1/forms/join", data=VALID)
    assert answer.status_code == 502 and "Closed &lt;now&gt;" in answer.get_data(as_text=True)
    mocked.replace(responses.POST, NGP_FORM_URL, status=503)
    answer = client.post("/v1/forms/join", data=VALID)
    assert answer.status_code == 303 and answer.headers["Location"] == "https://www.example.org/thanks"


def test_accept_json_gets_json_even_for_form_posts(client):
    answer = client.post("/v1/forms/join", data={"FirstName": "A"}, headers={"Accept": "text/html, application/json"})
    assert answer.status_code == 422 and answer.get_json()["status"] == "invalid"


# -- CORS ----------------------------------------------------------------------------------------------

def test_preflight_allows_only_configured_origins(client):
    ok = client.options("/v1/forms/join", headers={"Origin": "https://www.example.org",
                                                   "Access-Control-Request-Method": "POST"})
    assert ok.status_code == 204
    assert ok.headers["Access-Control-Allow-Origin"] == "https://www.example.org"
    assert "POST" in ok.headers["Access-Control-Allow-Methods"]
    assert "Idempotency-Key" in ok.headers["Access-Control-Allow-Headers"]
    other = client.options("/v1/forms/join", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_form_origins_replace_relay_origins_on_answers(mocked):
    raw = base_config()
    raw["forms"]["join"]["allowed_origins"] = ["https://join.example.org"]
    client = create_app(raw).test_client()
    ok = client.get("/v1/forms/join", headers={"Origin": "https://join.example.org"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://join.example.org"
    assert "Vary" in ok.headers and "Origin" in ok.headers["Vary"]
    relay_wide = client.get("/v1/forms/join", headers={"Origin": "https://www.example.org"})
    assert "Access-Control-Allow-Origin" not in relay_wide.headers
    invalid = client.post("/v1/forms/join", json={}, headers={"Origin": "https://join.example.org"})
    assert invalid.headers["Access-Control-Allow-Origin"] == "https://join.example.org"


# -- rate limits ---------------------------------------------------------------------------------------

def test_rate_limit_per_client_per_form_gives_429_with_retry_after(mocked):
    client = create_app(base_config(rate_limit="2/minute")).test_client()
    codes = [client.post("/v1/forms/join", json={}).status_code for _ in range(3)]
    assert codes == [422, 422, 429]
    answer = client.post("/v1/forms/join", json={})
    assert answer.get_json()["status"] == "rate_limited" and int(answer.headers["Retry-After"]) >= 1
    other_client = client.post("/v1/forms/join", json={}, environ_base={"REMOTE_ADDR": "10.9.9.9"})
    assert other_client.status_code == 422
    assert client.get("/v1/forms/join").status_code == 200  # describing is not a submission


def test_non_429_answers_carry_no_retry_after(client):
    assert "Retry-After" not in client.post("/v1/forms/join", json={}).headers


# -- OpenAPI, health, static ---------------------------------------------------------------------------

def test_openapi_document_carries_each_forms_schema(client):
    doc = client.get("/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    post = doc["paths"]["/v1/forms/join"]["post"]
    flat, osdi = post["requestBody"]["content"]["application/json"]["schema"]["oneOf"]  # flat or an OSDI body
    assert osdi["required"] == ["person"]
    ref = flat["allOf"][0]["$ref"]
    assert post["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]["allOf"][0]["$ref"] == ref
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert schema["properties"]["EmailAddress"]["format"] == "email"
    assert schema["properties"]["FirstName"]["maxLength"] == 20
    assert "FirstName" in schema["required"]
    assert {"200", "202", "422", "429", "502", "503"} <= set(post["responses"])


def test_openapi_document_is_valid_openapi(client):
    from openapi_spec_validator import validate

    validate(client.get("/v1/openapi.json").get_json())


def test_healthz(client):
    assert client.get("/healthz").get_json()["status"] == "ok"


def test_unknown_route_and_method_answer_in_contract_shape(client):
    assert client.get("/nope").get_json()["status"] == "not_found"
    answer = client.put("/v1/forms/join", json={})
    assert answer.status_code == 405 and answer.get_json()["ok"] is False


# -- secrets -------------------------------------------------------------------------------------------

def test_the_api_key_never_reaches_a_response_or_log(client, mocked, caplog):
    mocked.post(NGP_FORM_URL, status=500, body=f"upstream echoed {NGP_KEY}")
    outputs = []
    with caplog.at_level("DEBUG"):
        for answer in (client.get("/v1/forms/join"), client.post("/v1/forms/join", json=VALID),
                       client.post("/v1/forms/join", data=VALID), client.get("/v1/openapi.json"),
                       client.post("/v1/forms/join", data=b"{", content_type="application/json")):
            outputs.append(answer.get_data(as_text=True) + str(answer.headers))
    import logging

    logging.getLogger("formrelay.test").warning("about to log the key %s", NGP_KEY)
    assert all(NGP_KEY not in out for out in outputs)
    assert NGP_KEY not in caplog.text and "[redacted]" in caplog.text
    # the key is sent upstream, server-side only
    assert any("Authorization" in c.request.headers for c in mocked.calls)


def test_a_multipart_part_without_a_name_is_ignored(client, mocked):
    body = (b'--b\r\nContent-Disposition: form-data\r\n\r\nnameless\r\n'
            b'--b\r\nContent-Disposition: form-data; name="FirstName"\r\n\r\nAnn\r\n--b--\r\n')
    answer = client.post("/v1/forms/join", data=body, content_type="multipart/form-data; boundary=b", headers=JSON)
    assert answer.status_code == 422 and "FirstName" not in answer.get_json()["errors"]

"""A first pass over the submission route: delivered, invalid, and what reaches NGP."""
from __future__ import annotations

from urllib.parse import parse_qs

from tests.conftest import NGP_FORM_URL, NGP_SUCCESS


def test_valid_json_submission_is_forwarded_urlencoded_with_type_and_hidden_values(client, mocked):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    answer = client.post("/v1/forms/join", json={
        "FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009",
        "Unknown": "dropped", "_hp": "", "type": "SignupForm", "YesSignMeUpForUpdatesForBinder": "false",
    })
    assert answer.status_code == 200
    assert answer.get_json() == {"ok": True, "status": "delivered", "message": "Thanks & welcome!",
                                 "redirect": "https://www.example.org/thanks"}
    sent = [c for c in mocked.calls if c.request.method == "POST"]
    assert len(sent) == 1
    assert sent[0].request.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    body = parse_qs(sent[0].request.body)
    assert body == {"FirstName": ["Ann"], "LastName": ["Lee"], "EmailAddress": ["ann@example.org"],
                    "PostalCode": ["20009"], "YesSignMeUpForUpdatesForBinder": ["true"], "type": ["PetitionForm"]}


def test_invalid_submission_gets_422_with_messages_per_field_and_nothing_is_sent(client, mocked):
    answer = client.post("/v1/forms/join", json={"FirstName": "Ann", "EmailAddress": "nope"})
    assert answer.status_code == 422
    body = answer.get_json()
    assert body["status"] == "invalid" and body["ok"] is False
    assert set(body["errors"]) == {"LastName", "EmailAddress", "PostalCode"}
    assert not [c for c in mocked.calls if c.request.method == "POST"]

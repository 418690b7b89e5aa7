"""A fake ENS REST API: authenticate, supporter fields and questions, pages, page processing, origin source."""
from __future__ import annotations

import time
import uuid
from typing import Any

from flask import Blueprint, Response, jsonify, request

from formrelay.sandbox.state import state

bp = Blueprint("sandbox_ens", __name__, url_prefix="/ens/service")

API_TOKEN = "sandbox-ens-api-token"
TOKEN_LIFETIME_MS = 3_600_000
_tokens: dict[str, float] = {}

FIELDS = [
    {"id": 1, "name": "Email Address", "tag": "Email Address", "property": "emailAddress"},
    {"id": 2, "name": "First Name", "tag": "First Name", "property": "firstName"},
    {"id": 3, "name": "Last Name", "tag": "Last Name", "property": "lastName"},
    {"id": 4, "name": "Postcode", "tag": "Postcode", "property": "postcode"},
    {"id": 5, "name": "Phone Number", "tag": "Phone Number", "property": "phoneNumber"},
    {"id": 6, "name": "Date of Birth", "tag": "Date of Birth", "property": "dateOfBirth"},
    {"id": 7, "name": "Country", "tag": "Country", "property": "country"},
    {"id": 8, "name": "Address 1", "tag": "Address 1", "property": "address1"},
    {"id": 9, "name": "City", "tag": "City", "property": "city"},
    {"id": 10, "name": "Region", "tag": "Region", "property": "region"},
]
QUESTIONS = [
    {"id": 101, "questionId": 9001, "name": "Opt-in", "type": "OPT"},
    {"id": 102, "questionId": 9002, "name": "Volunteer", "type": "CONF"},
    {"id": 103, "questionId": 9003, "name": "Why", "type": "GEN"},
]
QUESTION_DETAIL = {
    101: [{"locale": "en-GB", "label": "Keep me updated by email", "htmlFieldType": "checkbox", "content": {}}],
    102: [{"locale": "en-GB", "label": "Would you volunteer?", "htmlFieldType": "radio",
           "content": {"data": [{"value": "Y", "label": "Yes"}, {"value": "P", "label": "Maybe"},
                                {"value": "N", "label": "No"}]}}],
    103: [{"locale": "en-GB", "label": "Why does this matter to you?", "htmlFieldType": "textarea", "content": {}}],
}
PAGES = {12345: {"id": 12345, "name": "write-your-mp", "title": "Write to your MP", "type": "emailtotarget"},
         555: {"id": 555, "name": "clean-air", "title": "Clean air petition", "type": "dcf"}}


API_LIMIT = {"message": "The user with username [sandbox] has exceeded its api limit."}


@bp.before_request
def hourly_limit() -> Any:
    """Documented: 5,000 requests an hour per API user, every call counted, answered with this 401 beyond."""
    if state().over_limit("ens"):
        return jsonify(API_LIMIT), 401
    return None


def _authorised() -> bool:
    token = request.headers.get("ens-auth-token", "")
    expires = _tokens.get(token)
    return expires is not None and expires > time.time()


def _invalid_token() -> Any:
    return jsonify({"message": "Invalid ens-auth-token"}), 401


@bp.post("/authenticate")
def authenticate() -> Any:
    sandbox = state()
    sandbox.count_call("ens", "authenticate")
    if sandbox.next_failure("ens-auth") == 401:
        return jsonify(API_LIMIT), 401
    key = request.get_data(as_text=True)
    if key != API_TOKEN:
        return jsonify({"message": f"Invalid api key [{key}]"}), 401  # ENS echoes the key, like this
    token = str(uuid.uuid4())
    _tokens[token] = time.time() + TOKEN_LIFETIME_MS / 1000
    return jsonify({"ens-auth-token": token, "expires": TOKEN_LIFETIME_MS})


@bp.get("/supporter/fields")
def supporter_fields() -> Any:
    state().count_call("ens", "fields")
    return jsonify(FIELDS) if _authorised() else _invalid_token()


@bp.get("/supporter/questions")
def supporter_questions() -> Any:
    state().count_call("ens", "questions")
    return jsonify(QUESTIONS) if _authorised() else _invalid_token()


@bp.get("/supporter/questions/<int:question_id>")
def supporter_question(question_id: int) -> Any:
    if not _authorised():
        return _invalid_token()
    detail = QUESTION_DETAIL.get(question_id)
    return jsonify(detail) if detail else Response(status=404)


@bp.get("/page/<int:page_id>")
def page(page_id: int) -> Any:
    if not _authorised():
        return _invalid_token()
    found = PAGES.get(page_id)
    return jsonify(found) if found else Response(status=404)


@bp.post("/page/<int:page_id>/process")
def process(page_id: int) -> Any:
    sandbox = state()
    sandbox.count_call("ens", "process")
    failure = sandbox.next_failure("ens")
    if failure == 401:  # the session expired early
        _tokens.clear()
    if not _authorised():
        return _invalid_token()
    if failure:
        return Response("<html><body>Service Temporarily Unavailable</body></html>", status=failure,
                        mimetype="text/html")
    if page_id not in PAGES:
        return Response(status=404)
    body = request.get_json(force=True, silent=True) or {}
    supporter = body.get("supporter") or {}
    email = str(supporter.get("Email Address", ""))
    if email.endswith("@refused.example"):
        return jsonify({"status": "ERROR", "error": "Gateway rule: this supporter is suppressed"})
    if not email:
        return jsonify({"status": "ERROR", "error": "Field Email Address is required"})
    if "originSource" in body and not isinstance(body["originSource"], str):
        # Documented: originSource is a top-level string of the process body.
        return jsonify({"status": "ERROR", "error": "originSource must be a string"})
    # Question answers count only where formrelay means to send them, nested in the supporter (the documented
    # example: {"supporter": {..., "questions": {"Opt-in": "Y"}}}); anywhere else they are not recorded as answers.
    answers = supporter.get("questions")
    sandbox.record("ens", {"page_id": page_id, "body": body,
                           "questions": dict(answers) if isinstance(answers, dict) else {}})
    number = len(sandbox.received["ens"])
    return jsonify({"status": "SUCCESS", "id": 1000 + number, "supporterId": 5000 + number,
                    "supporterEmailAddress": email})


@bp.post("/supporter/<int:supporter_id>/originsource")
def origin_source(supporter_id: int) -> Any:
    if not _authorised():
        return _invalid_token()
    state().record("ens-originsource", {"supporter_id": supporter_id, "body": request.get_json(force=True)})
    return jsonify({"status": "SUCCESS"})

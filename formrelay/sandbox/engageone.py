"""A fake EngageOne Communicate: a Users API that issues JWTs, and transactional sends that need them."""
from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

from flask import Blueprint, jsonify, request

from formrelay.sandbox.state import state

bp = Blueprint("sandbox_engageone", __name__, url_prefix="/engageone")

CUSTOMER_ID = "sa11bb"
CLIENT_ID = f"{CUSTOMER_ID}.sandbox@communicate.engageone.co"
SECRET = "sandbox-engageone-secret"
# Documented: PB-Customer-Id is the company name prefixed with eocm-, spaces as hyphens, case sensitive; it is not
# the short customer id of the authenticate body.
PB_CUSTOMER_ID = "eocm-Sandbox-Campaigns"
LIFETIME = 3600
_tokens: dict[str, float] = {}


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def make_jwt(lifetime: int = LIFETIME) -> str:
    now = int(time.time())
    token = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64({'sub': CLIENT_ID, 'iat': now, 'exp': now + lifetime, 'jti': uuid.uuid4().hex})}.c2lnbmF0dXJl"
    _tokens[token] = now + lifetime
    return token


@bp.post("/users/authenticate")
def authenticate() -> Any:
    state().count_call("engageone", "authenticate")
    body = request.get_json(force=True, silent=True) or {}
    if (body.get("client_id"), body.get("secret"), body.get("customer_id")) != (CLIENT_ID, SECRET, CUSTOMER_ID):
        return jsonify({"message": "Invalid credentials"}), 401
    return jsonify(make_jwt())  # a bare JSON string, as the real Users API answers


@bp.post("/api/campaigns/v2/<campaign>/transactional")
def transactional(campaign: str) -> Any:
    sandbox = state()
    sandbox.count_call("engageone", "send")
    auth = request.headers.get("Authorization", "")
    token = auth.removeprefix("Bearer ")
    if _tokens.get(token, 0) < time.time():
        return jsonify({"message": "Unauthorized"}), 401
    if request.headers.get("PB-Customer-Id") != PB_CUSTOMER_ID:
        # Inferred status: the codes are not published; a token for the wrong company is a permission problem.
        return jsonify({"message": "Forbidden: unknown company"}), 403
    failure = sandbox.next_failure("engageone")
    if failure == 401:
        _tokens.pop(token, None)
        return jsonify({"message": "Token expired"}), 401
    if failure:
        return jsonify({"message": "Service unavailable"}), failure
    body = request.get_json(force=True, silent=True) or {}
    if campaign.lower().startswith("missing") or str(body.get("communication", "")).lower().startswith("missing"):
        # Inferred status (codes are not published): a campaign or communication the account lacks is not found.
        # The sandbox account lacks every name that starts with "Missing".
        return jsonify({"message": f"Campaign {campaign} not found"}), 404
    if not body.get("dataset") or not body.get("communication"):
        return jsonify({"message": "dataset and communication are required"}), 400
    path = body.get("email_json_path") or "email"
    if not all(isinstance(r, dict) and r.get(path) for r in body["dataset"]):
        # Documented: the address is read from email_json_path in each record; without it the send goes nowhere.
        return jsonify({"message": f"dataset record without {path}"}), 400
    sandbox.record("engageone", {"campaign": campaign, "body": body})
    return jsonify({"send_id": uuid.uuid4().hex})

"""A fake Action Network API v2: the action helpers, blind or keyed, with OSDI-style answers."""
from __future__ import annotations

import time
import uuid
from typing import Any

from flask import Blueprint, Response, jsonify, request

from formrelay.sandbox.state import state

bp = Blueprint("sandbox_actionnetwork", __name__, url_prefix="/actionnetwork/api/v2")

API_KEY = "sandbox-an-api-key"
HELPER_ROUTES = ("/petitions/<aid>/signatures", "/forms/<aid>/submissions", "/events/<aid>/attendances",
                 "/advocacy_campaigns/<aid>/outreaches", "/surveys/<aid>/responses")


@bp.get("/")
def entry_point() -> Any:
    key = request.headers.get("OSDI-API-Token")
    if key is not None and key != API_KEY:
        return jsonify({"error": "API Key invalid or not present"}), 403
    return jsonify({"motd": "Welcome to the (sandbox) Action Network OSDI API v2 Entry Point!",
                    "_links": {"osdi:petitions": {"href": request.base_url + "petitions"}}})


def _helper(aid: str | None = None) -> Any:
    sandbox = state()
    sandbox.count_call("actionnetwork", "helper")
    failure = sandbox.next_failure("actionnetwork")
    if failure:
        if failure == 429:
            return jsonify({"error": "You have exceeded your rate limit"}), failure
        return Response("<html>Bad gateway</html>", status=failure)
    key = request.headers.get("OSDI-API-Token")
    if key is not None and key != API_KEY:
        return jsonify({"error": "API Key invalid or not present"}), 403
    posted = request.get_json(force=True, silent=True)
    body: dict[str, Any] = posted if isinstance(posted, dict) else {}
    person: dict[str, Any] = body["person"] if isinstance(body.get("person"), dict) else {}
    emails = person.get("email_addresses") or []
    if any("@" not in str(e.get("address", "")) for e in emails):
        return jsonify({"error": "Email address is not valid"}), 400
    if not emails and not person.get("phone_numbers"):
        return jsonify({"error": "A person needs an email address or a phone number"}), 400
    sandbox.record("actionnetwork", {"path": request.path, "keyed": key is not None, "body": body,
                                     "at": time.time()})
    if key is None:
        return jsonify({}), 200, {"Content-Type": "application/hal+json"}
    created = f"action_network:{uuid.uuid4()}"
    return jsonify({"identifiers": [created], "_links": {"osdi:person": {"href": f"{request.host_url}people/x"}}})


for rule in HELPER_ROUTES:
    bp.add_url_rule(rule, view_func=_helper, methods=["POST"], endpoint=rule.replace("/", "_").replace("<aid>", "id"))
bp.add_url_rule("/people", view_func=_helper, methods=["POST"], endpoint="people")

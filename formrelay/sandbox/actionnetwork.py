"""A fake Action Network API v2: the action helpers, blind or keyed, with OSDI-style answers."""
from __future__ import annotations

import time
import uuid
from typing import Any

from flask import Blueprint, Response, jsonify, request

from formrelay.sandbox.state import state

bp = Blueprint("sandbox_actionnetwork", __name__, url_prefix="/actionnetwork/api/v2")

API_KEY = "sandbox-an-api-key"
# What the sandbox group holds, for `formrelay check` lookups (GET, as documented: resources, custom fields, tags).
ACTIONS = {"petitions": {"demo-clean-air", "air"}, "forms": {"air"}, "events": {"air"},
           "advocacy_campaigns": {"air"}, "surveys": {"air"}}
CUSTOM_FIELDS = ("Employer", "Mother's maiden name")
TAGS = ("volunteer", "donor", "clean-air", "air", "lapsed")
TAGS_PER_PAGE = 2  # small pages so that clients must follow _links.next
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
    if (key is not None and key != API_KEY) or (key is None and request.path.endswith("/people")):
        # The person signup helper needs a key (documented); the action helpers take blind POSTs.
        return jsonify({"error": "API Key invalid or not present"}), 403
    posted = request.get_json(force=True, silent=True)
    body: dict[str, Any] = posted if isinstance(posted, dict) else {}
    person: dict[str, Any] = body["person"] if isinstance(body.get("person"), dict) else {}
    emails = person.get("email_addresses") or []
    if any("@" not in str(e.get("address", "")) for e in emails):
        return jsonify({"error": "Email address is not valid"}), 400
    if not emails and not person.get("phone_numbers"):
        return jsonify({"error": "A person needs an email address or a phone number"}), 400
    background = request.args.get("background_request") == "true"
    sandbox.record("actionnetwork", {"path": request.path, "keyed": key is not None, "body": body,
                                     "at": time.time(), "background": background})
    if key is None or background:
        # Documented: a blind POST answers 200 {}; ?background_request=true answers 200 {} at once, key or not.
        return jsonify({}), 200, {"Content-Type": "application/hal+json"}
    created = f"action_network:{uuid.uuid4()}"
    return jsonify({"identifiers": [created], "_links": {"osdi:person": {"href": f"{request.host_url}people/x"}}})


for rule in HELPER_ROUTES:
    bp.add_url_rule(rule, view_func=_helper, methods=["POST"], endpoint=rule.replace("/", "_").replace("<aid>", "id"))
bp.add_url_rule("/people", view_func=_helper, methods=["POST"], endpoint="people")


def _keyed() -> Any:
    key = request.headers.get("OSDI-API-Token")
    if key != API_KEY:
        return jsonify({"error": "API Key invalid or not present"}), 403
    return None


@bp.get("/<collection>/<aid>")
def action(collection: str, aid: str) -> Any:
    refused = _keyed()
    if refused is not None:
        return refused
    if collection not in ACTIONS:
        return jsonify({"error": "Not found"}), 404
    state().count_call("actionnetwork", "lookup")
    if aid not in ACTIONS[collection]:
        return jsonify({"error": "Sorry, that resource could not be found"}), 404
    return jsonify({"identifiers": [f"action_network:{aid}"], "title": f"Sandbox {collection[:-1]} {aid}",
                    "_links": {"self": {"href": request.base_url}}})


@bp.get("/metadata/custom_fields")
def custom_fields() -> Any:
    refused = _keyed()
    if refused is not None:
        return refused
    return jsonify({"action_network:custom_fields": [{"name": n} for n in CUSTOM_FIELDS],
                    "_links": {"self": {"href": request.base_url}}})


@bp.get("/tags")
def tags() -> Any:
    refused = _keyed()
    if refused is not None:
        return refused
    page = max(1, int(request.args.get("page", "1") or 1))
    pages = (len(TAGS) + TAGS_PER_PAGE - 1) // TAGS_PER_PAGE
    chunk = TAGS[(page - 1) * TAGS_PER_PAGE: page * TAGS_PER_PAGE]
    # As Action Network's own collections do, `next` is there on the last page too (pointing past the end, where
    # the page is empty): clients stop on total_pages or an empty page, not on a missing `next`.
    links: dict[str, Any] = {"self": {"href": request.url}, "next": {"href": f"{request.base_url}?page={page + 1}"}}
    return jsonify({"total_pages": pages, "per_page": TAGS_PER_PAGE, "page": page, "total_records": len(TAGS),
                    "_embedded": {"osdi:tags": [{"name": t} for t in chunk]}, "_links": links})

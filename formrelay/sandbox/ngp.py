"""A fake NGP forms API: serves definitions and answers submissions in NGP's envelopes."""
from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, jsonify, request

from formrelay.sandbox.state import state

bp = Blueprint("sandbox_ngp", __name__, url_prefix="/ngp/v2")
API_KEY = "sandbox-ngp-api-key"  # what the demo and the tests configure; any key is taken but this one:
REFUSED_KEY = "refused-ngp-api-key"  # answered 401, as NGP answers a wrong key

PETITION: dict[str, Any] = {
    "formId": "demo-petition",
    "title": "Sign the clean air petition",
    "type": "PetitionForm",
    "status": "Published",
    "form_elements": [
        {"type": "fieldset", "name": "ContactInformation", "title": "Contact information", "children": [
            {"type": "textfield", "name": "FirstName", "title": "First name", "required": True,
             "maxlength": 20, "queryString": "fn"},
            {"type": "textfield", "name": "LastName", "title": "Last name", "required": True,
             "maxlength": 25, "queryString": "ln"},
            {"type": "textfield", "name": "EmailAddress", "title": "Email", "required": True,
             "maxlength": 100, "validation": "email", "queryString": "em"},
            {"type": "textfield", "name": "Phone", "title": "Phone", "maxlength": 20, "validation": "phone"},
            {"type": "textfield", "name": "AddressLine1", "title": "Street address", "maxlength": 100},
            {"type": "textfield", "name": "City", "title": "City", "maxlength": 50},
            {"type": "select", "name": "StateProvince", "title": "State", "options": "states"},
            {"type": "textfield", "name": "PostalCode", "title": "ZIP code", "required": True,
             "maxlength": 10, "validation": "postalCode", "queryString": "pc"},
        ]},
        {"type": "markup", "name": "Explain", "markup": "<p>Tell your representative you care.</p>"},
        {"type": "textarea", "name": "Comments", "title": "Why do you care?", "maxlength": 1000},
        {"type": "checkbox", "name": "SmsOptIn", "title": "Send me text updates"},
        {"type": "hidden", "name": "YesSignMeUpForUpdatesForBinder", "value": True},
        {"type": "submit", "name": "Submit", "title": "Sign"},
    ],
    "metadata": {},
    "confirmation": {},
    "errors": [],
    "resultCode": "Success",
}
# A signup form as NGP titles them for North America: "Zip/Postal Code" (validation postalCode) beside "State or
# Province", and hidden attribution elements that NGP's own embed fills from the page URL (queryString).
SIGNUP: dict[str, Any] = {
    "formId": "demo-signup",
    "title": "Join the clean air network",
    "type": "SignupForm",
    "status": "Published",
    "form_elements": [
        {"type": "textfield", "name": "FirstName", "title": "First Name", "required": True, "maxlength": 20,
         "queryString": "fn"},
        {"type": "textfield", "name": "EmailAddress", "title": "Email", "required": True, "maxlength": 100,
         "validation": "email", "queryString": "em"},
        {"type": "select", "name": "StateProvince", "title": "State or Province", "options": "states"},
        {"type": "textfield", "name": "PostalCode", "title": "Zip/Postal Code", "required": True, "maxlength": 10,
         "validation": "postalCode", "queryString": "pc"},
        {"type": "hidden", "name": "MarketSource", "value": "web", "queryString": "ms"},
        {"type": "hidden", "name": "MailingId", "value": "", "queryString": "midqs"},
        {"type": "submit", "name": "Submit", "title": "Join"},
    ],
    "metadata": {}, "confirmation": {}, "errors": [], "resultCode": "Success",
}
CLOSED: dict[str, Any] = {
    **SIGNUP, "formId": "demo-closed", "title": "Spring rally sign-up", "status": "Unpublished",
    # Documented: a closed form's message is metadata.deactivationHtmlContent.
    "metadata": {"deactivationHtmlContent": "<p>Sign-ups for the spring rally have <b>closed</b>. Thank you!</p>"},
}
DONATE: dict[str, Any] = {**SIGNUP, "formId": "demo-donate", "title": "Give", "type": "ContributionForm"}
ADVOCACY: dict[str, Any] = {**SIGNUP, "formId": "demo-advocacy", "title": "Write to your senator",
                            "type": "AdvocacyForm"}
# Answers a submission with neither resultCode nor errors: "no errors array means success" (documented).
TERSE: dict[str, Any] = {**SIGNUP, "formId": "demo-terse", "title": "Quick sign-up"}
FORMS: dict[str, dict[str, Any]] = {f["formId"]: f for f in (PETITION, SIGNUP, CLOSED, DONATE, ADVOCACY, TERSE)}


@bp.get("/forms/<form_id>")
@bp.get("/Forms/<form_id>")
def definition(form_id: str) -> Any:
    state().count_call("ngp", "definition")
    form = FORMS.get(form_id)
    if form is None:
        return jsonify({"errors": [{"code": "NOT_FOUND", "text": "Form not found"}]}), 404
    return jsonify(form)


@bp.post("/forms/<form_id>")
@bp.post("/Forms/<form_id>")
def submit(form_id: str) -> Any:
    sandbox = state()
    sandbox.count_call("ngp", "submit")
    delay = sandbox.delay.get("ngp")
    if delay:
        time.sleep(delay)
    if sandbox.hung("ngp"):
        return Response("<html><body>Gateway Timeout</body></html>", status=504, mimetype="text/html")
    failure = sandbox.next_failure("ngp")
    if failure:
        return Response("<html><body>Service Unavailable</body></html>", status=failure, mimetype="text/html")
    form = FORMS.get(form_id)
    if form is None:
        return jsonify({"errors": [{"code": "NOT_FOUND", "text": "Form not found"}]}), 404
    auth = request.authorization
    if auth is None or auth.type != "basic" or auth.password in (None, "", REFUSED_KEY):
        # Documented: "You must attach your API key using BasicAuth when making all API calls" (the definition GET
        # is the stated exception).
        return jsonify({"errors": [{"code": "UNAUTHORIZED", "text": "Authorization has been denied for this request."}]}), 401
    if request.mimetype != "application/x-www-form-urlencoded":
        return jsonify({"errors": [{"code": "INVALID_PARAMETER", "text": "Expected a form post"}],
                        "resultCode": "Failure"}), 400
    fields = request.form.to_dict(flat=False)
    if not fields.get("type", [""])[0]:
        # Documented: the submission carries `type`, the form's type.
        return jsonify({"errors": [{"properties": ["type"], "code": "INVALID_PARAMETER",
                                    "text": "The form type is required"}], "resultCode": "Failure"}), 400
    errors = []
    first = fields.get("FirstName", [""])[0]
    if any(ch.isdigit() for ch in first):
        errors.append({"properties": ["firstName"], "text": "First name may not contain numbers",
                       "code": "INVALID_PARAMETER"})
    if fields.get("LastName", [""])[0] == "Refused":
        errors.append({"text": "This submission was refused by the campaign.", "code": "REFUSED"})
    if errors:
        return jsonify({"errors": errors, "resultCode": "Failure"})
    if form.get("status") != "Published":
        # Inferred: what NGP answers for a closed form is not published; the relay never posts to one.
        return jsonify({"errors": [{"code": "FORM_INACTIVE", "text": "This form is not active"}],
                        "resultCode": "Failure"})
    sandbox.record("ngp", {"form_id": form_id, "fields": fields, "content_type": request.content_type})
    if form_id == "demo-terse":
        return jsonify({"response": {"submissionId": len(sandbox.received["ngp"])}})
    return jsonify({
        "page": {"confirmationActionType": "DisplayContent",
                 "confirmationPageContent": "<p>Thank you for signing, <b>friend</b>!</p>"},
        "response": {"submissionId": len(sandbox.received["ngp"])},
        "errors": [],
        "resultCode": "Success",
    })

"""Negotiated answers: JSON for the snippet and API clients, redirects or escaped HTML for plain form posts."""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from flask import Response, jsonify, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from formrelay.core.i18n import Msg
from formrelay.core.outcome import STATUS_HTTP, Outcome
from formrelay.web import locale, thanks

if TYPE_CHECKING:
    from formrelay.delivery.relay import Form

JSON_TYPES = ("application/json",)

HTML_TITLES: Mapping[str, Msg] = {
    "delivered": Msg("Thank you"),
    "queued": Msg("Thank you"),
    "invalid": Msg("Please check the form"),
    "bad_request": Msg("Something went wrong"),
    "forbidden": Msg("Not allowed"),
    "not_found": Msg("Form not found"),
    "method_not_allowed": Msg("Not allowed"),
    "too_large": Msg("Too much data"),
    "conflict": Msg("Still sending"),
    "unsupported_media_type": Msg("Something went wrong"),
    "rate_limited": Msg("Too many attempts"),
    "rejected": Msg("Not accepted"),
    "unavailable": Msg("Please try again later"),
    "error": Msg("Something went wrong"),
}


def wants_json() -> bool:
    """JSON when asked for explicitly, or when the body was JSON (contract section 3)."""
    if request.mimetype == "application/json" or request.mimetype.endswith("+json"):
        return True
    return any(value in JSON_TYPES and quality > 0 for value, quality in request.accept_mimetypes)


def with_message(outcome: Outcome) -> Outcome:
    """Every answer but a plain success says in words what happened: the outcome's own message, else its status's,
    in the answer's language. A `delivered` answer keeps only what the CRM said (the contract's "may carry"), so
    the page's own thank-you text, or the snippet's in the supporter's language, is shown."""
    if outcome.message or outcome.status == "delivered":
        return outcome
    return Outcome(**{**outcome.__dict__, "message": locale.status_message(outcome.status)})


def json_answer(outcome: Outcome, ladder: Mapping[str, object] | None = None) -> Response:
    outcome = with_message(outcome)
    locale.mark()
    response = jsonify({**outcome.public(), "thanks": ladder} if ladder else outcome.public())
    response.status_code = outcome.http_status
    if outcome.retry_after is not None:
        response.headers["Retry-After"] = str(outcome.retry_after)
    return response


def safe_back_link(form: Form | None) -> str | None:
    """Where 'go back' points: the form's error_url, else the page that posted (http/https only)."""
    if form is not None and form.config.error_url:
        return form.config.error_url
    referrer = request.referrer
    if referrer and urlsplit(referrer).scheme in ("http", "https"):
        return referrer
    return None


def html_answer(outcome: Outcome, form: Form | None) -> Response:
    back = safe_back_link(form)
    labels: dict[str, str] = {}
    if outcome.status == "invalid" and form is not None:
        try:
            labels = form.labels()
        except Exception:  # the labels are a nicety; an error page must never fail
            labels = {}
    outcome = with_message(outcome)
    locale.mark()
    body = render_template(
        "outcome.html",
        title=HTML_TITLES.get(outcome.status, HTML_TITLES["error"]).translated(),
        outcome=outcome,
        form_title=_safe_title(form),
        labels=labels,
        back=back,
    )
    response = Response(body, status=outcome.http_status, mimetype="text/html")
    if outcome.retry_after is not None:
        response.headers["Retry-After"] = str(outcome.retry_after)
    return response


def _safe_title(form: Form | None) -> str | None:
    if form is None:
        return None
    try:
        return form.title()
    except Exception:
        return form.title(fetch=False)


def respond(outcome: Outcome, form: Form, share: str | None = None) -> BaseResponse:
    """The answer to a submission, in the shape the client asked for; `share` is the address a thank-you ladder
    shares (web/thanks.py)."""
    if wants_json():
        target = thanks.redirect_for(form.config, outcome.status)
        if outcome.ok and target and not outcome.redirect:
            outcome = Outcome(**{**outcome.__dict__, "redirect": target})
        ok = outcome.ok and form.config.thanks is not None
        ladder = thanks.ladder(form.config, outcome.status, share, form.title(fetch=False)) if ok else None
        return json_answer(outcome, ladder)
    if outcome.ok:
        # The relay's own page is told the shared address only when it was the form's page (not config).
        page = share if form.config.thanks and not form.config.thanks.share_url else None
        target = thanks.redirect_for(form.config, outcome.status) or \
            url_for("forms.thanks", slug=form.slug, status=outcome.status, page=page)
        return redirect(target, code=303)
    if outcome.status == "invalid" and form.config.error_url:
        return redirect(form.config.error_url, code=303)
    return html_answer(outcome, form)


def error_answer(status: str, message: str | None, errors: Mapping[str, list[str]] | None = None,
                 retry_after: int | None = None, form: Form | None = None) -> Response:
    """An error before or outside delivery (400, 404, 413, 415, 429, 503), negotiated like any answer."""
    outcome = Outcome(status, message=message, errors=errors, retry_after=retry_after)
    if wants_json() or request.method != "POST" or request.path.endswith(".json"):
        response = json_answer(outcome)
    else:
        response = html_answer(outcome, form)
    response.status_code = STATUS_HTTP.get(status, 500)
    return response

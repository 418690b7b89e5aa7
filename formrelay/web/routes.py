"""The public routes: describe a form, take a submission, CORS preflight, and the built-in thank-you page."""
from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from formrelay import metrics
from formrelay.web import cors, locale
from formrelay.core import i18n
from formrelay.core.errors import Invalid
from formrelay.core.i18n import gettext as _
from formrelay.core.outcome import Outcome
from formrelay.delivery.relay import current_relay
from formrelay.web.responses import respond
from formrelay.web.thanks import form_page, ladder, share_base
from formrelay.forms.submission import FORM_ERRORS
from formrelay.web.body import parse_body

log = logging.getLogger(__name__)

bp = Blueprint("forms", __name__)


@bp.get("/v1/forms/<form:slug>", provide_automatic_options=False)
def describe(slug: str) -> Response:
    """The form's public description, from the same schema that validates submissions, with a time-trap token."""
    relay = current_relay()
    described = relay.form(slug).describe()
    locale.mark()
    # The snippet's texts in the supporter's language ride along, so an unconfigured page speaks it too.
    # started_min: the snippet waits out the rest of the time-trap's minimum before it sends, so a fast person
    # (browser autofill) is never taken for a bot.
    return jsonify({**described, "started": relay.time_trap.issue(slug), "started_min": relay.time_trap.min_seconds,
                    "locale": i18n.current(), "texts": locale.snippet_texts()})


@bp.post("/v1/forms/<form:slug>", provide_automatic_options=False)
def submit(slug: str) -> BaseResponse:
    """Find form -> check origin -> parse body -> validate -> screen for abuse -> deliver -> negotiated answer."""
    started = time.perf_counter()
    relay = current_relay()
    form = relay.form(slug)
    relay.check_origin(form, request.headers.get("Origin"), request.headers.get("Referer"), request.host_url)
    body = parse_body(request, relay.config.relay)
    submission_id = None
    try:
        submission = form.validate(body, idempotency_key=request.headers.get("Idempotency-Key"))
    except Invalid as exc:
        outcome, counted = Outcome("invalid", message=exc.message, errors=exc.errors), "invalid"
    else:
        submission_id = submission.id
        screened = relay.screen(form, body, request.remote_addr, submission)
        outcome = screened or relay.accept(form, body, submission)
        caught = screened is not None and screened.detail.get("caught")
        counted = "discarded" if caught else "repeat" if outcome.detail.get("repeat") else outcome.status
    record(form.slug, form.config.provider, counted, outcome, submission_id, started, _declared(form))
    page = form_page(body, request.referrer)
    return respond(outcome, form, share_base(form.config, page, relay.config.origins_for(form.config), request.host_url))


def _declared(form: Any) -> frozenset[str]:
    """The names of the form's own fields: the only field names a log line may carry."""
    try:
        return frozenset(form.schema.fields) | {FORM_ERRORS}
    except Exception:  # no definition yet: every name in error is counted, none is named
        return frozenset({FORM_ERRORS})


def record(slug: str, provider: str, counted: str, outcome: Outcome, submission_id: str | None,
           started: float, declared: frozenset[str] = frozenset()) -> None:
    """One metric and one log line per submission: no field values, only what an operator needs.

    Fields in error are named only when they are the form's own; names a client made up are counted (a name can
    carry a card number, or text made to look like another log line).
    """
    metrics.SUBMISSIONS.labels(slug, provider, counted).inc()
    upstream_ms = outcome.upstream_ms
    latency_ms = (time.perf_counter() - started) * 1000
    upstream_status = outcome.upstream_status
    # The text line carries what the JSON fields carry: provider, upstream status and time, fields in error.
    upstream = ""
    if upstream_status is not None or upstream_ms is not None:
        upstream = f"; upstream {upstream_status or 'no answer'}"
        upstream += f" in {upstream_ms:.1f} ms" if upstream_ms is not None else ""
    errors = outcome.errors or {}
    named = sorted(name for name in errors if name in declared)
    others = len(errors) - len(named)
    listed = named + ([f"{others} other(s)"] if others else [])
    in_error = f"; fields in error: {', '.join(listed)}" if outcome.errors else ""
    log.info(
        "form %s (%s): submission %s %s in %.1f ms%s%s", slug, provider, submission_id or "-", counted, latency_ms,
        upstream, in_error,
        extra={
            "event": "submission", "form": slug, "provider": provider, "outcome": counted,
            "submission_id": submission_id, "upstream_status": upstream_status,
            "upstream_ms": round(upstream_ms, 1) if upstream_ms is not None else None,
            "latency_ms": round(latency_ms, 1),
            "error_fields": named or None, "error_fields_other": others or None,
            # why it was queued (deadline, bulkhead full, breaker open, surge, provider) or which kind of repeat
            "queued_because": outcome.detail.get("queued"), "repeat": outcome.detail.get("repeat"),
        },
    )


@bp.route("/v1/forms/<form:slug>", methods=["OPTIONS"], provide_automatic_options=False)
def preflight(slug: str) -> Response:
    """CORS preflight; the headers are added in after_request like every other answer of this blueprint."""
    return Response(status=204)


@bp.get("/v1/forms/<form:slug>/thanks")
def thanks(slug: str) -> str:
    """The built-in thank-you page a plain form post is sent to when the form has no success_url."""
    relay = current_relay()
    form = relay.form(slug)
    locale.mark()
    status = "queued" if request.args.get("status") == "queued" else "delivered"
    share = share_base(form.config, request.args.get("page"), relay.config.origins_for(form.config), request.host_url)
    return render_template(
        "thanks.html", title=_("Thank you"), form_title=form.title(fetch=False), queued=status == "queued",
        ladder=ladder(form.config, status, share, form.title(fetch=False)),
    )


@bp.after_request
def add_cors(response: Response) -> Response:
    relay = current_relay()
    slug = (request.view_args or {}).get("slug")
    form = relay.config.forms.get(slug) if isinstance(slug, str) else None
    allowed = relay.config.origins_for(form) if form else relay.config.relay.allowed_origins
    return cors.apply(response, request.headers.get("Origin"), allowed, preflight=request.method == "OPTIONS")


health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> Response:
    """Cheap liveness: the process serves."""
    return jsonify({"status": "ok", "version": current_app.config.get("FORMRELAY_VERSION")})

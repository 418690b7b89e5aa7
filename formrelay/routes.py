"""The public routes: describe a form, take a submission, CORS preflight, and the built-in thank-you page."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from formrelay import cors
from formrelay.errors import Invalid
from formrelay.outcome import Outcome
from formrelay.relay import current_relay
from formrelay.responses import respond
from formrelay.submission import parse_body

bp = Blueprint("forms", __name__)


@bp.get("/v1/forms/<slug>", provide_automatic_options=False)
def describe(slug: str) -> Response:
    """The form's public description, from the same schema that validates submissions, with a time-trap token."""
    relay = current_relay()
    return jsonify({**relay.form(slug).describe(), "started": relay.time_trap.issue(slug)})


@bp.post("/v1/forms/<slug>", provide_automatic_options=False)
def submit(slug: str) -> BaseResponse:
    """Find form -> check origin -> parse body -> validate -> screen for abuse -> deliver -> negotiated answer."""
    relay = current_relay()
    form = relay.form(slug)
    relay.check_origin(form, request.headers.get("Origin"), request.headers.get("Referer"), request.host_url)
    body = parse_body(request, relay.config.relay)
    try:
        submission = form.validate(body, idempotency_key=request.headers.get("Idempotency-Key"))
    except Invalid as exc:
        return respond(Outcome("invalid", message=exc.message, errors=exc.errors), form)
    outcome = relay.screen(form, body, request.remote_addr) or relay.submit(form, submission)
    return respond(outcome, form)


@bp.route("/v1/forms/<slug>", methods=["OPTIONS"], provide_automatic_options=False)
def preflight(slug: str) -> Response:
    """CORS preflight; the headers are added in after_request like every other answer of this blueprint."""
    return Response(status=204)


@bp.get("/v1/forms/<slug>/thanks")
def thanks(slug: str) -> str:
    """The built-in thank-you page a plain form post is sent to when the form has no success_url."""
    form = current_relay().form(slug)
    return render_template(
        "thanks.html", title="Thank you", form_title=form.config.title or slug,
        queued=request.args.get("status") == "queued",
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

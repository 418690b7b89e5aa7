"""The application factory: config in, a WSGI app with the relay, its limits and its routes out."""
from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, Response, current_app, g, request
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from formrelay import abuse, alerts
from formrelay.core import logs
from formrelay.core.config import Config, load_config, parse_config
from formrelay.core.errors import ProviderError, RelayHTTPError
from formrelay.core.outcome import HTTP_STATUS
from formrelay.core.version import __version__
from formrelay.delivery.relay import EXTENSION, Relay, current_relay
from formrelay.delivery.worker import Worker, start_embedded
from formrelay.web import buffered, limiting, locale
from formrelay.web.responses import error_answer

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent.parent


def static_dir() -> str:
    """The snippet's folder: inside the installed package, else the repo's top-level static/."""
    packaged = PACKAGE_DIR / "static"
    return str(packaged if packaged.is_dir() else PACKAGE_DIR.parent / "static")


def create_app(config: Config | Mapping[str, Any] | str | os.PathLike[str] | None = None) -> Flask:
    """Build the relay. config: a Config, a decoded TOML mapping (tests), a path, or None for $FORMRELAY_CONFIG."""
    if isinstance(config, Config):
        cfg = config
    elif isinstance(config, Mapping):
        cfg = parse_config(config)
    else:
        cfg = load_config(config)

    logs.configure(cfg.logging.format, cfg.logging.level)
    logs.add_secrets(cfg.secrets)
    logs.show_personal_data(cfg.logging.personal_data)

    app = Flask(__name__, static_folder=static_dir(), static_url_path="/static")
    app.response_class = buffered.Response  # one list of bytes to the server, not an iterator (see buffered.py)
    app.config["FORMRELAY_VERSION"] = __version__
    app.config["MAX_CONTENT_LENGTH"] = cfg.relay.max_body_bytes
    app.config["MAX_FORM_PARTS"] = cfg.relay.max_fields + 10
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if cfg.relay.trusted_proxies:
        # Only the configured number of proxies may set the client address; X-Forwarded-For is not trusted otherwise.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=cfg.relay.trusted_proxies, x_proto=cfg.relay.trusted_proxies)  # type: ignore[method-assign]

    relay = Relay(cfg)
    relay.init_app(app)
    locale.init_app(app, cfg.relay.locale, {slug: form.locale for slug, form in cfg.forms.items()})

    from formrelay.web import openapi, operations, routes

    limiting.init_converter(app)  # before the routes that name <form:slug>
    app.register_blueprint(routes.bp)
    app.register_blueprint(routes.health)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(operations.bp)
    limiting.init_limiter(app, cfg)
    _register_error_handlers(app)
    app.before_request(_request_id)
    app.after_request(_common_headers)
    return app


def start_embedded_worker(app: Flask) -> Worker | None:
    """The queue worker threads inside `serve`/`demo`/`wsgi:app`, unless [queue] embedded_worker = false; and the
    alert monitor ([alerts]) either way.

    They stop, and hand their leases back, when the process exits.
    """
    relay: Relay = app.extensions[EXTENSION]
    alerts.start(relay)  # [alerts] and `formrelay breaker reset`, in every server process (docs/alerts.md)
    if not relay.queue_settings.embedded_worker:
        return None
    return start_embedded(relay.worker())


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        form = _form_or_none()
        if isinstance(exc, RelayHTTPError):
            return error_answer(exc.status, exc.message, exc.errors, exc.retry_after, form=form)
        if isinstance(exc, RateLimitExceeded):
            abuse.count(form.slug if form else "(unknown form)", "rate limited")
            retry_after = _retry_after(exc)
            # The reason only: which limit, never the address or anything the client sent.
            log.info("form %s: refused a submission (rate limited: %s)", form.slug if form else "-", exc.limit.limit,
                     extra={"event": "rejection", "form": form.slug if form else None, "reason": "rate limited"})
            response = error_answer("rate_limited", None, retry_after=retry_after, form=form)
            response.headers["Retry-After"] = str(retry_after)
            return response
        code = exc.code or 500
        if code == 404:
            return error_answer("not_found", None)
        if code == 413:
            return error_answer("too_large", None, form=form)
        # werkzeug's descriptions are English only: the status's own message says it in the supporter's language.
        status = HTTP_STATUS.get(code, "bad_request" if code < 500 else "error")
        response = error_answer(status, None, form=form)
        response.status_code = code
        if code == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    @app.errorhandler(ProviderError)
    def provider_error(exc: ProviderError) -> Response:
        log.error("provider problem on %s: %s", logs.clip(request.path), exc)
        return error_answer("unavailable", None, retry_after=60, form=None)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        # Logged (secrets masked) for the operator; the public gets no traceback.
        # The path is the client's: at most a line's worth of it (a 16 KB made-up form name is not worth logging).
        log.exception("unexpected error on %s %s", logs.clip(request.method, 16), logs.clip(request.path))
        return error_answer("error", None)


def _retry_after(exc: RateLimitExceeded) -> int:
    """Seconds until the breached window frees a slot (the moving window's reset time)."""
    limiter: Limiter | None = current_app.extensions.get(limiting.LIMITER)
    try:  # reset_at asks the storage again: Redis may have gone (or filled up) since the count
        current = limiter.current_limit if limiter is not None else None
        if current is not None and current.reset_at > time.time():
            return max(1, math.ceil(current.reset_at - time.time()))
    except Exception:
        pass
    try:
        return max(1, int(exc.limit.limit.get_expiry()))
    except Exception:
        return 60


def _form_or_none() -> Any:
    slug = (request.view_args or {}).get("slug")
    if not isinstance(slug, str):
        return None
    relay: Relay | None = _relay_or_none()
    return relay.forms.get(slug) if relay else None


def _relay_or_none() -> Relay | None:
    from flask import current_app

    relay = current_app.extensions.get(EXTENSION)
    return relay if isinstance(relay, Relay) else None


def _request_id() -> None:
    """Take the caller's X-Request-ID when it is sane (a proxy's or a load balancer's), else make one."""
    given = request.headers.get("X-Request-ID", "")
    g.request_id = given if logs.REQUEST_ID_OK.match(given) else uuid.uuid4().hex


def _common_headers(response: Response) -> Response:
    if g.get("request_id"):
        response.headers["X-Request-ID"] = g.request_id
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.mimetype == "text/html":
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self' https:; "
            "frame-ancestors 'none'; base-uri 'none'",
        )
        response.headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
    return response

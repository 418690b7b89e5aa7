"""Routes for operators: Prometheus metrics and the readiness view. Both are for `[metrics] allow`/`token` only."""
from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from formrelay import metrics
from formrelay.core import logs
from formrelay.core.errors import Forbidden, FormNotFound
from formrelay.core.i18n import gettext as _
from formrelay.delivery.relay import current_relay

bp = Blueprint("operations", __name__)


def _operator() -> bool:
    return metrics.allowed(current_relay().config.metrics, request.remote_addr, request.headers.get("Authorization"))


@bp.get("/metrics")
def scrape() -> Response:
    settings = current_relay().config.metrics
    if not settings.enabled:
        raise FormNotFound(_("Nothing here."))
    if not _operator():
        raise Forbidden(_("Metrics are for the operator's addresses or token only."))
    body, content_type = metrics.exposition(current_relay())
    return Response(body, content_type=content_type)


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Ready when the queue storage answers (then nothing accepted can be lost); degraded when a provider or a
    form's definition is failing (submissions still go to the queue). Operators get the details; others the word.
    """
    view = readiness()
    code = 503 if view["status"] == "unavailable" else 200
    if not _operator():
        return jsonify({"status": view["status"]}), code
    return jsonify(view), code


def readiness() -> dict[str, Any]:
    relay = current_relay()
    config = relay.config
    queue: dict[str, Any] = {"storage": "redis" if config.relay.redis_url else "sqlite"}
    started = time.perf_counter()
    try:
        queue.update(relay.queue_stats(), ok=True)
    except Exception as exc:
        queue.update(ok=False, problem=logs.mask(f"{exc.__class__.__name__}: {exc}"))
    queue["checked_in_ms"] = round((time.perf_counter() - started) * 1000, 1)
    providers = {name: _public(provider.status()) for name, provider in relay.providers.items()}
    forms = {slug: _public(form.cache_state()) for slug, form in relay.forms.items()}
    if not queue["ok"]:
        status = "unavailable"
    elif any(p.get("state") == "failing" for p in providers.values()) or any(
            f["schema"] in ("failing", "stale") for f in forms.values()):
        status = "degraded"
    else:
        status = "ok"
    return {
        "status": status,
        "version": current_app.config.get("FORMRELAY_VERSION"),
        "config": {"source": config.source, "forms": len(config.forms), "providers": sorted(config.providers)},
        "queue": queue,
        "providers": providers,
        "forms": forms,
    }


def _public(state: dict[str, Any]) -> dict[str, Any]:
    """Strings masked once more: a provider's problem text must never carry a secret or a token."""
    return {k: logs.mask(v) if isinstance(v, str) else v for k, v in state.items()}

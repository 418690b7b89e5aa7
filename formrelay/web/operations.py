"""Routes for operators: Prometheus metrics and the readiness view. Both are for `[metrics] allow`/`token` only."""
from __future__ import annotations

import threading
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from formrelay import metrics
from formrelay.core import logs
from formrelay.core.errors import Forbidden, FormNotFound
from formrelay.core.i18n import gettext as _
from formrelay.delivery.relay import current_relay
from formrelay.delivery.storage_check import watch_for
from formrelay.web import limiting

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
    body, content_type = metrics.exposition(current_relay(), watch_for(current_relay().store).collector())
    return Response(body, content_type=content_type)


# The public answer is the word only, computed at most this often: a crowd (or an attacker) polling /readyz costs
# one computation per interval, never one store round trip per request.
PUBLIC_READY_CACHE = 2.0
CACHE_KEY = "formrelay.readyz"


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """ok / degraded / unavailable (503: the queue storage does not answer, so nothing could be kept). Operators
    get the details; everyone else gets the word, cached for a couple of seconds.
    """
    if _operator():
        view = readiness()
        return jsonify(view), 503 if view["status"] == "unavailable" else 200
    status = _cached_status()
    return jsonify({"status": status}), 503 if status == "unavailable" else 200


def _cached_status() -> str:
    cache: dict[str, Any] = current_app.extensions.setdefault(CACHE_KEY, {"lock": threading.Lock(), "word": None})
    cached = cache["word"]
    if cached is not None and time.monotonic() - cached[0] < PUBLIC_READY_CACHE:
        return str(cached[1])
    lock: threading.Lock = cache["lock"]
    if cached is not None and not lock.acquire(blocking=False):
        return str(cached[1])  # another thread is computing it: the last word will do
    if cached is None:
        lock.acquire()
    try:
        status = str(readiness()["status"])
        cache["word"] = (time.monotonic(), status)
        return status
    finally:
        lock.release()


def readiness() -> dict[str, Any]:
    """Built from counts and in-memory state only (queue counters, breakers, caches): never a job body."""
    relay = current_relay()
    config = relay.config
    settings = relay.queue_settings
    queue: dict[str, Any] = {"storage": "redis" if config.relay.redis_url else "sqlite"}
    started = time.perf_counter()
    try:
        queue.update(relay.queue_stats(), ok=True)
    except Exception as exc:
        queue.update(ok=False, problem=logs.mask(f"{exc.__class__.__name__}: {exc}"))
    queue["checked_in_ms"] = round((time.perf_counter() - started) * 1000, 1)
    # Checked every few seconds on the watch's own thread: persistence, eviction, refused writes, a wiped store.
    health = watch_for(relay.store).start()
    queue["storage_health"] = health.view()
    providers: dict[str, dict[str, Any]] = {}
    for name, provider in relay.providers.items():
        state = _public(provider.status())
        guard = relay.guards.get(name)
        if guard is not None:
            state["breaker"] = _public(guard.breaker.view())
            state["in_flight"] = guard.bulkhead.in_use
            state["concurrency"] = guard.bulkhead.size
        providers[name] = state
    forms = {slug: _public(form.cache_state()) for slug, form in relay.forms.items()}
    problems: list[str] = []
    for name, state in providers.items():
        if state.get("state") == "failing":
            problems.append(f"{name}: authentication failing")
        if state.get("breaker", {}).get("state", "closed") != "closed":
            problems.append(f"{name}: circuit breaker {state['breaker']['state']}")
    problems += [f"form {slug}: definition {f['schema']}" for slug, f in forms.items()
                 if f["schema"] in ("failing", "stale")]
    if queue["ok"]:
        if queue["capacity_used"] >= 1.0:
            problems.append("queue full: new deferrals are answered 503")
        elif queue["capacity_used"] >= settings.warn_at:
            problems.append(f"queue {queue['capacity_used']:.0%} full")
        if (queue["oldest_age"] or 0) > settings.alert_after:
            problems.append(f"oldest queued submission waiting {queue['oldest_age']:.0f} s")
        if queue["dead_growing"]:
            problems.append("dead letters growing")
    problems += [f"queue storage: {text}" for text in health.problems.values()]
    limits = limiting.health(current_app)  # the rate-limit storage (issue 31): full or away is "degraded"
    if limits is not None:
        problems += limits["problems"]
    status = "unavailable" if not queue["ok"] else "degraded" if problems else "ok"
    return {
        **({"rate_limit": limits} if limits is not None else {}),
        "status": status,
        "problems": problems,
        "version": current_app.config.get("FORMRELAY_VERSION"),
        "config": {"source": config.source, "forms": len(config.forms), "providers": sorted(config.providers)},
        "queue": queue,
        "providers": providers,
        "forms": forms,
    }


def _public(state: dict[str, Any]) -> dict[str, Any]:
    """Strings masked once more: a provider's problem text must never carry a secret or a token."""
    return {k: logs.mask(v) if isinstance(v, str) else v for k, v in state.items()}

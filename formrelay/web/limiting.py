"""Per-client rate limits on submissions: cheap for names nobody configured, and never a 500.

- Form names in URLs go through the `form` route converter: the same shape `[forms.<slug>]` accepts (lowercase
  letters, digits, '-' and '_', at most 64 characters). Anything else is a 404 from routing, before the limiter
  or a view runs, so an over-long name is never stored anywhere.
- A name that fits the shape but is no configured form shares one bucket per client network: invented names
  make no new limiter keys (20,000 made-up names used to make 40,000).
- A storage error from the limiter (Redis gone, or full: `OutOfMemoryError` from its script under
  `noeviction`) falls back to counting in this process's memory, as Flask-Limiter does when Redis is away.
  Its own fallback has a race between threads that answered 500; `_Limiter` closes it.
- `health()` says whether the rate-limit storage counts (for /readyz) and `inspect()` what it is (for
  `formrelay check`): a full Redis is reported, and so is one shared with the queue.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from flask import Flask, request
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from werkzeug.routing import BaseConverter

from formrelay import abuse
from formrelay.core.config import SLUG, Config
from formrelay.delivery.relay import current_relay

log = logging.getLogger(__name__)

LIMITER = "formrelay.limiter"
HEALTH = "formrelay.limiter-health"
UNKNOWN_FORM = "?"  # the bucket every name that is no configured form shares (no slug may be "?")
HEALTH_TTL = 5.0  # Redis is asked at most this often (INFO memory), however often /readyz is polled


class FormSlugConverter(BaseConverter):
    """`<form:slug>`: what a `[forms.<slug>]` name may be; the rest never matches a route (404 from routing)."""

    regex = SLUG.pattern.removeprefix("^").removesuffix("$")


def init_converter(app: Flask) -> None:
    app.url_map.converters["form"] = FormSlugConverter


class _Limiter(Limiter):
    """Flask-Limiter, with its storage errors always ending in the in-memory fallback.

    Flask-Limiter falls back to memory when its storage raises, and tries the storage again with backoff. A full
    Redis still answers PING, so the storage looks "recovered", the next hit fails again, and a thread that hits
    while another has just marked the storage dead re-raises: a 500 with a traceback. Here such an error counts
    the request in memory instead (and, if even that fails, lets it through uncounted: a limit must never turn a
    supporter away with a 500).
    """

    def _check_request_limit(self, callable_name: str | None = None, in_middleware: bool = True) -> None:
        try:
            super()._check_request_limit(callable_name=callable_name, in_middleware=in_middleware)
        except RateLimitExceeded:
            raise
        except Exception as exc:
            if not self._in_memory_fallback_enabled:
                raise
            _note_storage_error(exc)
            # Flask-Limiter's own flag and per-request memo (private names, as of 3.5 to 4.1; the full-Redis test
            # through `formrelay serve` fails if a release renames them): count in memory, check Redis with backoff.
            self._storage_dead = True
            seen = getattr(getattr(self, "context", None), "seen_limits", None)
            if seen is not None:
                seen.clear()
            try:
                super()._check_request_limit(callable_name=callable_name, in_middleware=in_middleware)
            except RateLimitExceeded:
                raise
            except Exception as again:
                log.warning("rate limit: not counted (%s)", again.__class__.__name__)


_last_error: dict[str, Any] = {"at": 0.0, "kind": None}


def _note_storage_error(exc: BaseException) -> None:
    first = time.monotonic() - _last_error["at"] > 60
    _last_error.update(at=time.monotonic(), kind=exc.__class__.__name__)
    if first:  # one line a minute at most, and never a traceback (the request's path is no one's business)
        log.warning("rate limit: the storage refused a count (%s); counting in this process's memory",
                    exc.__class__.__name__)


def client_key() -> str:
    """`<form>:<client network>`; every name that is no configured form shares one bucket per network."""
    relay = current_relay()
    slug = (request.view_args or {}).get("slug", "")
    bucket = slug if slug in relay.config.forms else UNKNOWN_FORM
    return f"{bucket}:{abuse.client_network(request.remote_addr, relay.config.relay.ipv6_prefix)}"


def form_limit() -> str:
    relay = current_relay()
    slug = (request.view_args or {}).get("slug")
    form = relay.config.forms.get(slug) if isinstance(slug, str) else None
    if form is not None and form.rate_limit is not None:
        return form.rate_limit
    return relay.config.relay.rate_limit


def storage_uri(cfg: Config) -> str:
    return cfg.relay.rate_limit_storage or cfg.shared_storage


def init_limiter(app: Flask, cfg: Config) -> None:
    # The relay-wide rate (global_rate_limit) is not a Flask-Limiter limit any more: the relay counts only valid
    # submissions towards it, and queues those above it instead of refusing them (Relay.submit).
    per_client = bool(cfg.relay.rate_limit or any(form.rate_limit for form in cfg.forms.values()))
    if not per_client:
        return  # limits the config turns off cost nothing: Flask-Limiter's hooks would run on every request
    uri = storage_uri(cfg)
    remote = not uri.startswith("memory://")
    limiter = _Limiter(
        key_func=client_key,
        app=app,
        storage_uri=uri,
        # Redis away or full: count in this process's memory until it answers again (Flask-Limiter checks it
        # with backoff), rather than answer 500. Short socket timeouts so a hung Redis cannot hold submissions.
        in_memory_fallback_enabled=remote,
        storage_options={"socket_connect_timeout": 1, "socket_timeout": 1} if remote else {},
        # Our 429 handler sets Retry-After itself; the extension would add it to every answer.
        headers_enabled=False,
        strategy="moving-window",
        key_prefix="formrelay",
    )
    app.extensions[LIMITER] = limiter
    app.extensions[HEALTH] = _Health(uri)
    view: Any = app.view_functions["forms.submit"]
    view = limiter.limit(form_limit, key_func=client_key, methods=["POST"],
                         exempt_when=lambda: form_limit() == "")(view)
    app.view_functions["forms.submit"] = view


# -- health: /readyz and `formrelay check` ---------------------------------------------------------------


def _is_redis(uri: str) -> bool:
    return uri.startswith(("redis://", "rediss://"))


def _instance(uri: str) -> tuple[str | None, int]:
    """host and port: two databases of one Redis share its memory (maxmemory is per instance)."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    return parts.hostname, parts.port or 6379


def redis_memory(client: Any) -> dict[str, Any]:
    """used/max memory and the eviction policy; `full` when Redis refuses writes (noeviction, maxmemory reached)."""
    memory = client.info("memory")
    used, most = int(memory.get("used_memory") or 0), int(memory.get("maxmemory") or 0)
    policy = str(memory.get("maxmemory_policy") or "unknown")
    # Redis refuses a write when its memory is over maxmemory at that moment; a moment later it may be a little
    # under (buffers freed), so "full" is within 1% (at least 64 KB) of the limit: the next writes are refused.
    margin = max(64 * 1024, most // 100)
    return {"used_memory": used, "maxmemory": most, "maxmemory_policy": policy,
            "full": bool(most) and used >= most - margin and policy == "noeviction"}


class _Health:
    """What /readyz says about the rate-limit storage, from at most one INFO every HEALTH_TTL seconds."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._client: Any = None

    def view(self, limiter: Limiter) -> dict[str, Any]:
        state: dict[str, Any] = {"storage": self.uri.split(":", 1)[0], "problems": []}
        if getattr(limiter, "_storage_dead", False):
            state["problems"].append("rate-limit storage refused or did not answer: counting in each process's "
                                     f"memory ({_last_error['kind'] or 'no answer'})")
        if _is_redis(self.uri):
            memory = self._memory()
            state.update({k: v for k, v in memory.items() if k != "problem"})
            if memory.get("full"):
                state["problems"].append(
                    f"rate-limit Redis full (maxmemory {memory['maxmemory']} bytes reached, policy noeviction): it "
                    "refuses writes; give rate limits their own evicting Redis (rate_limit_storage)")
        state["ok"] = not state["problems"]
        return state

    def _memory(self) -> dict[str, Any]:
        cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < HEALTH_TTL:
            return cached[1]
        with self._lock:
            try:
                if self._client is None:
                    import redis

                    self._client = redis.Redis.from_url(self.uri, socket_connect_timeout=1, socket_timeout=1)
                memory = redis_memory(self._client)
            except Exception as exc:
                memory = {"problem": exc.__class__.__name__}
            self._cached = (time.monotonic(), memory)
            return memory


def health(app: Flask) -> dict[str, Any] | None:
    """The rate-limit storage's state for /readyz (None when no per-client limit is on)."""
    limiter = app.extensions.get(LIMITER)
    checker = app.extensions.get(HEALTH)
    if limiter is None or checker is None:
        return None
    return checker.view(limiter)


def inspect(cfg: Config) -> tuple[str, list[str], list[str]]:
    """For `formrelay check`: (what the rate-limit storage is, errors, warnings)."""
    uri = storage_uri(cfg)
    if not (cfg.relay.rate_limit or any(form.rate_limit for form in cfg.forms.values())):
        return "off (no per-client rate limit)", [], []
    if not _is_redis(uri):
        kind = uri.split(":", 1)[0]  # never the rest: a URI may carry a password
        return (f"{kind} (each process counts alone)" if kind == "memory" else kind), [], []
    from formrelay.delivery.storage_check import where

    import redis

    client = redis.Redis.from_url(uri, socket_connect_timeout=3, socket_timeout=3)
    errors: list[str] = []
    warnings: list[str] = []
    try:
        memory = redis_memory(client)
    except redis.RedisError as exc:
        return where(uri), [f"no answer from the rate-limit Redis ({exc.__class__.__name__})"], []
    finally:
        client.close()
    if memory["full"]:
        errors.append(f"the rate-limit Redis is full (maxmemory {memory['maxmemory']} bytes reached, policy "
                      "noeviction): it refuses writes")
    if cfg.relay.redis_url and _instance(uri) == _instance(cfg.relay.redis_url):
        warnings.append("rate-limit keys share the queue's Redis instance: a flood of posts spends the memory "
                        "queued submissions need; set [relay] rate_limit_storage to a Redis of their own with "
                        "maxmemory-policy allkeys-lru (docs/security.md)")
    elif memory["maxmemory_policy"] == "noeviction":
        warnings.append("the rate-limit Redis never evicts (noeviction): when it fills up, counts fall back to "
                        "each process's memory; an evicting policy (volatile-lru, allkeys-lru) suits rate limits")
    return f"{where(uri)} (maxmemory-policy {memory['maxmemory_policy']})", errors, warnings

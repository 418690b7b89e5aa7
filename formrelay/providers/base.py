"""The small interface every provider implements, and the HTTP plumbing they share."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, ClassVar

import requests
from marshmallow import Schema

from formrelay import metrics
from formrelay.core import logs
from formrelay.core.config import FormConfig, RelaySettings
from formrelay.core.errors import ProviderError
from formrelay.core.failure_memory import FailureMemory
from formrelay.forms.fields import Definition
from formrelay.forms.person import BY_TYPE, COMMON_NAMES, PersonMapping, match_fields
from formrelay.core.outcome import Outcome
from formrelay.forms.submission import Submission
from formrelay.transport import Answer, Upstream

log = logging.getLogger(__name__)

USER_AGENT = "formrelay/0.1 (+https://github.com/formrelay/formrelay)"


class Provider(ABC):
    """One upstream CRM: derives a form's definition, and delivers a validated submission to it.

    A provider is the only place that knows its upstream's URLs, payloads, authentication and answers.
    """

    name: ClassVar[str]
    settings_schema: ClassVar[type[Schema]]
    form_schema: ClassVar[type[Schema]]
    # False when a provider works without a [providers.<name>] table (all settings have defaults).
    needs_settings: ClassVar[bool] = True
    # What to do with a delivery that may have reached the provider before the answer was lost:
    # "retry" when the upstream deduplicates (people, signatures), "hold" when a retry could double it.
    uncertain_delivery: ClassVar[str] = "retry"

    def __init__(self, settings: Any, relay: RelaySettings) -> None:
        self.settings = settings
        self.relay = relay
        self.timeout = (relay.connect_timeout, relay.timeout)
        # Every call goes through requests' Session.send (formrelay/transport.py): no redirects, at most 1 MB of
        # answer, and a wall-clock deadline of connect_timeout + timeout for each exchange.
        self.upstream = Upstream(self.name, relay.connect_timeout, relay.timeout, USER_AGENT,
                                 setting=self.url_setting)
        self.http: requests.Session = self.upstream.session  # e.g. `self.http.auth = (user, key)`: Basic, encoded once

    @abstractmethod
    def definition(self, form: FormConfig) -> Definition:
        """The form's fields and fixed values, from upstream and/or config. Raises TryLater or DefinitionError."""

    @abstractmethod
    def deliver(self, form: FormConfig, definition: Definition, submission: Submission) -> Outcome:
        """Send one validated submission. Returns delivered/invalid/rejected, raises TryLater for 'not now'."""

    def person_mapping(self, form: FormConfig, definition: Definition) -> PersonMapping:
        """Which of the form's fields hold which part of the common person model (pure; see forms/person.py).

        The default matches common names ("first_name", "email", "postcode", ...); providers whose forms have
        fixed names say so in one function of their own. `[forms.x.person]` overrides are applied by the relay.
        """
        return match_fields(definition, COMMON_NAMES, custom="{key}", by_type=BY_TYPE)

    def uncertain_delivery_for(self, form: FormConfig) -> str:
        """The rule for a delivery that may have arrived: "retry" or "hold" (per form, e.g. per action type)."""
        return self.uncertain_delivery

    def queueable(self, form: FormConfig) -> bool:
        """False for forms whose submissions must not be stored (payment pages): they get 503, never 202."""
        return True

    def check(self, form: FormConfig) -> list[str]:
        """Problems an operator should know about (used by `formrelay check`); empty when all is well."""
        return []

    def warnings(self, form: FormConfig) -> list[str]:
        """Things `formrelay check` prints without failing: settings that work but look wrong, inferred paths."""
        return []

    def probe(self, form: FormConfig) -> str:
        """Ask the provider something harmless, for `formrelay check`: what answered. Raises ProviderError.

        The default is for providers whose definition comes from upstream: fetching it (which check has just
        done) already proved that the provider answers and accepts the relay's credentials.
        """
        return "answered (definition fetched)"

    def shared_tokens(self) -> list[SharedToken]:
        """The tokens this provider obtains, so the Relay can share them through its store."""
        return []

    def status(self) -> dict[str, Any]:
        """Secret-free state for the readiness view (e.g. auth state)."""
        return {}

    def timed_deliver(self, form: FormConfig, definition: Definition, submission: Submission) -> Outcome:
        """`deliver`, with the status and time of the upstream calls it made returned on its Outcome.

        A ProviderError carries them too (`upstream_status`, `upstream_ms`), so the request's log line says what
        the CRM answered and how long it took whichever way the attempt ended.
        """
        tally = _Tally()
        token = _TALLY.set(tally)
        try:
            outcome = self.deliver(form, definition, submission)
        except ProviderError as exc:
            exc.upstream_status, exc.upstream_ms = tally.status, tally.ms
            raise
        finally:
            _TALLY.reset(token)
        return dataclasses.replace(outcome, upstream_status=outcome.upstream_status or tally.status,
                                   upstream_ms=tally.ms)

    def request(self, method: str, url: str, *, headers: dict[str, str] | None = None, data: Any = None,
                json: Any = None) -> Answer:
        """One upstream call (transport.Upstream.call): an Answer read within bounds, else TryLater without URLs
        or secrets."""
        started = time.perf_counter()
        status: int | None = None
        try:
            answer = self.upstream.call(method, url, headers=headers, data=data, json=json)
            status = answer.status_code
            return answer
        finally:
            elapsed = time.perf_counter() - started
            metrics.UPSTREAM_SECONDS.labels(self.name, metrics.upstream_result(status)).observe(elapsed)
            tally = _TALLY.get()
            if tally is not None:
                tally.add(status, elapsed)

    def url_setting(self, url: str) -> str:
        """The setting an operator would change when `url` misbehaves (e.g. "[providers.ngp] base_url")."""
        best, length = "", 0
        for name in dir(self.settings):
            value = getattr(self.settings, name, None) if name.endswith("url") and not name.startswith("_") else None
            if isinstance(value, str) and value and url.startswith(value.rstrip("/")) and len(value) > length:
                best, length = name, len(value)
        return f"[providers.{self.name}] {best or 'URLs'}"

    def close(self) -> None:
        self.upstream.close()


class _Tally:
    """The upstream calls of one delivery attempt: the last status, and the time of all of them."""

    __slots__ = ("status", "seconds", "calls")

    def __init__(self) -> None:
        self.status: int | None = None
        self.seconds = 0.0
        self.calls = 0

    def add(self, status: int | None, seconds: float) -> None:
        self.status, self.seconds, self.calls = status, self.seconds + seconds, self.calls + 1

    @property
    def ms(self) -> float | None:
        return self.seconds * 1000 if self.calls else None


_TALLY: ContextVar[_Tally | None] = ContextVar("formrelay_upstream_tally", default=None)


class SharedToken:
    """A provider's session token: one for all threads, and, through the relay's store, for every worker and host.

    Without sharing, each gunicorn worker would authenticate on its own, and ENS counts every authenticate
    against the API user's 5,000 calls an hour. With the store attached (SQLite on one host, Redis across
    hosts) one process authenticates while the others wait briefly for its token. The token sits in the
    store until it expires; it is a session token, not the API key, and it is masked in logs like every
    other secret. If the store fails, the process authenticates for itself: a token is never worth a 503.
    """

    WAIT_FOR_PEER = 10.0  # seconds to wait for another process's authenticate before doing our own
    # After a failed authenticate, callers get the same failure at once for a while, doubling up to the cap:
    # a refused key is not fixed by asking again, and ENS counts every authenticate against the hourly limit.
    BACKOFF, BACKOFF_MAX = 5.0, 300.0

    def __init__(self, provider: str, identity: str, obtain: Callable[[], tuple[str, float]],
                 margin: Callable[[float], float]) -> None:
        self.key = f"token:{provider}:{hashlib.sha256(identity.encode()).hexdigest()[:24]}"
        self.obtain = obtain  # -> (token, lifetime in seconds); raises ProviderError
        self.margin = margin  # lifetime -> seconds to refresh before the end
        self.store: Callable[[], Any] | None = None  # set by the Relay: its outbox store
        self.token: str | None = None
        self.expires_at = 0.0  # wall clock: comparable across processes
        self.lock = threading.Lock()
        self.authentications = 0
        self.failed = FailureMemory(self.BACKOFF, self.BACKOFF_MAX)

    def get(self) -> str:
        token = self.token
        if token and time.time() < self.expires_at:
            return token
        self._raise_if_backing_off()
        with self.lock:
            if self.token and time.time() < self.expires_at:
                return self.token
            self._raise_if_backing_off()  # the thread before us just failed: no second authenticate
            store = self._store()
            shared = self._from_peers(store) if store is not None else None
            if shared is None:
                shared = self._authenticate(store)
            self.token, self.expires_at = shared
            return self.token

    def _raise_if_backing_off(self) -> None:
        self.failed.raise_if_remembered()

    def invalidate(self, token: str) -> None:
        with self.lock:
            if self.token == token:
                self.token, self.expires_at = None, 0.0
            store = self._store()
            if store is not None:
                try:
                    store.idem_forget(self.key, token)
                except Exception:
                    log.warning("%s: could not drop a refused token from the shared store", self.key)

    def _store(self) -> Any:
        if self.store is None:
            return None
        try:
            return self.store()
        except Exception:
            log.warning("%s: shared store unavailable; authenticating in this process", self.key)
            return None

    def _from_peers(self, store: Any) -> tuple[str, float] | None:
        """A live token another process stored, or None when this process is to authenticate (and has claimed it)."""
        deadline = time.monotonic() + self.WAIT_FOR_PEER
        while True:
            try:
                held = store.idem_claim(self.key, self.WAIT_FOR_PEER + 5)
            except Exception as exc:
                log.warning("%s: shared store unavailable (%s); authenticating in this process", self.key,
                            exc.__class__.__name__)
                return None
            if held is None:
                return None  # ours to fetch
            if held:
                stamp, _, token = held.partition(" ")
                try:
                    expires_at = float(stamp)
                except ValueError:
                    expires_at = 0.0
                if token and time.time() < expires_at:
                    logs.add_secrets([token])
                    return token, expires_at
                store.idem_forget(self.key, token)  # expired or unreadable: claim again
                continue
            if time.monotonic() > deadline:
                return None  # a peer's authenticate is stuck: do our own
            time.sleep(0.05)

    def _authenticate(self, store: Any) -> tuple[str, float]:
        try:
            token, lifetime = self.obtain()
        except Exception as exc:
            pause = self.failed.remember(exc)
            log.warning("%s: authentication failed; not trying again for %.0f s", self.key.rsplit(":", 1)[0], pause)
            if store is not None:
                try:
                    store.idem_release(self.key)
                except Exception:
                    pass
            raise
        except BaseException:
            if store is not None:
                try:
                    store.idem_release(self.key)
                except Exception:
                    pass
            raise
        self.authentications += 1
        self.failed.forget()
        usable = max(lifetime - self.margin(lifetime), 1.0)
        expires_at = time.time() + usable
        if store is not None:
            try:
                store.idem_store(self.key, f"{expires_at:.3f} {token}", usable)
            except Exception:
                log.warning("%s: could not share the new token", self.key)
        return token, expires_at


def may_have_arrived(status: int) -> bool:
    """Whether an error status leaves it unknown if the upstream acted: 500/502/504 do; 503, 429 and 4xx don't."""
    return status in (500, 502, 504)


def json_or_none(response: Answer) -> Any:
    """The decoded JSON body, or None when it is not JSON (an HTML error page, an empty body)."""
    try:
        return response.json()
    except ValueError:
        return None

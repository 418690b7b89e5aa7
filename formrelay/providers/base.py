"""The small interface every provider implements, and the HTTP plumbing they share."""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import urlencode, urlsplit

import requests
import requests.auth
from marshmallow import Schema
from requests.adapters import HTTPAdapter
from requests.cookies import RequestsCookieJar, extract_cookies_to_jar
from requests.structures import CaseInsensitiveDict
from urllib3 import Timeout
from urllib3.exceptions import (
    ClosedPoolError,
    ConnectTimeoutError,
    HTTPError,
    InvalidHeader,
    LocationValueError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    ResponseError,
    SSLError,
)

from formrelay import metrics
from formrelay.core import logs
from formrelay.core.config import FormConfig, RelaySettings
from formrelay.core.errors import TryLater
from formrelay.core.failure_memory import FailureMemory
from formrelay.forms.fields import Definition
from formrelay.forms.person import BY_TYPE, COMMON_NAMES, PersonMapping, match_fields
from formrelay.core.outcome import Outcome
from formrelay.forms.submission import Submission

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
        self.http = requests.Session()
        # Pooled keep-alive connections; retries are the relay's business (queue), not urllib3's.
        adapter = PooledAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
        self.http.mount("https://", adapter)
        self.http.mount("http://", adapter)
        self.http.headers["User-Agent"] = USER_AGENT
        # requests re-reads the proxy and CA variables from the environment on every call (about 0.2 ms and
        # 160 lookups a request, measured in benchmarks/profile.txt). They are read once per host instead
        # (HTTPS_PROXY, HTTP_PROXY, NO_PROXY: see _proxies) and once here for the CA bundle.
        self.http.trust_env = False
        self._proxies_by_host: dict[str, dict[str, str]] = {}
        self._urls: dict[str, str] = {}  # URL as written -> as requests prepares it (see _send)
        self._basic: tuple[Any, str] | None = None  # (credentials, their Authorization header)
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            self.http.verify = bundle

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

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One upstream call with the relay's timeouts; network failures become TryLater without URLs or secrets."""
        kwargs.setdefault("timeout", self.timeout)
        kwargs.setdefault("proxies", self._proxies(url))
        started = time.perf_counter()
        status: int | None = None
        try:
            response = self._send(method, url, **kwargs)
            status = response.status_code
            return response
        except requests.ConnectTimeout:
            raise TryLater(f"{self.name}: connection timed out") from None
        except requests.ReadTimeout:
            raise TryLater(f"{self.name}: no answer within {self.timeout[1]}s", may_have_arrived=True) from None
        except requests.ConnectionError as exc:
            # A connection dropped after the request was sent may have been processed upstream.
            sent = "Connection aborted" in str(exc) or "RemoteDisconnected" in str(exc)
            raise TryLater(f"{self.name}: connection failed", may_have_arrived=sent) from None
        except requests.RequestException as exc:
            raise TryLater(f"{self.name}: request failed ({exc.__class__.__name__})") from None
        finally:
            elapsed = time.perf_counter() - started
            metrics.UPSTREAM_SECONDS.labels(self.name, metrics.upstream_result(status)).observe(elapsed)
            note_upstream(status, elapsed)

    def _send(self, method: str, url: str, *, headers: dict[str, str] | None = None, data: Any = None,
              json: Any = None, timeout: Any = None, proxies: dict[str, str] | None = None,
              **rest: Any) -> requests.Response:
        """Session.request's work less what a provider call never uses, for a fifth less CPU per call.

        Measured (README "Performance"): requests' Session.request costs 0.52 ms of CPU per NGP post on loopback,
        most of it in merging settings the relay never varies (a typing-Protocol isinstance costs ~10 us on Python
        3.11 and runs several times), the cookie jar, re-parsing the same URL, and re-encoding the body. Here the
        session's headers and auth are applied to a request prepared step by step, the prepared URL is kept per
        URL, dict bodies are urlencoded as requests would, and the session's adapter sends it (so `responses`
        and every adapter setting apply). Redirects are still followed by the session, and cookies still kept:
        while the session holds a cookie, or for anything unusual (params, files, ...), the full path runs.
        """
        session = self.http
        if rest or session.cookies:
            return session.request(method, url, headers=headers, data=data, json=json, timeout=timeout,
                                   proxies=proxies, **rest)
        prepared = requests.PreparedRequest()
        prepared.method = method.upper()
        prepared.url = self._urls.get(url) or self._prepare_url(url)
        merged = dict(session.headers)
        if headers:
            merged.update(headers)
        if isinstance(data, dict | list):
            # What requests' _encode_params does with a dict or a list of pairs: None dropped, lists repeated, UTF-8.
            data = urlencode([(k, v) for k, vs in (data.items() if isinstance(data, dict) else data)
                              for v in (vs if hasattr(vs, "__iter__") and not isinstance(vs, str | bytes) else [vs])
                              if v is not None], doseq=True)
            if not any(name.lower() == "content-type" for name in merged):
                merged["Content-Type"] = "application/x-www-form-urlencoded"
        prepared.prepare_headers(merged)
        prepared.prepare_body(data, None, json)
        if isinstance(session.auth, tuple) and len(session.auth) == 2:
            # HTTP Basic (what requests makes of a pair), encoded once per credentials rather than per call
            if self._basic is None or self._basic[0] != session.auth:
                probe = requests.PreparedRequest()
                probe.headers = CaseInsensitiveDict()
                requests.auth.HTTPBasicAuth(*session.auth)(probe)
                self._basic = (session.auth, probe.headers["Authorization"])
            prepared.headers["Authorization"] = self._basic[1]
        elif session.auth:
            prepared.prepare_auth(session.auth, prepared.url)
        prepared.prepare_hooks(None)
        response = session.get_adapter(prepared.url).send(prepared, stream=False, timeout=timeout,
                                                          verify=session.verify, cert=session.cert,
                                                          proxies=proxies or {})
        if "set-cookie" in response.headers:
            extract_cookies_to_jar(session.cookies, prepared, response.raw)
        if response.is_redirect:
            prepared._cookies = RequestsCookieJar()  # the session's redirect code carries cookies in it
            history = [response, *session.resolve_redirects(response, prepared, timeout=timeout, verify=session.verify,
                                                             cert=session.cert, proxies=proxies or {})]
            response = history.pop()
            response.history = history
        response.content  # noqa: B018  (read now: the connection goes back to the pool, as Session.send does)
        return response

    def _prepare_url(self, url: str) -> str:
        prepared = requests.PreparedRequest()
        prepared.prepare_url(url, None)
        if len(self._urls) > 256:  # a bound, for providers whose URLs carry ids
            self._urls.clear()
        self._urls[url] = prepared.url or url
        return self._urls[url]

    def _proxies(self, url: str) -> dict[str, str]:
        host = urlsplit(url).netloc
        found = self._proxies_by_host.get(host)
        if found is None:
            found = self._proxies_by_host[host] = requests.utils.get_environ_proxies(url)
        return found

    def close(self) -> None:
        self.http.close()


def _requests_send_replaced() -> bool:
    """Whether something (responses or requests-mock in tests, a tracing library) has replaced requests' send.

    Judged by the function itself, not by one remembered at import: this module may first be imported while a
    mock is already active, and would then take the mock for requests' own send.
    """
    send = HTTPAdapter.send
    return not (getattr(send, "__module__", None) == "requests.adapters"
                and getattr(send, "__qualname__", None) == "HTTPAdapter.send")


class PooledAdapter(HTTPAdapter):
    """requests' adapter, with the pool key of each host and CA bundle worked out once instead of on every call.

    requests parses the URL and stats the CA bundle path (os.path.isdir, a system call that releases the GIL)
    for every request to find the connection pool; both depend only on the scheme, host, port and settings.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keys: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any]]] = {}
        self._pools: dict[tuple[Any, ...], Any] = {}  # the same key -> the pool urllib3 gave for it

    def build_connection_pool_key_attributes(self, request: requests.PreparedRequest, verify: Any,
                                             cert: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        parts = urlsplit(request.url or "")
        key = (parts.scheme, parts.netloc, verify if isinstance(verify, str | bool) else repr(verify),
               cert if isinstance(cert, str | tuple | type(None)) else repr(cert))
        found = self._keys.get(key)
        if found is None:
            if len(self._keys) > 64:
                self._keys.clear()
            found = self._keys[key] = super().build_connection_pool_key_attributes(request, verify, cert)
        # Copies: urllib3 may keep or change what it is given.
        return dict(found[0]), dict(found[1])

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        """requests' send for a body in memory and no proxy, with the answer read in one piece by urllib3.

        requests reads every answer as a stream (a generator of chunks joined again) and wraps the timeout,
        proxy and header steps in calls that do nothing here. Anything else goes to requests' own send, and
        so does every call while something has replaced requests' send (responses or requests-mock in tests,
        a tracing library in production): theirs is the one meant to run.
        """
        if (_requests_send_replaced() or stream or proxies
                or not isinstance(request.body, bytes | str | type(None))):
            return HTTPAdapter.send(self, request, stream=stream, timeout=timeout, verify=verify, cert=cert,
                                    proxies=proxies)
        parts = urlsplit(request.url or "")
        key = (parts.scheme, parts.netloc, verify if isinstance(verify, str | bool) else repr(verify),
               cert if isinstance(cert, str | tuple | type(None)) else repr(cert))
        pool = self._pools.get(key)
        if pool is None or pool.pool is None:  # first use, or closed by the pool manager (more hosts than it keeps)
            try:
                pool = self.get_connection_with_tls_context(request, verify, proxies=proxies, cert=cert)
            except LocationValueError as exc:
                raise requests.exceptions.InvalidURL(exc, request=request) from None
            if len(self._pools) > 64:
                self._pools.clear()
            self._pools[key] = pool
        self.cert_verify(pool, request.url, verify, cert)
        connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
        try:
            raw = pool.urlopen(method=request.method, url=request.path_url, body=request.body,
                               headers=request.headers, redirect=False, assert_same_host=False, preload_content=True,
                               decode_content=True, retries=self.max_retries,
                               timeout=Timeout(connect=connect, read=read), chunked=False)
        except (ProtocolError, OSError) as exc:
            raise requests.ConnectionError(exc, request=request) from None
        except MaxRetryError as exc:  # as requests maps it (max_retries=0 still wraps some errors in it)
            if isinstance(exc.reason, ConnectTimeoutError) and not isinstance(exc.reason, NewConnectionError):
                raise requests.ConnectTimeout(exc, request=request) from None
            if isinstance(exc.reason, ResponseError):
                raise requests.exceptions.RetryError(exc, request=request) from None
            if isinstance(exc.reason, SSLError):
                raise requests.exceptions.SSLError(exc, request=request) from None
            raise requests.ConnectionError(exc, request=request) from None
        except ClosedPoolError as exc:
            raise requests.ConnectionError(exc, request=request) from None
        except SSLError as exc:
            raise requests.exceptions.SSLError(exc, request=request) from None
        except ReadTimeoutError as exc:
            raise requests.ReadTimeout(exc, request=request) from None
        except HTTPError as exc:
            if isinstance(exc, InvalidHeader):
                raise requests.exceptions.InvalidHeader(exc, request=request) from None
            raise
        response = self.build_response(request, raw)
        response._content = raw.data  # already read (and decoded) by urllib3, as requests would on .content
        response._content_consumed = True
        return response


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


def note_upstream(status: int | None, seconds: float) -> None:
    """Remember the last upstream status and the total upstream time on the request, for its log line."""
    from flask import g, has_request_context

    if has_request_context():
        g.upstream_status = status
        g.upstream_ms = g.get("upstream_ms", 0.0) + seconds * 1000


def may_have_arrived(status: int) -> bool:
    """Whether an error status leaves it unknown if the upstream acted: 500/502/504 do; 503, 429 and 4xx don't."""
    return status in (500, 502, 504)


def json_or_none(response: requests.Response) -> Any:
    """The decoded JSON body, or None when it is not JSON (an HTML error page, an empty body)."""
    try:
        return response.json()
    except ValueError:
        return None

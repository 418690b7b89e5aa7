"""Upstream HTTP for providers and webhooks: requests' own Session.send, no redirects, bounded answers, deadlines.

Every call to a CRM or a webhook receiver goes through `requests.Session.send`, so whatever wraps it (OpenTelemetry's
requests instrumentation, ddtrace, a test's wrapper) sees it. Below it sits requests' own `HTTPAdapter`, with one
change made through urllib3's documented override points: each connection tells a watchdog which socket it uses,
so that an exchange still running when its wall-clock deadline passes is cut (the socket is shut down). Socket
timeouts alone bound each read, not the whole answer: a receiver sending one byte a second would pass them forever.

What a call promises (docs/upstream-calls.md):
- no redirect is followed: a 3xx is "try later" (the body of a 3xx is never read);
- at most `max_bytes` of an answer are read (decoded), streamed in chunks; more is "try later";
- connect + read timeouts per socket operation, and a deadline of their sum for the whole exchange.

Transport floor, under providers and webhooks: it knows requests and urllib3, and nothing of forms or the queue.
"""
from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
import requests.auth
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import MaxRetryError, ProtocolError

from formrelay.core.errors import TryLater

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 1_000_000  # what a provider may answer; JSON answers are a few KB
CHUNK = 16_384  # read size: also the most one read can hold beyond the bound


@dataclass(frozen=True)
class Answer:
    """An upstream answer read within the bounds: what providers look at (status, headers, the body's bytes)."""

    status_code: int
    headers: Mapping[str, str] = field(default_factory=CaseInsensitiveDict)
    content: bytes = b""

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON (UTF-8, -16 or -32, as json.loads detects); ValueError when it is not JSON."""
        return json.loads(self.content)


class Redirected(requests.RequestException):
    """Raised from the response hook for any 3xx, before requests would read its body or follow it."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def refuse_redirects(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    """A requests response hook: a 3xx ends the exchange here (closed, unread), whatever allow_redirects says.

    Session.send runs hooks before it looks at redirects; with allow_redirects=False it would still read the whole
    body of a 3xx (to prepare `response.next`), which a hostile answer could make any size.
    """
    if 300 <= response.status_code < 400:
        response.close()
        raise Redirected(response.status_code)


# ---- the deadline: a watchdog that shuts down the sockets of exchanges that outlived theirs ----

class _Exchange:
    """One call's deadline and the sockets it used (a new connection, or one taken from the pool)."""

    __slots__ = ("at", "socks", "expired", "done", "lock")

    def __init__(self, at: float) -> None:
        self.at = at
        self.socks: list[Any] = []
        self.expired = False
        self.done = False
        self.lock = threading.Lock()

    def watch(self, sock: Any) -> None:
        with self.lock:
            if sock not in self.socks:
                self.socks.append(sock)
            cut = self.expired
        if cut:
            _shut(sock)

    def finish(self) -> None:
        with self.lock:
            self.done = True
            self.socks.clear()

    def expire(self) -> None:
        with self.lock:
            if self.done:
                return
            self.expired = True
            socks = list(self.socks)
        for sock in socks:
            _shut(sock)


def _shut(sock: Any) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in recv: it reads EOF or an error
    except (OSError, AttributeError, ValueError):
        pass


_CURRENT: ContextVar[_Exchange | None] = ContextVar("formrelay_upstream_exchange", default=None)


class _Watchdog:
    """One daemon thread per process holding the deadlines of the calls in flight, earliest first."""

    def __init__(self) -> None:
        self._reset()
        # A worker forked while another thread held the lock would inherit it held: start afresh in the child.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._heap: list[tuple[float, int, _Exchange]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._pid = 0

    def add(self, exchange: _Exchange) -> None:
        with self._cond:
            if self._pid != os.getpid():  # first use in this process (a forked worker has no thread of its parent's)
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="formrelay-upstream-deadlines", daemon=True).start()
            heapq.heappush(self._heap, (exchange.at, next(self._seq), exchange))
            if self._heap[0][2] is exchange:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                at, _, exchange = self._heap[0]
                wait = at - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
            exchange.expire()


_WATCHDOG = _Watchdog()


def _watch_current(sock: Any) -> None:
    exchange = _CURRENT.get()
    if exchange is not None and sock is not None:
        exchange.watch(sock)


class _WatchedHTTPConnection(HTTPConnection):
    """urllib3's connection, reporting its socket to the call in flight (new or reused, before anything is sent)."""

    def connect(self) -> None:
        super().connect()
        _watch_current(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        _watch_current(self.sock)
        return super().request(*args, **kwargs)


class _WatchedHTTPSConnection(HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _watch_current(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> Any:
        _watch_current(self.sock)
        return super().request(*args, **kwargs)


class _Pool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_POOLS = {"http": _Pool, "https": _TLSPool}


class UpstreamAdapter(HTTPAdapter):
    """requests' HTTPAdapter whose pools use the watched connections (PoolManager.pool_classes_by_scheme)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools are urllib3's own; their sockets go unwatched
            manager.pool_classes_by_scheme = _POOLS
        return manager


# ---- one upstream: a pooled session and the call ----

class Upstream:
    """A pooled `requests.Session` for one provider or for the webhooks, and `call`, the one way to use it.

    `where` names the upstream in messages ("ngp", "webhook crm-sync"); `setting` says, for a URL, which setting
    an operator would fix when it redirects (e.g. "[providers.ngp] base_url"). Messages never hold a URL.
    """

    def __init__(self, where: str, connect_timeout: float, read_timeout: float, user_agent: str, *,
                 max_bytes: int = MAX_ANSWER_BYTES, pool_maxsize: int = 32,
                 setting: Callable[[str], str] | None = None) -> None:
        self.where = where
        self.timeout = (connect_timeout, read_timeout)
        self.deadline = connect_timeout + read_timeout  # wall clock for a whole exchange: connect to last byte
        self.max_bytes = max_bytes
        self.setting = setting or (lambda url: "the URL in the config")
        self.session = requests.Session()
        # Keep-alive pools; retries are the relay's business (the queue), never urllib3's.
        adapter = UpstreamAdapter(pool_connections=4, pool_maxsize=pool_maxsize, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self.session.headers["User-Agent"] = user_agent
        self.session.max_redirects = 0
        self.session.hooks["response"].append(refuse_redirects)
        # requests re-reads the proxy and CA variables from the environment on every call (about 0.2 ms and
        # 160 lookups a call). They are read once per host instead (HTTPS_PROXY, HTTP_PROXY, NO_PROXY: see
        # proxies_for) and once here for the CA bundle.
        self.session.trust_env = False
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            self.session.verify = bundle
        self._proxies: dict[str, dict[str, str]] = {}
        self._urls: dict[str, str] = {}  # URL as written -> as requests prepares it
        self._basic: tuple[Any, str] | None = None  # (credentials, their Authorization header), encoded once
        self._warned: set[tuple[str, str]] = set()

    def proxies_for(self, url: str) -> dict[str, str]:
        host = urlsplit(url).netloc
        found = self._proxies.get(host)
        if found is None:
            if len(self._proxies) > 256:
                self._proxies.clear()
            found = self._proxies[host] = requests.utils.get_environ_proxies(url)
        return found

    def prepare(self, method: str, url: str, headers: Mapping[str, str] | None = None, data: Any = None,
                json_body: Any = None) -> requests.PreparedRequest:
        """The request as Session.prepare_request would make it, less the per-call merging the relay never needs.

        The session's headers, auth and hooks apply; the prepared URL is kept per URL and Basic credentials are
        encoded once. While the session holds a cookie (a CRM's load balancer may set one), requests' own
        preparation runs, so that the cookie goes back.
        """
        session = self.session
        if session.cookies:
            return session.prepare_request(requests.Request(method, url, headers=dict(headers or {}), data=data,
                                                            json=json_body))
        prepared = requests.PreparedRequest()
        prepared.method = method.upper()
        prepared.url = self._urls.get(url) or self._prepare_url(url)
        merged = dict(session.headers)
        if headers:
            merged.update(headers)
        prepared.prepare_headers(merged)
        _prepare_body(prepared, data, json_body)
        auth = session.auth
        if isinstance(auth, tuple) and len(auth) == 2:
            if self._basic is None or self._basic[0] != auth:
                probe = requests.PreparedRequest()
                probe.headers = CaseInsensitiveDict()
                requests.auth.HTTPBasicAuth(*auth)(probe)
                self._basic = (auth, probe.headers["Authorization"])
            prepared.headers["Authorization"] = self._basic[1]
        elif auth:
            prepared.prepare_auth(auth, prepared.url)
        prepared.prepare_hooks(session.hooks)
        return prepared

    def _prepare_url(self, url: str) -> str:
        prepared = requests.PreparedRequest()
        prepared.prepare_url(url, None)
        if len(self._urls) > 256:  # a bound, for URLs that carry ids
            self._urls.clear()
        self._urls[url] = prepared.url or url
        return self._urls[url]

    def call(self, method: str, url: str, *, headers: Mapping[str, str] | None = None, data: Any = None,
             json: Any = None, read_body: bool = True, where: str | None = None) -> Answer:
        """One exchange through Session.send; TryLater for anything but an answer read in time and in bounds.

        `read_body=False` reads the status and headers only (webhooks: a receiver's body is of no use); `where`
        names the other end in messages when it is not the upstream's own name (one webhook among several).
        """
        where = where or self.where
        exchange = _Exchange(time.monotonic() + self.deadline)
        token = _CURRENT.set(exchange)
        _WATCHDOG.add(exchange)
        response: requests.Response | None = None
        try:
            try:
                prepared = self.prepare(method, url, headers, data, json)
                response = self.session.send(prepared, stream=True, timeout=self.timeout, allow_redirects=False,
                                             proxies=self.proxies_for(url))
                with response:
                    answer = self._read(response, read_body, where)
            except Redirected as exc:
                raise self._redirected(where, exc.status, url) from None
            except requests.ConnectTimeout:
                raise TryLater(f"{where}: connection timed out") from None
            except requests.RequestException as exc:
                if exchange.expired:
                    raise self._too_slow(where) from None
                if response is not None:  # the status came: the CRM has had the request
                    raise TryLater(f"{where}: the answer was cut off ({exc.__class__.__name__})",
                                   may_have_arrived=True) from None
                if isinstance(exc, requests.ReadTimeout):
                    raise TryLater(f"{where}: no answer within {self.timeout[1]:g} s",
                                   may_have_arrived=True) from None
                if isinstance(exc, requests.ConnectionError):
                    # A connection dropped after the request was sent may have been processed upstream.
                    raise TryLater(f"{where}: connection failed", may_have_arrived=_after_sending(exc)) from None
                raise TryLater(f"{where}: request failed ({exc.__class__.__name__})") from None
            if exchange.expired:  # the socket was cut: what was read may be a part taken for the whole
                raise self._too_slow(where)
            return answer
        finally:
            exchange.finish()
            _CURRENT.reset(token)

    def _read(self, response: requests.Response, read_body: bool, where: str) -> Answer:
        if not read_body:
            return Answer(response.status_code, response.headers)
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise self._too_large(where)
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_content(CHUNK):  # decoded: the bound holds for a compressed answer too
            size += len(chunk)
            if size > self.max_bytes:
                raise self._too_large(where)
            chunks.append(chunk)
        return Answer(response.status_code, response.headers, b"".join(chunks))

    def _too_large(self, where: str) -> TryLater:
        return TryLater(f"{where}: answer longer than {self.max_bytes:,} bytes; not read", may_have_arrived=True)

    def _too_slow(self, where: str) -> TryLater:
        return TryLater(f"{where}: no complete answer within {self.deadline:g} s", may_have_arrived=True)

    def _redirected(self, where: str, status: int, url: str) -> TryLater:
        setting = self.setting(url)
        if (where, setting) not in self._warned:  # once per setting and process: a wrong URL answers every call
            self._warned.add((where, setting))
            log.warning("%s: HTTP %s redirect not followed (calls follow no redirects): check %s", where,
                        status, setting)
        return TryLater(f"{where}: HTTP {status} redirect not followed; check {setting}")

    def close(self) -> None:
        self.session.close()


def _prepare_body(prepared: requests.PreparedRequest, data: Any, json_body: Any) -> None:
    """PreparedRequest.prepare_body's result for the bodies providers send, without its per-call type probing.

    requests 2.32+ checks each body against several typing Protocols (about 10 us each on Python 3.11) before it
    encodes a form the way done here: pairs or a dict, None dropped, lists repeated, UTF-8 (tests compare the bytes
    with requests' own). Anything else (files, streams, text) goes to prepare_body itself.
    """
    content_type = None
    if isinstance(data, dict | list) and data:
        pairs = data.items() if isinstance(data, dict) else data
        body: Any = urlencode([(k, v) for k, vs in pairs
                               for v in (vs if hasattr(vs, "__iter__") and not isinstance(vs, str | bytes) else [vs])
                               if v is not None], doseq=True)
        content_type = "application/x-www-form-urlencoded"
    elif isinstance(data, bytes) and data:
        body = data
    elif not data and json_body is not None:
        body = json.dumps(json_body, allow_nan=False).encode("utf-8")
        content_type = "application/json"
    elif not data:
        body = None
    else:
        prepared.prepare_body(data, None, json_body)
        return
    headers = prepared.headers
    if content_type is not None and "content-type" not in headers:
        headers["Content-Type"] = content_type
    prepared.body = body
    if body:
        headers["Content-Length"] = str(len(body))  # a form body is ASCII: characters are bytes
    elif prepared.method not in ("GET", "HEAD") and headers.get("Content-Length") is None:
        headers["Content-Length"] = "0"


def _after_sending(exc: requests.ConnectionError) -> bool:
    """Whether a connection error came after the request was sent (the answer was lost, the call may have acted).

    Judged by the urllib3 error requests wraps: a ProtocolError (connection aborted, remote disconnected) comes
    while waiting for the answer, a MaxRetryError around a NewConnectionError before anything was sent.
    """
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    return isinstance(reason, ProtocolError)

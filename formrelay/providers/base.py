"""The small interface every provider implements, and the HTTP plumbing they share."""
from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import requests
from marshmallow import Schema
from requests.adapters import HTTPAdapter

from formrelay import metrics
from formrelay.config import FormConfig, RelaySettings
from formrelay.errors import TryLater
from formrelay.fields import Definition
from formrelay.outcome import Outcome
from formrelay.submission import Submission

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
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
        self.http.mount("https://", adapter)
        self.http.mount("http://", adapter)
        self.http.headers["User-Agent"] = USER_AGENT

    @abstractmethod
    def definition(self, form: FormConfig) -> Definition:
        """The form's fields and fixed values, from upstream and/or config. Raises TryLater or DefinitionError."""

    @abstractmethod
    def deliver(self, form: FormConfig, definition: Definition, submission: Submission) -> Outcome:
        """Send one validated submission. Returns delivered/invalid/rejected, raises TryLater for 'not now'."""

    def uncertain_delivery_for(self, form: FormConfig) -> str:
        """The rule for a delivery that may have arrived: "retry" or "hold" (per form, e.g. per action type)."""
        return self.uncertain_delivery

    def queueable(self, form: FormConfig) -> bool:
        """False for forms whose submissions must not be stored (payment pages): they get 503, never 202."""
        return True

    def check(self, form: FormConfig) -> list[str]:
        """Problems an operator should know about (used by `formrelay check`); empty when all is well."""
        return []

    def probe(self, form: FormConfig) -> str:
        """Ask the provider something harmless, for `formrelay check`: what answered. Raises ProviderError.

        The default is for providers whose definition comes from upstream: fetching it (which check has just
        done) already proved that the provider answers and accepts the relay's credentials.
        """
        return "answered (definition fetched)"

    def status(self) -> dict[str, Any]:
        """Secret-free state for the readiness view (e.g. auth state)."""
        return {}

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One upstream call with the relay's timeouts; network failures become TryLater without URLs or secrets."""
        kwargs.setdefault("timeout", self.timeout)
        started = time.perf_counter()
        status: int | None = None
        try:
            response = self.http.request(method, url, **kwargs)
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

    def close(self) -> None:
        self.http.close()


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

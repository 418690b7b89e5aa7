"""The small interface every provider implements, and the HTTP plumbing they share."""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import requests
from marshmallow import Schema
from requests.adapters import HTTPAdapter

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

    def status(self) -> dict[str, Any]:
        """Secret-free state for the readiness view (e.g. auth state)."""
        return {}

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One upstream call with the relay's timeouts; network failures become TryLater without URLs or secrets."""
        kwargs.setdefault("timeout", self.timeout)
        try:
            return self.http.request(method, url, **kwargs)
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

    def close(self) -> None:
        self.http.close()


def may_have_arrived(status: int) -> bool:
    """Whether an error status leaves it unknown if the upstream acted: 500/502/504 do; 503, 429 and 4xx don't."""
    return status in (500, 502, 504)


def json_or_none(response: requests.Response) -> Any:
    """The decoded JSON body, or None when it is not JSON (an HTML error page, an empty body)."""
    try:
        return response.json()
    except ValueError:
        return None

"""Exceptions: HTTP-facing ones subclass werkzeug's, provider-facing ones share ProviderError."""
from __future__ import annotations

from collections.abc import Mapping

from werkzeug.exceptions import HTTPException


class RelayHTTPError(HTTPException):
    """An answer in the contract's shape; `status` is the contract's status word."""

    status = "error"

    def __init__(
        self,
        message: str | None = None,
        errors: Mapping[str, list[str]] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(description=message)
        self.message = message
        self.errors = errors
        self.retry_after = retry_after


class BadRequest(RelayHTTPError):
    code = 400
    status = "bad_request"


class Forbidden(RelayHTTPError):
    code = 403
    status = "forbidden"


class FormNotFound(RelayHTTPError):
    code = 404
    status = "not_found"


class TooLarge(RelayHTTPError):
    code = 413
    status = "too_large"


class UnsupportedMediaType(RelayHTTPError):
    code = 415
    status = "unsupported_media_type"


class Invalid(RelayHTTPError):
    code = 422
    status = "invalid"


class Unavailable(RelayHTTPError):
    code = 503
    status = "unavailable"


class ProviderError(Exception):
    """Base of what providers raise. Messages are for operators and hold no secret."""

    # Set as it leaves a delivery attempt (Provider.timed_deliver): the last upstream status and the time spent
    # in upstream calls, for the request's log line.
    upstream_status: int | None = None
    upstream_ms: float | None = None


class TryLater(ProviderError):
    """The provider could not take it now (timeout, 5xx, 429, auth outage, own budget): keep it and retry."""

    def __init__(self, reason: str, retry_after: float | None = None, *, may_have_arrived: bool = False,
                 misconfigured: bool = False, hold: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        # True when the request may have reached the provider (read timeout, connection cut mid-flight).
        self.may_have_arrived = may_have_arrived
        # The relay's own configuration is at fault (a refused key): the job keeps waiting, its tries are not
        # counted towards max_attempts, and only an operator's fix (or the provider's) ends it.
        self.misconfigured = misconfigured
        # Park the job for the operator (a dead letter saying "held", answered `queued`): the configuration names
        # something the provider does not have, and sending again unchanged cannot succeed.
        self.hold = hold


class DefinitionError(ProviderError):
    """A form's definition cannot be turned into a schema: a configuration problem."""

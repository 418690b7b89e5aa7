"""What the relay itself says to a supporter about a delivery (the CRM's own words come with its Outcome)."""
from __future__ import annotations

from formrelay.core.i18n import Msg
from formrelay.core.i18n import gettext as _
from formrelay.core.outcome import Outcome

QUEUED_MESSAGE = Msg("Thank you. We have your submission and will pass it on shortly.")
QUEUE_FULL = Msg("We cannot take submissions just now. Please try again in a few minutes.")
NOT_NOW = Msg("We could not send this just now. Please try again in a few minutes.")
# The reason a job is set aside rather than tried again: a retry could double what may have arrived.
HELD = "held for an operator: the delivery may have arrived and a retry could double it"
# ... and when the configuration names something the provider does not have: sending again unchanged cannot work.
HELD_CONFIG = "held for an operator: fix the configuration, then `formrelay queue retry`"


def queued(why: str) -> Outcome:
    """202: the submission is kept durably and will be delivered; `why` says which path queued it (detail)."""
    return Outcome("queued", message=_(QUEUED_MESSAGE), detail={"queued": why})

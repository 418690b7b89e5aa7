"""A failure remembered for a while: asking again at once would fail the same way and cost the upstream a call.

Used where a failure is not fixed by trying again soon and every try has a price: a form's definition fetch
(each waiting request would fetch again) and a provider's authentication (ENS counts every authenticate against
the API user's hourly limit). The pause doubles while the failures continue, up to a cap; a success forgets it.
"""
from __future__ import annotations

import copy
import time


class FailureMemory:
    """The last failure and until when it is raised again at once (first `first` seconds, doubling up to `cap`)."""

    def __init__(self, first: float, cap: float) -> None:
        self.first = first
        self.cap = cap
        self.failures = 0  # in a row
        self.failure: BaseException | None = None
        self.until = 0.0  # monotonic

    def remember(self, failure: BaseException) -> float:
        """Note one more failure in a row; the seconds it is now remembered for."""
        self.failures += 1
        pause = min(self.cap, self.first * 2 ** (self.failures - 1))
        self.failure, self.until = failure, time.monotonic() + pause
        return pause

    def forget(self) -> None:
        """It worked: the next failure is remembered for `first` seconds again."""
        self.failures, self.failure, self.until = 0, None, 0.0

    def raise_if_remembered(self) -> None:
        """Raise the remembered failure while its pause lasts."""
        failure = self.failure
        if failure is not None and time.monotonic() < self.until:
            # A copy: other threads may be raising the same failure at this moment (a raise sets __traceback__).
            raise copy.copy(failure)

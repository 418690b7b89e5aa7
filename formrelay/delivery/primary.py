"""The submission's own delivery: to the provider of the form it was sent to (job target "primary")."""
from __future__ import annotations

from formrelay.core.outcome import Outcome
from formrelay.delivery.attempts import Guard
from formrelay.delivery.form import Form
from formrelay.delivery.jobs import Job
from formrelay.delivery.targets import Kind, register
from formrelay.forms.submission import Submission

TARGET = "primary"


def deliver(form: Form, submission: Submission) -> Outcome:
    """One try at the form's own provider (the synchronous path calls this too). TryLater propagates; the
    Outcome (or the ProviderError) carries the attempt's upstream status and time, for the request's log line."""
    return form.provider.timed_deliver(form.config, form.definition, submission)


@register
class Primary(Kind):
    """The form's own provider: its breaker, its rule for a delivery that may have arrived."""

    order = 0
    own = True

    def owns(self, target: str) -> bool:
        return target == TARGET

    def attempt(self, form: Form, job: Job, submission: Submission) -> Outcome:
        return deliver(form, submission)

    def rule(self, form: Form, target: str) -> str:
        return str(form.provider.uncertain_delivery_for(form.config))

    def guard(self, form: Form, target: str) -> Guard | None:
        return self.site.guards.get(form.config.provider)

    def destination(self, form: Form, target: str) -> str:
        return form.config.provider

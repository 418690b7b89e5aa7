"""The follow-up email ([forms.x.followup]): sent after the form's own delivery, as a job of its own.

Which provider sends it is the providers package's to say (FOLLOWUP_SENDER); its breaker guards the job.
"""
from __future__ import annotations

import logging
from typing import Any, Protocol, cast

from formrelay.core.outcome import Outcome
from formrelay.delivery.attempts import Guard
from formrelay.delivery.form import Form
from formrelay.delivery.jobs import Job, new_job
from formrelay.delivery.stores import storage_down
from formrelay.delivery.targets import Kind, register
from formrelay.forms.fields import Definition
from formrelay.forms.submission import Submission
from formrelay.providers import FOLLOWUP_SENDER

log = logging.getLogger(__name__)

TARGET = "followup"


class Mailer(Protocol):
    """What the follow-up needs of the provider that sends it."""

    def send_followup(self, followup: Any, definition: Definition, submission: Submission) -> Outcome: ...


@register
class Followup(Kind):
    order = 10

    def owns(self, target: str) -> bool:
        return target == TARGET

    def attempt(self, form: Form, job: Job, submission: Submission) -> Outcome:
        if form.config.followup is None:
            raise ValueError(f"form {form.slug!r} has no follow-up any more")  # kept, backed off, then dead
        mailer = cast(Mailer, self.site.providers[FOLLOWUP_SENDER])
        return mailer.send_followup(form.config.followup, form.definition, submission)

    def rule(self, form: Form, target: str) -> str:
        return "hold"  # a repeated email is worse than an operator's look

    def guard(self, form: Form, target: str) -> Guard | None:
        return self.site.guards.get(FOLLOWUP_SENDER)

    def delivered(self, form: Form, submission: Submission) -> None:
        """Queue the follow-up: it can never delay, fail or repeat the form's own delivery."""
        if form.config.followup is None:
            return
        try:
            self.site.outbox.store.add(new_job(form.slug, TARGET, submission))
        except Exception as exc:
            if not storage_down(exc):
                raise
            log.error("form %s: could not queue the follow-up of %s: queue storage unavailable (%s)",
                      form.slug, submission.id, exc.__class__.__name__)

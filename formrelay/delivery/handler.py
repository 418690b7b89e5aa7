"""The worker-side handler: one attempt at a claimed job, and the job's new state in the store.

The Worker (worker.py) claims jobs and calls this with each; it knows nothing of forms or providers. The
attempt goes to the job's kind of target (targets.py), through that kind's breaker; its result settles the job:
delivered -> done (and the submission's other destinations queued), refused -> dead letter, not now -> backoff.
A handed-off synchronous attempt (dispatch.py) settles its job here too.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

from formrelay import metrics
from formrelay.budget import BudgetSpent
from formrelay.core.errors import ProviderError, TryLater
from formrelay.core.outcome import Outcome
from formrelay.delivery import retention
from formrelay.delivery.answers import HELD, HELD_CONFIG, QUEUED_MESSAGE
from formrelay.delivery.attempts import Breaker
from formrelay.delivery.capacity import Outbox
from formrelay.delivery.form import Form
from formrelay.delivery.jobs import Job, backoff, restore_submission
from formrelay.delivery.screening import Screening
from formrelay.delivery.targets import DeadLetter, Targets
from formrelay.forms.submission import Submission

log = logging.getLogger(__name__)


def judge(breaker: Breaker, result: Any) -> None:
    """What an attempt's result tells the provider's breaker: an answer is health, a 'not now' is a failure."""
    if isinstance(result, Outcome):
        breaker.succeeded()
    elif isinstance(result, BudgetSpent) or not isinstance(result, TryLater):
        breaker.abandon()  # our own budget, or a bug of ours: says nothing about the provider
    else:
        breaker.failed(result.reason)


def label(result: Any) -> str:
    """A worker attempt's result as the queue-attempts metric names it."""
    if isinstance(result, Outcome):
        return result.status
    if isinstance(result, DeadLetter):
        return "dead"
    return "not now" if isinstance(result, ProviderError) else "error"


class Handler:
    """Delivers one claimed job (the Worker's handler: call it with the job) and settles it in the store."""

    def __init__(self, forms: Mapping[str, Form], outbox: Outbox, targets: Targets, screening: Screening) -> None:
        self.forms = forms
        self.outbox = outbox
        self.targets = targets
        self.screening = screening

    def __call__(self, job: Job) -> None:
        self.work(job)

    def work(self, job: Job) -> None:
        """One worker attempt at a claimed job, through its provider's breaker (not while it is open)."""
        store = self.outbox.store
        form = self.forms.get(job.form)
        if form is None:
            store.bury(job, f"form {job.form!r} is no longer configured")
            return
        kind = self.targets.kind(job.target)
        if job.uncertain and kind.rule(form, job.target) == "hold":
            self.bury(form, job, f"an earlier attempt was cut off mid-flight; {HELD}")
            return
        guard = kind.guard(form, job.target)
        if guard is not None and not guard.breaker.allow():
            job.attempts -= 1  # not tried: it must not count towards max_attempts
            store.reschedule(job, time.time() + max(1.0, guard.breaker.retry_in()),
                             f"circuit breaker open: {guard.breaker.last_problem}")
            return
        submission = restore_submission(job.submission)
        try:
            result: Any = kind.attempt(form, job, submission)
        except Exception as exc:  # settled below: a bug must not lose the job
            result = exc
        if guard is not None:
            judge(guard.breaker, result)
        outcome = label(result)
        metrics.QUEUE_ATTEMPTS.labels(form.slug, job.target, outcome).inc()
        if not kind.own:
            metrics.DESTINATION_ATTEMPTS.labels(form.slug, kind.destination(form, job.target), outcome).inc()
        self.settle(form, job, submission, result)

    def settle(self, form: Form, job: Job, submission: Submission, result: Any) -> None:
        """A queued job's attempt ended: delivered -> done; refused -> dead letter; not now -> backoff."""
        kind = self.targets.kind(job.target)
        if isinstance(result, Outcome):
            if result.status == "delivered":
                if kind.own:
                    self.screening.remember_answer(form, result)  # the CRM answers again: a person is told this now
                    # Destination jobs first: should this process die before `finish`, the own delivery's retry
                    # makes them again, and Store.add keeps the ones already made (and done) as they are. Made
                    # first, they also keep the submission's data in the store until the last of them is done.
                    self.targets.delivered(form, submission)
                erased = retention.finish(self.outbox.store, job, result.status, self.outbox.settings)
                log.info("queue: job %s delivered to %s after %d attempt(s)%s", job.id,
                         kind.destination(form, job.target), job.attempts,
                         "; the submission's personal data erased from the queue" if erased else "")
            else:
                detail = f"{result.status}: {result.message or ''} {json.dumps(result.errors or {})}".strip()
                self.bury(form, job, f"refused by the provider ({detail})")
                log.warning("queue: job %s refused by %s: %s", job.id, form.config.provider, result.status)
        elif isinstance(result, DeadLetter):
            self.bury(form, job, str(result))
            log.warning("queue: job %s moved to dead letters: %s", job.id, result)
        elif isinstance(result, ProviderError):
            self.retry_later(form, job, result)
            if kind.own and form.provider.queueable(form.config):
                self.screening.remember_answer(form, Outcome("queued", message=QUEUED_MESSAGE))  # a person's now
        else:  # a bug must not lose the job: keep it and back off
            log.error("queue: job %s failed unexpectedly", job.id, exc_info=result)
            self.retry_later(form, job, TryLater(f"unexpected {result.__class__.__name__}"))

    def bury(self, form: Form, job: Job, reason: str) -> None:
        """To the dead letters; when it is the submission's own delivery, the other kinds hear it (webhooks)."""
        self.outbox.store.bury(job, reason)
        if self.targets.kind(job.target).own:
            self.targets.dead(form, job.submission, reason)

    def retry_later(self, form: Form, job: Job, exc: ProviderError) -> None:
        reason = exc.reason if isinstance(exc, TryLater) else str(exc)
        settings = self.outbox.settings
        may_have_arrived = isinstance(exc, TryLater) and exc.may_have_arrived
        if may_have_arrived:
            job.uncertain = True
        started = max(job.created_at, job.retried_at or 0.0)  # an operator's retry restarts max_age
        if isinstance(exc, TryLater) and exc.misconfigured:
            job.attempts = max(0, job.attempts - 1)  # waits for the operator's fix without using up its attempts
        if isinstance(exc, TryLater) and exc.hold:
            self.bury(form, job, f"{reason}; {HELD_CONFIG}")
        elif may_have_arrived and self.targets.kind(job.target).rule(form, job.target) == "hold":
            self.bury(form, job, f"{reason}; {HELD}")
        elif job.attempts >= settings.max_attempts or time.time() - started > settings.max_age:
            self.bury(form, job, f"gave up after {job.attempts} attempt(s): {reason}")
            log.error("queue: job %s moved to dead letters after %d attempts", job.id, job.attempts)
        else:
            retry_after = exc.retry_after if isinstance(exc, TryLater) else None
            delay = backoff(settings, job.attempts, retry_after)
            self.outbox.store.reschedule(job, time.time() + delay, reason)
            log.info("queue: job %s not delivered (%s); next try in %.1f s", job.id, reason, delay)

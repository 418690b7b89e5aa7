"""Dispatch: the synchronous delivery of a submission to its own provider, or its place in the queue.

The relay-wide surge limit, the provider's bulkhead (bounded concurrency) and its circuit breaker decide whether
to try now; the try runs in a bulkhead thread under the supporter's deadline (answer_within). Past it the job
is stored leased to the attempt still running (handed off), which settles it through the handler when it ends.
Whatever is not tried now is kept durably (202) when the form allows, else answered 503.
"""
from __future__ import annotations

import contextvars
import dataclasses
import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from formrelay import metrics
from formrelay.budget import Budget
from formrelay.core.config import Config, RelaySettings
from formrelay.core.errors import TryLater
from formrelay.core.i18n import gettext as _
from formrelay.core.outcome import Outcome
from formrelay.delivery import primary
from formrelay.delivery.answers import HELD, HELD_CONFIG, NOT_NOW, QUEUE_FULL, queued
from formrelay.delivery.attempts import AttemptThreads, Done, Guard
from formrelay.delivery.capacity import Outbox
from formrelay.delivery.form import Form
from formrelay.delivery.handler import Handler, judge
from formrelay.delivery.jobs import DEAD, INFLIGHT, Job, backoff, new_job
from formrelay.delivery.stores import storage_down
from formrelay.delivery.targets import Targets
from formrelay.forms.submission import Submission

if TYPE_CHECKING:
    from formrelay.providers.base import Provider

log = logging.getLogger(__name__)

# Retry-After of a 503 when neither the provider nor the queue could take a submission (seconds).
UNAVAILABLE_RETRY_AFTER = 30
HANDED_OFF = object()  # the attempt outlived the supporter's deadline and now settles its queued job itself


def attempt_bound(relay: RelaySettings, providers: Mapping[str, Provider]) -> float:
    """The longest one attempt can take: an authenticate, the delivery and a follow-up call, each up to the
    timeouts, after waiting for the provider's budget. A hand-off lease (and a half-open probe) outlives it."""
    budget_wait = max((float(getattr(p.settings, "budget_wait", 0.0) or 0.0) for p in providers.values()),
                      default=0.0)
    return 3 * (relay.connect_timeout + relay.timeout) + budget_wait + 5.0


class _Flight:
    """One synchronous attempt, shared by the request thread that waits for it and the thread that runs it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = Done()
        self.result: Any = None
        self.job: Job | None = None


class Dispatch:
    """Deliver now, else keep it durably (202), else 503."""

    def __init__(self, config: Config, outbox: Outbox, guards: Mapping[str, Guard], targets: Targets,
                 handler: Handler, bound: float) -> None:
        relay = config.relay
        self.outbox = outbox
        self.guards = guards
        self.targets = targets
        self.handler = handler
        self.answer_within = relay.answer_within
        self.attempt_bound = bound
        # Each bulkhead slot has a thread, so an attempt never waits for one.
        self._executor = AttemptThreads(max(1, relay.provider_concurrency * len(guards)), "formrelay-attempt")
        # Above the relay-wide rate valid submissions are queued (202), not refused: only those that passed the
        # origin check, parsing, validation and the spam traps reach this counter.
        self.surge = (Budget("relay-wide", relay.global_rate_limit, relay.rate_limit_storage or config.shared_storage)
                      if relay.global_rate_limit else None)

    def deliver(self, form: Form, submission: Submission) -> Outcome:
        """The synchronous path: surge, bulkhead and breaker decide whether to try now; the try runs under the
        supporter's deadline (answer_within), past which the job is queued leased to the attempt still running."""
        provider = form.config.provider
        queueable = form.provider.queueable(form.config)
        if queueable and self.surge is not None and not self._surge_allows():
            return self._not_now(form, submission, TryLater("above the relay-wide rate"), "surge", 0.0)
        guard = self.guards[provider]
        if not guard.bulkhead.try_enter():
            return self._not_now(form, submission, TryLater(f"{provider}: every upstream slot is busy",
                                                            retry_after=5), "bulkhead full", 0.0)
        if not guard.breaker.allow():
            guard.bulkhead.leave()
            wait = guard.breaker.retry_in()
            return self._not_now(form, submission, TryLater(
                f"{provider}: circuit breaker open ({guard.breaker.last_problem})", retry_after=max(1.0, wait)),
                "breaker open", wait)
        result = self._attempt_within(form, submission, guard, queueable)
        if result is HANDED_OFF:
            metrics.DEFERRALS.labels(provider, "deadline").inc()
            return queued("deadline")
        if isinstance(result, TryLater):
            log.warning("form %s: delivery of %s deferred: %s", form.slug, submission.id, result.reason)
            return dataclasses.replace(self._not_now(form, submission, result, "provider", None),
                                       upstream_status=result.upstream_status, upstream_ms=result.upstream_ms)
        if isinstance(result, BaseException):
            raise result
        if result.status == "delivered":
            self.targets.delivered(form, submission)
        outcome: Outcome = result
        return outcome

    def defer(self, form: Form, submission: Submission, reason: TryLater, why: str = "provider",
              due_in: float | None = None) -> Outcome | None:
        """Store the delivery durably, then answer 'queued'; 503 when the queue is at its cap; None when it must
        not (payment forms) or cannot (storage down) be stored."""
        if not form.provider.queueable(form.config):
            return None
        if self.outbox.full():
            metrics.QUEUE_REFUSALS.labels(form.slug).inc()
            log.error("form %s: the queue is at its cap; submission %s refused with 503", form.slug, submission.id)
            return Outcome("unavailable", message=_(QUEUE_FULL), retry_after=60, detail={"queued": "queue full"})
        job = new_job(form.slug, primary.TARGET, submission)
        job.attempts, job.uncertain = 1, reason.may_have_arrived  # the synchronous attempt counts
        if reason.misconfigured:
            job.attempts = 0  # the relay's configuration failed, not the delivery
        if reason.hold:
            job.state, job.last_error = DEAD, f"{reason.reason}; {HELD_CONFIG}"
            log.warning("form %s: submission %s %s", form.slug, submission.id, HELD_CONFIG)
        elif reason.may_have_arrived and self.targets.kind(job.target).rule(form, job.target) == "hold":
            job.state, job.last_error = DEAD, f"{reason.reason}; {HELD}"
            log.warning("form %s: submission %s %s", form.slug, submission.id, HELD)
        else:
            delay = due_in if due_in is not None else backoff(self.outbox.settings, 1, reason.retry_after)
            job.due_at = time.time() + delay
            job.last_error = reason.reason
        try:
            self.outbox.store.put(job)
        except Exception as exc:
            if not storage_down(exc):
                raise
            # One line, no traceback: during an outage every submission that must wait comes here.
            log.error("form %s: could not store submission %s: queue storage unavailable (%s)",
                      form.slug, submission.id, exc.__class__.__name__)
            return None
        metrics.DEFERRALS.labels(form.config.provider, why).inc()
        self.targets.queued(form, submission, reason.reason)
        if job.state == DEAD:
            self.targets.dead(form, job.submission, job.last_error or reason.reason)
        return queued(why)

    def _not_now(self, form: Form, submission: Submission, reason: TryLater, why: str,
                 due_in: float | None) -> Outcome:
        return self.defer(form, submission, reason, why, due_in) or Outcome(
            "unavailable", message=_(NOT_NOW),
            retry_after=max(1, int(reason.retry_after)) if reason.retry_after else UNAVAILABLE_RETRY_AFTER,
        )

    def _surge_allows(self) -> bool:
        assert self.surge is not None
        try:
            return self.surge.try_take()
        except Exception as exc:  # the counter's storage is down: deliver as usual rather than queue everything
            log.warning("relay-wide rate: storage unavailable (%s); not counting", exc.__class__.__name__)
            return True

    def _attempt_within(self, form: Form, submission: Submission, guard: Guard, queueable: bool) -> Any:
        """Run the attempt in a bulkhead thread; its result, or HANDED_OFF once the deadline passed and the job
        is stored leased to it. The caller holds a bulkhead slot, released here when the attempt ends."""
        flight = _Flight()

        def run() -> None:
            try:
                try:
                    result: Any = primary.deliver(form, submission)
                except BaseException as exc:  # handed to whoever settles it
                    result = exc
                judge(guard.breaker, result)
                with flight.lock:
                    flight.result, job = result, flight.job
                    flight.done.set()
                if job is not None:
                    try:
                        self.handler.settle(form, job, submission, result)
                    except Exception:  # the lease will hand the job out again: nothing is lost
                        log.exception("form %s: could not settle job %s; its lease will expire", form.slug, job.id)
            finally:
                guard.bulkhead.leave()

        # The request's context goes along: the supporter's language, for the words the provider's answer gives.
        context = contextvars.copy_context()
        self._executor.submit(lambda: context.run(run))
        if flight.done.wait(self.answer_within):
            return flight.result
        if queueable:
            with flight.lock:
                if flight.done.is_set():
                    return flight.result
                job = self._hand_off(form, submission)
                if job is not None:
                    flight.job = job
                    return HANDED_OFF
        flight.done.wait()  # nowhere to keep it (payment form, storage down): the supporter waits for the answer
        return flight.result

    def _hand_off(self, form: Form, submission: Submission) -> Job | None:
        """The job, stored leased to the attempt in flight: if this process dies, the lease expires and a worker
        takes it over as uncertain (the provider's rule decides); else the attempt settles it when it ends."""
        job = new_job(form.slug, primary.TARGET, submission)
        job.state, job.attempts = INFLIGHT, 1
        job.lease_until = time.time() + max(self.outbox.settings.lease, self.attempt_bound)
        job.last_error = f"no answer within {self.answer_within:g} s; the first attempt was still in flight"
        try:
            self.outbox.store.put(job)
        except Exception as exc:  # the supporter then waits for the attempt's own answer: nothing is promised
            if storage_down(exc):
                log.error("form %s: could not store submission %s past the deadline: queue storage unavailable "
                          "(%s)", form.slug, submission.id, exc.__class__.__name__)
            else:
                log.exception("form %s: could not store submission %s past the deadline", form.slug, submission.id)
            return None
        log.info("form %s: submission %s not answered within %.1f s; queued, leased to the attempt in flight",
                 form.slug, submission.id, self.answer_within)
        try:
            self.targets.queued(form, submission, job.last_error or "")
        except Exception:  # the supporter's answer does not depend on a webhook
            log.exception("form %s: could not tell the destinations that %s is queued", form.slug, submission.id)
        return job

    def close(self) -> None:
        self._executor.shutdown()

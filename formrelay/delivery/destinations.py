"""A form's other destinations: its `also` forms (another CRM) and its webhooks, each a queue job of its own.

When a submission's own provider has it (at once or from the queue), one job per destination goes into the
durable queue: `also:<form>` for each form named in `also`, `webhook:<name>/<event>` for each webhook that wants
the event. Each job has its own attempts, backoff, dead letter and an id made of the submission's id and the
destination, stored only if new (`Store.add`): so a failing second CRM never fails, delays or repeats the
first, a repeat of the first never repeats the second, and a webhook's `webhook-id` is the same on every retry.

Every job keeps the submission's id (`Job.submission_id`), so the operator's view can group them and personal
data can be erased once every job of a submission is finished. Both kinds register with the targets registry.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from formrelay.core.config import WebhookConfig
from formrelay.core.errors import Invalid
from formrelay.core.outcome import Outcome
from formrelay.delivery.form import Form
from formrelay.delivery.jobs import Job, new_job, restore_submission
from formrelay.delivery.stores import storage_down
from formrelay.delivery.targets import DeadLetter, Kind, Site, register
from formrelay.forms import attribution
from formrelay.forms.person import ACTION_KEYS, from_values, to_values
from formrelay.forms.submission import Submission
from formrelay.webhooks import WebhookSender, event_body, message_id

__all__ = ["ALSO", "WEBHOOK", "Also", "DeadLetter", "Webhook", "also_target", "coverage", "destination", "mapped",
           "webhook_target"]

log = logging.getLogger(__name__)

ALSO, WEBHOOK = "also:", "webhook:"


def also_target(slug: str) -> str:
    return f"{ALSO}{slug}"


def webhook_target(name: str, event: str) -> str:
    return f"{WEBHOOK}{name}/{event}"


def destination(target: str) -> str:
    """The destination a job's target names, as metrics and the operator's view show it (no event)."""
    if target.startswith(WEBHOOK):
        return target.rpartition("/")[0]
    return target


def _add(site: Site, form: Form, job: Job) -> None:
    """Store a destination job unless it exists; a failure is logged, never raised (the submission is in)."""
    try:
        if not site.outbox.store.add(job):
            log.info("form %s: %s of %s exists already; not made again", form.slug, job.target, job.submission_id)
    except Exception as exc:
        if storage_down(exc):  # one line during an outage, not a traceback per submission
            log.error("form %s: could not queue %s of %s: queue storage unavailable (%s)", form.slug,
                      job.target, job.submission_id, exc.__class__.__name__)
        else:
            log.exception("form %s: could not queue %s of %s", form.slug, job.target, job.submission_id)


def _storable(form: Form, submission: Submission) -> Submission:
    """What may be queued for other destinations: all of it, except from forms that must never be stored
    (payment pages), of which only the person (names, contact, address) goes on: never a card field."""
    if form.provider.queueable(form.config):
        return submission
    kept = set(form.person_mapping.fields.values())
    return replace(submission, values={k: v for k, v in submission.values.items() if k in kept})


@register
class Also(Kind):
    """`also:<form>`: the submission, mapped through the common person model, to another form's CRM."""

    order = 20

    def owns(self, target: str) -> bool:
        return target.startswith(ALSO)

    def destination(self, form: Form, target: str) -> str:
        return destination(target)

    def delivered(self, form: Form, submission: Submission) -> None:
        if not form.config.also:
            return
        kept = _storable(form, submission)
        for slug in form.config.also:
            _add(self.site, form, new_job(form.slug, also_target(slug), kept))

    def rule(self, form: Form, target: str) -> str:
        """For a job that may have arrived: `also` follows the other form's provider."""
        other = self.site.forms.get(target[len(ALSO):])
        return "hold" if other is None else str(other.provider.uncertain_delivery_for(other.config))

    def attempt(self, form: Form, job: Job, submission: Submission) -> Outcome:
        slug = job.target[len(ALSO):]
        other = self.site.forms.get(slug)
        if other is None:
            raise DeadLetter(f"form {slug!r} is no longer configured")
        return other.provider.deliver(other.config, other.definition, mapped(form, other, submission))


def mapped(form: Form, other: Form, submission: Submission) -> Submission:
    """The submission in the other form's fields, through the common person model, validated by that form."""
    values: dict[str, Any] = dict(to_values(other.person_mapping, from_values(form.person_mapping, submission.values)))
    # What the supporter wrote beside the person (a petition's comments) goes along where both forms have it.
    for key in ACTION_KEYS:
        mine, theirs = form.person_mapping.fields.get(key), other.person_mapping.fields.get(key)
        if mine and theirs and submission.values.get(mine) not in (None, ""):
            values[theirs] = submission.values[mine]
    try:
        checked = other.validate(values)
    except Invalid as exc:
        problems = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in (exc.errors or {}).items())
        raise DeadLetter(f"mapped to form {other.slug!r}, the submission is not valid there ({problems})") from None
    # One submission, several destinations: the same id, time and page context everywhere.
    return replace(checked, id=submission.id, received_at=submission.received_at, context=submission.context)


@register
class Webhook(Kind):
    """`webhook:<name>/<event>`: the event (delivered, queued, dead) posted to a receiver, signed."""

    order = 30

    def __init__(self, site: Site) -> None:
        super().__init__(site)
        self.sender = WebhookSender(site.config.relay, site.config.shared_storage)

    def owns(self, target: str) -> bool:
        return target.startswith(WEBHOOK)

    def destination(self, form: Form, target: str) -> str:
        return destination(target)

    def delivered(self, form: Form, submission: Submission) -> None:
        if form.config.webhooks:
            self._event(form, "delivered", _storable(form, submission),
                        {"status": "delivered", "provider": form.config.provider})

    def queued(self, form: Form, submission: Submission, reason: str) -> None:
        if form.config.webhooks:
            self._event(form, "queued", _storable(form, submission),
                        {"status": "queued", "provider": form.config.provider, "reason": reason})

    def dead(self, form: Form, submission: Mapping[str, Any], reason: str) -> None:
        self._event(form, "dead", restore_submission(submission),
                    {"status": "dead", "provider": form.config.provider, "reason": reason})

    def _event(self, form: Form, event: str, submission: Submission, outcome: dict[str, Any]) -> None:
        for hook in form.config.webhooks:
            if event not in hook.events:
                continue
            # Without personal data for this receiver, the queue does not keep any for it either.
            carried = submission if hook.include_personal_data else \
                replace(submission, values={}, context=attribution.without_personal_data(submission.context))
            _add(self.site, form, new_job(form.slug, webhook_target(hook.name, event), carried,
                                          detail={"outcome": outcome}))

    def attempt(self, form: Form, job: Job, submission: Submission) -> Outcome:
        name, _, event = job.target[len(WEBHOOK):].rpartition("/")
        hook: WebhookConfig | None = next((h for h in form.config.webhooks if h.name == name), None)
        if hook is None:
            raise DeadLetter(f"form {form.slug!r} has no webhook {name!r} any more")
        outcome = dict((job.detail or {}).get("outcome") or {})
        if not hook.include_personal_data:
            outcome.pop("reason", None)  # a provider's refusal may quote what the supporter typed
        body = event_body(event, job.created_at, form.slug, job.submission, outcome, hook.include_personal_data)
        return self.sender.send(form.slug, hook, message_id(job.id), body)

    def close(self) -> None:
        self.sender.close()


def coverage(form: Form, other: Form) -> tuple[list[str], list[str], list[str]]:
    """For `formrelay check`: the other form's fields the person model fills from this form; the required ones it
    can never fill (every `also` job of this pair would be a dead letter); and the required ones it fills only
    when the supporter gave an optional field here (those submissions' jobs would be dead letters)."""
    mine, theirs = form.person_mapping, other.person_mapping
    here = form.schema.fields
    by_name = {name: key for key, name in theirs.fields.items()}

    def source(name: str) -> str | None:
        """The field of this form that fills the other form's field `name`, if any."""
        key = by_name.get(name)
        if key is None:
            custom = theirs.custom_key(name)  # a custom field travels to the custom field of the same key
            key = f"custom.{custom}" if custom is not None else None
        found = mine.field_for(key) if key is not None else None
        return found if found in here else None

    filled, never, sometimes = [], [], []
    for name, f in other.schema.fields.items():
        origin = source(name)
        if origin is not None:
            filled.append(name)
        if not f.required:
            continue
        if origin is None:
            never.append(name)
        elif not here[origin].required:
            sometimes.append(f"{name} (from {origin}, optional here)")
    return filled, never, sometimes

"""A form's other destinations: its `also` forms (another CRM) and its webhooks, each a queue job of its own.

When a submission's own provider has it (at once or from the queue), one job per destination goes into the
durable queue: `also:<form>` for each form named in `also`, `webhook:<name>/<event>` for each webhook that wants
the event. Each job has its own attempts, backoff, dead letter and an id made of the submission's id and the
destination, stored only if new (`Store.add`): so a failing second CRM never fails, delays or repeats the
first, a repeat of the first never repeats the second, and a webhook's `webhook-id` is the same on every retry.

Every job keeps the submission's id (`Job.submission_id`), so the operator's view can group them and personal
data can be erased once every job of a submission is finished.

The relay (the module above this one's sibling) hands itself in; this module never imports it.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol

from formrelay.core.config import FormConfig, WebhookConfig
from formrelay.core.errors import Invalid
from formrelay.core.outcome import Outcome
from formrelay.delivery.jobs import Job, new_job, restore_submission
from formrelay.delivery.stores import Store, storage_down
from formrelay.forms import attribution
from formrelay.forms.person import ACTION_KEYS, PersonMapping, from_values, to_values
from formrelay.forms.submission import Submission
from formrelay.webhooks import WebhookSender, event_body, message_id

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


class DeadLetter(Exception):
    """This job cannot succeed as it stands (the mapped submission is invalid there, the destination is gone)."""


class FormLike(Protocol):
    """What this module needs of the relay's Form."""

    slug: str
    config: FormConfig
    provider: Any

    @property
    def person_mapping(self) -> PersonMapping: ...

    @property
    def definition(self) -> Any: ...

    def validate(self, body: Mapping[str, Any], idempotency_key: str | None = None) -> Submission: ...


class RelayLike(Protocol):
    """What this module needs of the relay: its forms, its store and its config."""

    config: Any

    @property
    def forms(self) -> Mapping[str, Any]: ...

    @property
    def store(self) -> Store: ...


class Destinations:
    """Makes the destination jobs of a form's submissions and makes one attempt at such a job."""

    def __init__(self, relay: RelayLike) -> None:
        self.relay = relay
        self.sender = WebhookSender(relay.config.relay, relay.config.shared_storage)

    @staticmethod
    def handles(target: str) -> bool:
        return target.startswith((ALSO, WEBHOOK))

    # -- making jobs -----------------------------------------------------------------------------------------

    def delivered(self, form: FormLike, submission: Submission) -> None:
        """The form's own provider has it: queue each `also` form, and the webhooks that want `delivered`."""
        if not form.config.also and not form.config.webhooks:
            return
        kept = self._storable(form, submission)
        for slug in form.config.also:
            self._add(form, new_job(form.slug, also_target(slug), kept))
        self._event(form, "delivered", kept, {"status": "delivered", "provider": form.config.provider})

    def queued(self, form: FormLike, submission: Submission, reason: str) -> None:
        """The relay answered 202: the webhooks that want `queued` hear it now."""
        if not form.config.webhooks:
            return
        self._event(form, "queued", self._storable(form, submission),
                    {"status": "queued", "provider": form.config.provider, "reason": reason})

    def dead(self, form: FormLike, submission: Mapping[str, Any], reason: str) -> None:
        """The submission's own delivery went to the dead letters: the webhooks that want `dead` hear it."""
        self._event(form, "dead", restore_submission(submission),
                    {"status": "dead", "provider": form.config.provider, "reason": reason})

    def _event(self, form: FormLike, event: str, submission: Submission, outcome: dict[str, Any]) -> None:
        for hook in form.config.webhooks:
            if event not in hook.events:
                continue
            # Without personal data for this receiver, the queue does not keep any for it either.
            carried = submission if hook.include_personal_data else \
                replace(submission, values={}, context=attribution.without_personal_data(submission.context))
            self._add(form, new_job(form.slug, webhook_target(hook.name, event), carried, detail={"outcome": outcome}))

    def _add(self, form: FormLike, job: Job) -> None:
        try:
            if not self.relay.store.add(job):
                log.info("form %s: %s of %s exists already; not made again", form.slug, job.target, job.submission_id)
        except Exception as exc:
            if storage_down(exc):  # one line during an outage, not a traceback per submission
                log.error("form %s: could not queue %s of %s: queue storage unavailable (%s)", form.slug,
                          job.target, job.submission_id, exc.__class__.__name__)
            else:
                log.exception("form %s: could not queue %s of %s", form.slug, job.target, job.submission_id)

    def _storable(self, form: FormLike, submission: Submission) -> Submission:
        """What may be queued for other destinations: all of it, except from forms that must never be stored
        (payment pages), of which only the person (names, contact, address) goes on: never a card field."""
        if form.provider.queueable(form.config):
            return submission
        mapped = set(form.person_mapping.fields.values())
        return replace(submission, values={k: v for k, v in submission.values.items() if k in mapped})

    # -- one attempt ------------------------------------------------------------------------------------------

    def rule(self, form: FormLike, target: str) -> str:
        """For a job that may have arrived: `also` follows the other form's provider; receivers deduplicate."""
        if target.startswith(ALSO):
            other = self.relay.forms.get(target[len(ALSO):])
            return "hold" if other is None else str(other.provider.uncertain_delivery_for(other.config))
        return "retry"

    def attempt(self, form: FormLike, job: Job) -> Outcome:
        """One try at a destination job. Raises TryLater (not now) or DeadLetter (never as it stands)."""
        if job.target.startswith(ALSO):
            return self._also(form, job)
        return self._webhook(form, job)

    def _also(self, form: FormLike, job: Job) -> Outcome:
        slug = job.target[len(ALSO):]
        other = self.relay.forms.get(slug)
        if other is None:
            raise DeadLetter(f"form {slug!r} is no longer configured")
        submission = restore_submission(job.submission)
        mapped = self.mapped(form, other, submission)
        return other.provider.deliver(other.config, other.definition, mapped)  # type: ignore[no-any-return]

    @staticmethod
    def mapped(form: FormLike, other: FormLike, submission: Submission) -> Submission:
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

    def _webhook(self, form: FormLike, job: Job) -> Outcome:
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


def coverage(form: FormLike, other: FormLike) -> tuple[list[str], list[str], list[str]]:
    """For `formrelay check`: the other form's fields the person model fills from this form; the required ones it
    can never fill (every `also` job of this pair would be a dead letter); and the required ones it fills only
    when the supporter gave an optional field here (those submissions' jobs would be dead letters)."""
    mine, theirs = form.person_mapping, other.person_mapping
    here = form.schema.fields  # type: ignore[attr-defined]
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
    for name, f in other.schema.fields.items():  # type: ignore[attr-defined]
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


def by_submission(jobs: list[Job]) -> dict[str, list[Job]]:
    """Jobs grouped by the submission they deliver (first seen first): the operator's view of destinations."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.submission_id, []).append(job)
    return groups

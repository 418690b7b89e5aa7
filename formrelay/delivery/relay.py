"""The relay: configured forms with their cached definitions and schemas, and the delivery of submissions."""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from marshmallow import ValidationError, fields

from formrelay import abuse, metrics
from formrelay.abuse import CAPTCHA_MESSAGE, TimeTrap
from formrelay.core.config import Config, FormConfig
from formrelay.core import i18n
from formrelay.core.errors import DefinitionError, Forbidden, FormNotFound, Invalid, ProviderError, TryLater
from formrelay.core.i18n import Msg
from formrelay.core.i18n import gettext as _
from formrelay.forms.fields import (
    WIDGET,
    Definition,
    FormSchema,
    build_schema,
    describe_schema,
    flatten_errors,
    relabel,
    shown,
)
from formrelay.core.outcome import Outcome
from formrelay.core.suggest import did_you_mean
from formrelay.forms.person import MappingError, PersonMapping, apply_overrides
from formrelay.providers import provider_class
from formrelay.delivery import admin, retention
from formrelay.delivery.destinations import DeadLetter, Destinations, destination
from formrelay.delivery.queue import (
    DEAD,
    Job,
    QueueSettings,
    Store,
    backoff,
    new_job,
    open_store,
    restore_submission,
    storage_down,
)
from formrelay.forms.osdi import read_osdi
from formrelay.forms.submission import OSDIBody, Submission, Value, reject_card_data, split_controls

if TYPE_CHECKING:
    from flask import Flask

    from formrelay.providers.base import Provider

log = logging.getLogger(__name__)

EXTENSION = "formrelay"
ONE_VALUE = Msg("Only one value is accepted.")


@dataclass(frozen=True)
class Loaded:
    """A definition and the schema derived from it, as fetched at one moment."""

    definition: Definition
    schema: FormSchema
    fetched_at: float
    person: PersonMapping = PersonMapping()


class Form:
    """One configured form: its provider, its definition (cached), its schema, and its validation."""

    def __init__(self, config: FormConfig, provider: Provider, relay_config: Config) -> None:
        self.config = config
        self.provider = provider
        self.slug = config.slug
        self._relay_config = relay_config
        self._loaded: Loaded | None = None
        self._lock = threading.Lock()
        self.last_error: str | None = None
        # What the provider last told a person who got through: a caught bot is shown the same words.
        self.success_message: str | None = None

    def loaded(self) -> Loaded:
        """The cached definition and schema; refreshed after schema_ttl, the stale one kept if the refresh fails."""
        current = self._loaded
        ttl = self._relay_config.relay.schema_ttl
        if current is not None and (ttl <= 0 or time.monotonic() - current.fetched_at < ttl):
            return current
        if current is not None and not self._lock.acquire(blocking=False):
            return current  # another thread is refreshing: keep serving the stale copy meanwhile
        if current is None:
            self._lock.acquire()
        try:
            current = self._loaded
            if current is not None and (ttl <= 0 or time.monotonic() - current.fetched_at < ttl):
                return current
            try:
                definition = self.provider.definition(self.config)
                person = self._person_mapping(definition)
            except ProviderError as exc:
                self.last_error = str(exc)
                if current is not None:
                    log.warning("form %s: definition refresh failed, keeping the cached one: %s", self.slug, exc)
                    self._loaded = Loaded(current.definition, current.schema, time.monotonic(), current.person)
                    return self._loaded
                raise
            definition = relabel(definition, self.config.labels)
            schema_cls = build_schema(self.slug, definition.fields, self._relay_config.relay.max_value_length)
            self._loaded = Loaded(definition, schema_cls(), time.monotonic(), person)
            self.last_error = None
            return self._loaded
        finally:
            self._lock.release()

    @property
    def definition(self) -> Definition:
        return self.loaded().definition

    @property
    def person_mapping(self) -> PersonMapping:
        """Which of this form's fields hold which part of the common person model (forms/person.py)."""
        return self.loaded().person

    def _person_mapping(self, definition: Definition) -> PersonMapping:
        """The provider's mapping with [forms.x.person] applied; a bad override is a definition problem."""
        try:
            return apply_overrides(self.provider.person_mapping(self.config, definition), self.config.person,
                                   [spec.name for spec in definition.fields])
        except MappingError as exc:
            raise DefinitionError(f"form {self.slug}: {exc}") from None

    def cache_state(self) -> dict[str, Any]:
        """For readiness: whether the schema is loaded, how old it is, and the last refresh problem."""
        current = self._loaded
        state: dict[str, Any] = {"provider": self.config.provider}
        if current is None:
            state["schema"] = "failing" if self.last_error else "not loaded yet"
        else:
            state["schema"] = "stale" if self.last_error else "cached"
            state["age"] = round(time.monotonic() - current.fetched_at, 1)
            state["fields"] = len(current.definition.fields)
        if self.last_error:
            state["problem"] = self.last_error
        return state

    @property
    def schema(self) -> FormSchema:
        return self.loaded().schema

    def _localized(self, table: Mapping[str, Any]) -> Any:
        return self.config.localized(table, i18n.current(), i18n.current_tag())

    def title(self, fetch: bool = True) -> str:
        """The title in the answer's language: the config's for that language, the config's, the CRM's."""
        local = self._localized(self.config.titles)
        if local or self.config.title or not fetch:
            return local or self.config.title or self.slug
        return self.definition.title or self.slug

    def describe(self) -> dict[str, Any]:
        """The public description (contract section 2), derived from the validating schema, in the answer's language."""
        described = describe_schema(self.schema)
        local: Mapping[str, str] = self._localized(self.config.labels_by_locale) or {}
        for item in described:
            if item["name"] in local:
                item["label"] = local[item["name"]]
        return {
            "form": self.slug,
            "provider": self.config.provider,
            "title": self.title(),
            "fields": described,
        }

    def labels(self) -> dict[str, str]:
        """Each field's label in the answer's language (config per language, else the relay's words translated)."""
        local: Mapping[str, str] = self._localized(self.config.labels_by_locale) or {}
        return {name: local.get(name) or shown(f.metadata.get("title", name)) for name, f in self.schema.fields.items()}

    def problems(self) -> list[str]:
        """Mistakes in the form's config that only its schema reveals (for `formrelay check`), with close names."""
        declared = list(self.schema.fields)
        return [
            f"aliases: {alias!r} points to {target!r}, which is not a field of this form{did_you_mean(target, declared)}"
            for alias, target in self.config.aliases.items() if target not in self.schema.fields
        ]

    def aliases(self) -> dict[str, str]:
        aliases = self.definition.aliases()
        aliases.update(self.config.aliases)
        return aliases

    def validate(self, body: Mapping[str, Value], idempotency_key: str | None = None) -> Submission:
        """Body -> Submission, or Invalid (422) with messages keyed by field name."""
        if isinstance(body, OSDIBody):
            return self._validate_osdi(body, idempotency_key)
        schema = self.schema
        declared = schema.fields
        values, controls, context = split_controls(body, set(declared))
        aliases = self.aliases()
        for alias, name in aliases.items():
            if alias in values and alias not in declared:
                aliased = values.pop(alias)
                values.setdefault(name, aliased)
        phone_fields = {n for n, f in declared.items() if f.metadata.get(WIDGET) == "tel"}
        reject_card_data(values, phone_fields)
        cleaned, errors = _normalise(values, declared)
        try:
            data = schema.load(cleaned)
        except ValidationError as err:
            messages = flatten_errors(err.messages if isinstance(err.messages, dict) else {"_form": err.messages})
            errors.update({k: v for k, v in messages.items() if k not in errors})
            data = None
        errors.update(_missing_one_of(self.definition, data if data is not None else cleaned, self.labels()))
        if errors:
            raise Invalid(_("Some fields need attention."), errors=errors)
        key = idempotency_key or controls.get("idempotency_key") or None
        # The answer's language tag goes with the submission, so a CRM that takes one hears it even from the queue.
        return Submission(form=self.slug, values=data or {}, context=context, idempotency_key=key,
                          locale=i18n.current_tag())


    def _validate_osdi(self, body: OSDIBody, idempotency_key: str | None) -> Submission:
        """An OSDI body: mapped to this form's fields, then validated exactly like a flat body; 422s name the OSDI path."""
        read = read_osdi(body, self.person_mapping, self.config.osdi)
        try:
            submission = self.validate(read.values, idempotency_key)
        except Invalid as exc:
            raise Invalid(exc.message, errors=read.annotate(exc.errors or {})) from None
        return replace(submission, page_options=read.page_options)


def _missing_one_of(definition: Definition, data: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for group in definition.one_of:
        if not any(data.get(name) not in (None, "", []) for name in group):
            message = Msg("Enter at least one of: {fields}.").format(fields=", ".join(labels.get(n, n) for n in group))
            for name in group:
                errors[name] = [message]
    return errors


def _normalise(values: Mapping[str, Value], declared: Mapping[str, fields.Field]) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Trim text, treat blank as absent, and give list fields lists and single fields one value."""
    out: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name, value in values.items():
        field = declared.get(name)
        if field is None:
            continue  # unknown fields are dropped, never forwarded
        items = value if isinstance(value, list) else [value]
        items = [v.strip() if isinstance(v, str) else v for v in items]
        items = [v for v in items if v != ""]
        if isinstance(field, fields.List):
            if items:
                out[name] = items
        elif len(items) == 1:
            out[name] = items[0]
        elif len(items) > 1:
            errors[name] = [_(ONE_VALUE)]
    return out, errors


# Retry-After of a 503 when neither the provider nor the queue could take a submission (seconds).
UNAVAILABLE_RETRY_AFTER = 30
QUEUED_MESSAGE = Msg("Thank you. We have your submission and will pass it on shortly.")
HELD = "held for an operator: the delivery may have arrived and a retry could double it"


class Relay:
    """The Flask extension: config, providers, forms and the durable queue, shared by every request."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.queue_settings: QueueSettings = config.queue or QueueSettings()
        self.providers: dict[str, Provider] = {}
        for name, settings in config.providers.items():
            cls = provider_class(name)
            assert cls is not None  # parse_config checked the name
            self.providers[name] = cls(settings, config.relay)
        self.forms: dict[str, Form] = {
            slug: Form(form, self.providers[form.provider], config) for slug, form in config.forms.items()
        }
        self._store: Store | None = None
        self._store_lock = threading.Lock()
        for provider in self.providers.values():
            for token in provider.shared_tokens():
                token.store = lambda: self.store  # one authenticate for every worker and host sharing the store
        self.time_trap = TimeTrap(config.relay.secret_key, config.relay.time_trap_min, config.relay.time_trap_max)
        # `also` forms and webhooks: each a queue job of its own, made when the form's own delivery is done
        self.destinations = Destinations(self)

    @property
    def store(self) -> Store:
        """The outbox (opened on first use, so that describing forms never touches it)."""
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    self._store = open_store(self.queue_settings, self.config.relay.redis_url, self.config.source)
        return self._store

    def init_app(self, app: Flask) -> None:
        app.extensions[EXTENSION] = self

    def form(self, slug: str) -> Form:
        try:
            return self.forms[slug]
        except KeyError:
            raise FormNotFound(_("There is no form by this name.")) from None

    def check_origin(self, form: Form, origin: str | None, referer: str | None, own: str) -> None:
        """403 for a browser post from a site the form does not allow (Origin, else Referer)."""
        allowed = self.config.origins_for(form.config)
        if not abuse.origin_allowed(origin, referer, own, allowed, self.config.relay.require_origin):
            abuse.count(form.slug, "origin not allowed")
            log.info("form %s: refused a post from an origin it does not allow", form.slug)
            raise Forbidden(_("This form does not accept submissions from this site."))

    def screen(self, form: Form, body: Mapping[str, Any], remote_ip: str | None) -> Outcome | None:
        """None for a person; for a bot the answer a person would get, with nothing delivered."""
        reason = None
        honeypot = body.get("_hp")
        if honeypot not in (None, "", []):
            reason = "honeypot filled"
        else:
            started = body.get("_started")
            reason = self.time_trap.verdict(form.slug, started if isinstance(started, str) else None,
                                            form.config.require_started)
        if reason:
            abuse.count(form.slug, reason)
            log.info("form %s: discarded a submission (%s)", form.slug, reason)
            return Outcome("delivered", message=form.success_message)
        captcha = form.config.captcha
        if captcha is None:
            return None
        token = body.get(captcha.field)
        verdict = abuse.verify_captcha(captcha, token if isinstance(token, str) else None, remote_ip,
                                       self.config.relay.timeout)
        if verdict == "ok" or (verdict == "unavailable" and captcha.on_error == "accept"):
            if verdict != "ok":
                log.warning("form %s: CAPTCHA service unavailable; accepting as configured", form.slug)
            return None
        abuse.count(form.slug, f"captcha {verdict}")
        if verdict == "unavailable":
            log.warning("form %s: CAPTCHA service unavailable; refusing as configured", form.slug)
            return Outcome("unavailable", message=_("Verification is unavailable just now. Please try again shortly."),
                           retry_after=30)
        return Outcome("invalid", message=_(CAPTCHA_MESSAGE), errors={captcha.field: [_(CAPTCHA_MESSAGE)]})

    def attempt(self, form: Form, submission: Submission, target: str = "primary") -> Outcome:
        """One delivery try of a submission to a target ("primary" = the form's provider). TryLater propagates."""
        if target == "primary":
            return form.provider.deliver(form.config, form.definition, submission)
        if target == "followup" and form.config.followup is not None:
            mailer = self.providers["engageone"]
            return mailer.send_followup(form.config.followup, form.definition, submission)  # type: ignore[attr-defined]
        raise ValueError(f"unknown delivery target {target!r}")

    def after_delivery(self, form: Form, submission: Submission) -> None:
        """Queue the follow-up email, `also` forms and webhooks as jobs of their own: none can delay, fail or
        repeat the primary, and (stored only if new) a repeat of this step never repeats them."""
        if form.config.followup is not None:
            try:
                self.store.add(new_job(form.slug, "followup", submission))
            except Exception as exc:
                if not storage_down(exc):
                    raise
                log.error("form %s: could not queue the follow-up of %s: queue storage unavailable (%s)",
                          form.slug, submission.id, exc.__class__.__name__)
        self.destinations.delivered(form, submission)

    def bury(self, form: Form, job: Job, reason: str) -> None:
        """To the dead letters; when it is the submission's own delivery, the webhooks that want `dead` hear it."""
        self.store.bury(job, reason)
        if job.target == "primary":
            self.destinations.dead(form, job.submission, reason)

    def rule(self, form: Form, target: str = "primary") -> str:
        if self.destinations.handles(target):
            return self.destinations.rule(form, target)
        if target == "followup":
            return "hold"  # a repeated email is worse than an operator's look
        return form.provider.uncertain_delivery_for(form.config)

    def defer(self, form: Form, submission: Submission, target: str, reason: TryLater) -> Outcome | None:
        """Store the delivery durably, then answer 'queued'; None when it must not or cannot be stored."""
        if not form.provider.queueable(form.config):
            return None
        job = new_job(form.slug, target, submission)
        job.attempts, job.uncertain = 1, reason.may_have_arrived  # the synchronous attempt counts
        if reason.may_have_arrived and self.rule(form) == "hold":
            job.state, job.last_error = DEAD, f"{reason.reason}; {HELD}"
            log.warning("form %s: submission %s %s", form.slug, submission.id, HELD)
        else:
            job.due_at = time.time() + backoff(self.queue_settings, 1, reason.retry_after)
            job.last_error = reason.reason
        try:
            self.store.put(job)
        except Exception as exc:
            if not storage_down(exc):
                raise
            # One line, no traceback: during an outage this happens for every submission that must wait.
            log.error("form %s: could not store submission %s: queue storage unavailable (%s)",
                      form.slug, submission.id, exc.__class__.__name__)
            return None
        if target == "primary":
            self.destinations.queued(form, submission, reason.reason)
            if job.state == DEAD:
                self.destinations.dead(form, job.submission, job.last_error or reason.reason)
        return Outcome("queued", message=_(QUEUED_MESSAGE))

    def submit(self, form: Form, submission: Submission) -> Outcome:
        """Deliver now, else keep it durably (202), else 503; repeats of an idempotency key get the first answer."""
        key = self._idempotency_key(form, submission)
        if key is not None:
            try:
                prior = self._claim_key(key)
            except Exception as exc:
                if not storage_down(exc):
                    raise
                # A healthy CRM still gets the submission: a rare duplicate beats turning a supporter away.
                log.warning("form %s: idempotency records unavailable (%s); delivering without one",
                            form.slug, exc.__class__.__name__)
                key, prior = None, None
            if prior is not None:
                return prior
        try:
            outcome = self._deliver_now(form, submission)
        except BaseException:
            if key is not None:
                self._forget_key(key)
            raise
        if key is not None:
            try:
                if outcome.status in ("delivered", "queued", "rejected"):
                    self.store.idem_store(key, json.dumps(outcome.public()), self.queue_settings.idempotency_ttl)
                else:
                    self.store.idem_release(key)  # invalid or unavailable: the supporter may fix it and send again
            except Exception as exc:
                if not storage_down(exc):
                    raise
                log.warning("form %s: could not record the answer for its idempotency key (%s)",
                            form.slug, exc.__class__.__name__)
        return outcome

    def _forget_key(self, key: str) -> None:
        try:
            self.store.idem_release(key)
        except Exception as exc:
            if not storage_down(exc):
                raise
            log.warning("could not release an idempotency key (%s)", exc.__class__.__name__)

    def _deliver_now(self, form: Form, submission: Submission) -> Outcome:
        try:
            outcome = self.attempt(form, submission)
        except TryLater as exc:
            log.warning("form %s: delivery of %s deferred: %s", form.slug, submission.id, exc.reason)
            return self.defer(form, submission, "primary", exc) or Outcome(
                "unavailable",
                message=_("We could not send this just now. Please try again in a few minutes."),
                retry_after=max(1, int(exc.retry_after)) if exc.retry_after else UNAVAILABLE_RETRY_AFTER,
            )
        if outcome.status == "delivered":
            form.success_message = outcome.message
            self.after_delivery(form, submission)
        return outcome

    def _idempotency_key(self, form: Form, submission: Submission) -> str | None:
        if not submission.idempotency_key:
            return None
        digest = hashlib.sha256(submission.idempotency_key.encode("utf-8", "replace")).hexdigest()
        return f"{form.slug}:{digest}"

    def _claim_key(self, key: str) -> Outcome | None:
        """None when this request owns the key; else the first request's answer (waiting briefly if in flight)."""
        ttl = self.queue_settings.idempotency_ttl
        deadline = time.monotonic() + self.config.relay.timeout + self.config.relay.connect_timeout
        while True:
            prior = self.store.idem_claim(key, ttl)
            if prior is None:
                return None
            if prior:
                body = json.loads(prior)
                return Outcome(body["status"], message=body.get("message"), redirect=body.get("redirect"),
                               errors=body.get("errors"), retry_after=body.get("retry_after"))
            if time.monotonic() > deadline:
                return Outcome("queued", message=_(QUEUED_MESSAGE))
            time.sleep(0.05)

    def work(self, job: Job) -> None:
        """One worker attempt at a claimed job: delivered -> done; refused -> dead letter; not now -> backoff."""
        form = self.forms.get(job.form)
        if form is None:
            self.store.bury(job, f"form {job.form!r} is no longer configured")
            return
        if job.uncertain and self.rule(form, job.target) == "hold":
            self.bury(form, job, f"an earlier attempt was cut off mid-flight; {HELD}")
            return
        submission = restore_submission(job.submission)
        try:
            if self.destinations.handles(job.target):
                outcome = self.destinations.attempt(form, job)
            else:
                outcome = self.attempt(form, submission, job.target)
        except DeadLetter as exc:
            self._count(form, job, "dead")
            self.bury(form, job, str(exc))
            log.warning("queue: job %s moved to dead letters: %s", job.id, exc)
            return
        except ProviderError as exc:
            self._count(form, job, "not now")
            self._retry_later(form, job, exc)
            return
        except Exception as exc:  # a bug must not lose the job: keep it and back off
            self._count(form, job, "error")
            log.exception("queue: job %s failed unexpectedly", job.id)
            self._retry_later(form, job, TryLater(f"unexpected {exc.__class__.__name__}"))
            return
        self._count(form, job, outcome.status)
        if outcome.status == "delivered":
            if job.target == "primary":
                # Destination jobs first: should this process die before `finish`, the primary's retry makes
                # them again, and Store.add keeps the ones already made (and done) as they are. Made first, they
                # also keep the submission's data in the store until the last of them is done (retention).
                self.after_delivery(form, submission)
            erased = retention.finish(self.store, job, outcome.status, self.queue_settings)
            log.info("queue: job %s delivered to %s after %d attempt(s)%s", job.id, destination(job.target)
                     if self.destinations.handles(job.target) else form.config.provider, job.attempts,
                     "; the submission's personal data erased from the queue" if erased else "")
        else:
            reason = f"{outcome.status}: {outcome.message or ''} {json.dumps(outcome.errors or {})}".strip()
            self.bury(form, job, f"refused by the provider ({reason})")
            log.warning("queue: job %s refused by %s: %s", job.id, form.config.provider, outcome.status)

    @staticmethod
    def _count(form: Form, job: Job, result: str) -> None:
        metrics.QUEUE_ATTEMPTS.labels(form.slug, job.target, result).inc()
        if job.target != "primary":
            metrics.DESTINATION_ATTEMPTS.labels(form.slug, destination(job.target), result).inc()

    def _retry_later(self, form: Form, job: Job, exc: ProviderError) -> None:
        reason = getattr(exc, "reason", str(exc))
        settings = self.queue_settings
        if isinstance(exc, TryLater) and exc.may_have_arrived:
            job.uncertain = True
        started = max(job.created_at, job.retried_at or 0.0)  # an operator's retry restarts max_age
        if isinstance(exc, TryLater) and exc.may_have_arrived and self.rule(form, job.target) == "hold":
            self.bury(form, job, f"{reason}; {HELD}")
        elif job.attempts >= settings.max_attempts or time.time() - started > settings.max_age:
            self.bury(form, job, f"gave up after {job.attempts} attempt(s): {reason}")
            log.error("queue: job %s moved to dead letters after %d attempts", job.id, job.attempts)
        else:
            retry_after = exc.retry_after if isinstance(exc, TryLater) else None
            delay = backoff(settings, job.attempts, retry_after)
            self.store.reschedule(job, time.time() + delay, reason)
            log.info("queue: job %s not delivered (%s); next try in %.1f s", job.id, reason, delay)

    def log_operator_actions(self) -> int:
        """Print into this server's log the actions the queue CLI recorded in the store (each by one process)."""
        return admin.emit_recorded(self.store)

    def sweep(self) -> int:
        """Erase what keep_done kept (or a crash left), drop old metadata: the worker calls it every 5 minutes."""
        return retention.sweep(self.store, self.queue_settings)

    def queue_stats(self) -> dict[str, Any]:
        """Depth, oldest waiting age and dead letters, for readiness and metrics."""
        stats = self.store.stats(time.time())
        return {"depth": stats.depth, "oldest_age": stats.oldest_age, "dead": stats.dead, "inflight": stats.inflight}

    def close(self) -> None:
        self.destinations.close()
        for provider in self.providers.values():
            provider.close()
        if self._store is not None:
            self._store.close()


def current_relay() -> Relay:
    from flask import current_app

    relay: Relay = current_app.extensions[EXTENSION]
    return relay

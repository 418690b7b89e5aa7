"""The relay: configured forms with their cached definitions and schemas, and the delivery of submissions."""
from __future__ import annotations

import dataclasses
import contextvars
import copy
import hashlib
import hmac
import json
import logging
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from marshmallow import ValidationError, fields

from formrelay import abuse, metrics
from formrelay.abuse import CAPTCHA_MESSAGE, RELOAD_MESSAGE, TOO_FAST_MESSAGE, TimeTrap, TrapCheck
from formrelay.budget import Budget, BudgetSpent
from formrelay.core import logs
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
from formrelay.delivery.attempts import OPEN, AttemptThreads, Breaker, Done, Guard
from formrelay.delivery.destinations import DeadLetter, Destinations, destination
from formrelay.delivery.jobs import DEAD, INFLIGHT, Job, backoff, new_job, restore_submission
from formrelay.delivery.settings import QueueSettings
from formrelay.delivery.stores import Store, open_store, storage_down
from formrelay.delivery.worker import Worker
from formrelay.forms import attribution
from formrelay.forms.cards import contains_card_number
from formrelay.forms.osdi import read_osdi
from formrelay.forms.submission import (
    OSDIBody,
    Submission,
    Value,
    reject_card_data,
    split_controls,
    without_card_numbers,
)

if TYPE_CHECKING:
    from flask import Flask

    from formrelay.providers.base import Provider

log = logging.getLogger(__name__)

EXTENSION = "formrelay"
ONE_VALUE = Msg("Only one value is accepted.")
# A failed definition fetch is remembered (503 at once) for this long, doubling while it keeps failing.
FAILURE_MEMORY, FAILURE_MEMORY_MAX = 5.0, 60.0
_WAIT_DEFAULT = object()


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
        self._fetching: threading.Event | None = None
        self._failure: ProviderError | None = None
        self._failures = 0
        self._failed_until = 0.0
        self.last_error: str | None = None
        # The answer the last person who got through was given (kept in the shared store too): a caught bot
        # is given the same, so that it cannot tell it was caught.
        self.last_answer: Outcome | None = None

    def loaded(self, wait: Any = _WAIT_DEFAULT) -> Loaded:
        """The cached definition and schema. One fetch per form at a time, in a thread of its own, so a provider
        that hangs holds no request thread longer than `wait` (default: answer_within; None: until it ends).
        After schema_ttl the stale copy is served while a refresh runs; a failed cold fetch is remembered briefly.
        """
        current = self._loaded
        ttl = self._relay_config.relay.schema_ttl
        if current is not None:
            if ttl > 0 and time.monotonic() - current.fetched_at >= ttl:
                self._fetch_in_background()
            return current
        failure = self._failure
        if failure is not None and time.monotonic() < self._failed_until:
            raise copy.copy(failure)  # remembered: a copy, since other threads raise the same failure at once
        done = self._fetch_in_background()
        limit = self._relay_config.relay.answer_within if wait is _WAIT_DEFAULT else wait
        if not done.wait(limit):
            raise TryLater(f"form {self.slug}: the definition is still being fetched from {self.config.provider}",
                           retry_after=5)
        if self._loaded is not None:
            return self._loaded
        failure = self._failure
        raise copy.copy(failure) if failure is not None else TryLater(f"form {self.slug}: no definition", retry_after=5)

    def _fetch_in_background(self) -> threading.Event:
        with self._lock:
            if self._fetching is not None:
                return self._fetching
            done = self._fetching = threading.Event()
        threading.Thread(target=self._fetch, args=(done,), name=f"formrelay-definition-{self.slug}",
                         daemon=True).start()
        return done

    def _fetch(self, done: threading.Event) -> None:
        try:
            try:
                definition = self.provider.definition(self.config)
                person = self._person_mapping(definition)
                definition = relabel(definition, self.config.labels)
                schema_cls = build_schema(self.slug, definition.fields, self._relay_config.relay.max_value_length)
            except ProviderError as exc:
                failure: ProviderError = exc
            except Exception as exc:  # a bug must not leave waiters hanging: it is a failure like any other
                log.exception("form %s: definition fetch failed unexpectedly", self.slug)
                failure = ProviderError(f"form {self.slug}: unexpected {exc.__class__.__name__} deriving the schema")
            else:
                self._loaded = Loaded(definition, schema_cls(), time.monotonic(), person)
                self.last_error, self._failure, self._failures, self._failed_until = None, None, 0, 0.0
                return
            self.last_error = str(failure)
            current = self._loaded
            if current is not None:
                log.warning("form %s: definition refresh failed, keeping the cached one: %s", self.slug, failure)
                self._loaded = Loaded(current.definition, current.schema, time.monotonic(), current.person)
                return
            self._failures += 1
            memory = min(FAILURE_MEMORY_MAX, FAILURE_MEMORY * 2 ** (self._failures - 1))
            self._failure, self._failed_until = failure, time.monotonic() + memory
            log.warning("form %s: definition fetch failed; answering 503 for %.0f s: %s", self.slug, memory, failure)
        finally:
            with self._lock:
                self._fetching = None
            done.set()

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
        values, controls, context = split_controls(
            body, set(declared), self.config.attribution,
            attribution.page_refs(self.config.options, self.definition.extra))  # the page URL's query: trimmed
        aliases = self.aliases()
        for alias, name in aliases.items():
            if alias in values and alias not in declared:
                aliased = values.pop(alias)
                values.setdefault(name, aliased)
        phone_fields = {n for n, f in declared.items() if f.metadata.get(WIDGET) == "tel"}
        reject_card_data(values, phone_fields)
        context, dropped = without_card_numbers(context)
        # The time-trap token is ours (signed, never stored); every other control is scanned.
        controls, dropped_controls = without_card_numbers({k: v for k, v in controls.items() if k != "started"})
        if idempotency_key and contains_card_number(idempotency_key):
            idempotency_key, dropped_controls = None, [*dropped_controls, "Idempotency-Key"]
        if dropped or dropped_controls:
            abuse.count(self.slug, "card number in context")
            # A count, not the names: a control's name is the client's (it may hold the card number, or a line feed).
            log.warning("form %s: dropped %d page value(s) and %d control(s): a card number is never forwarded, "
                        "stored or logged", self.slug, len(dropped), len(dropped_controls))
        cleaned, errors = _normalise(values, declared)
        try:
            data = schema.load(cleaned)
        except ValidationError as err:
            messages = flatten_errors(err.messages if isinstance(err.messages, dict) else {"_form": err.messages})
            errors.update({k: v for k, v in messages.items() if k not in errors})
            data = None
        if self.definition.one_of:  # the labels (translated per request) only name the fields of a group
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


SHARED_KEY_TTL = 100 * 365 * 24 * 3600.0  # for good: a new key would make every open page's token unverifiable
ANSWER_TTL = 30 * 24 * 3600.0  # how long the answer shown to bots outlives the last person's submission
# Retry-After of a 503 when neither the provider nor the queue could take a submission (seconds).
UNAVAILABLE_RETRY_AFTER = 30
QUEUED_MESSAGE = Msg("Thank you. We have your submission and will pass it on shortly.")
HELD = "held for an operator: the delivery may have arrived and a retry could double it"
HELD_CONFIG = "held for an operator: fix the configuration, then `formrelay queue retry`"
QUEUE_FULL = Msg("We cannot take submissions just now. Please try again in a few minutes.")
KEY_REUSED = Msg("This Idempotency-Key was already used for a different submission, so nothing new was sent. "
                 "Please send the form again.")
IN_PROGRESS = Msg("This submission is still being sent. Please wait a moment before trying again.")
HANDED_OFF = object()  # the attempt outlived the supporter's deadline and now settles its queued job itself


class _Flight:
    """One synchronous attempt, shared by the request thread that waits for it and the thread that runs it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.done = Done()
        self.result: Any = None
        self.job: Job | None = None


def _judge(breaker: Breaker, result: Any) -> None:
    """What an attempt's result tells the provider's breaker: an answer is health, a 'not now' is a failure."""
    if isinstance(result, Outcome):
        breaker.succeeded()
    elif isinstance(result, BudgetSpent) or not isinstance(result, TryLater):
        breaker.abandon()  # our own budget, or a bug of ours: says nothing about the provider
    else:
        breaker.failed(result.reason)


def fingerprint(submission: Submission) -> str:
    """What "the same body" means for an idempotency key: the validated values, canonically (controls and
    one-use tokens such as `_started` or a CAPTCHA answer are not the supporter's data)."""
    canonical = json.dumps(dict(submission.values), sort_keys=True, separators=(",", ":"), default=str)
    # Keyed with the idempotency key itself, which the store never holds (only its hash): the stored fingerprint
    # cannot be matched against guessed details (an email address) by whoever reads the store.
    secret = (submission.idempotency_key or "").encode("utf-8", "replace")
    return hmac.new(secret, canonical.encode("utf-8"), hashlib.sha256).hexdigest()


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
        self.time_trap = TimeTrap(config.relay.secret_key, config.relay.time_trap_min, config.relay.time_trap_max,
                                  shared_key=self._shared_time_trap_key)
        relay = config.relay
        self.answer_within = relay.answer_within
        # The longest one attempt can take: an ENS delivery may authenticate, process and record the origin,
        # each up to the timeouts, after waiting for the budget. A hand-off lease must outlive it.
        budget_wait = max((float(getattr(p.settings, "budget_wait", 0.0) or 0.0) for p in self.providers.values()),
                          default=0.0)
        self.attempt_bound = 3 * (relay.connect_timeout + relay.timeout) + budget_wait + 5.0
        self.guards: dict[str, Guard] = {
            name: Guard(name, relay.provider_concurrency, relay.breaker_failures, relay.breaker_reset,
                        self.attempt_bound) for name in self.providers
        }
        # Each bulkhead slot has a thread, so an attempt never waits for one.
        self._executor = AttemptThreads(max(1, relay.provider_concurrency * len(self.providers)), "formrelay-attempt")
        # Above the relay-wide rate valid submissions are queued (202), not refused: only those that passed the
        # origin check, parsing, validation and the spam traps reach this counter.
        self.surge = (Budget("relay-wide", relay.global_rate_limit, relay.rate_limit_storage or config.shared_storage)
                      if relay.global_rate_limit else None)
        self._stats: tuple[float, dict[str, Any]] | None = None
        self._stats_lock = threading.Lock()
        self._dead_seen: deque[tuple[float, int]] = deque(maxlen=4096)
        # `also` forms and webhooks: each a queue job of its own, made when the form's own delivery is done
        self.destinations = Destinations(self)

    def _shared_time_trap_key(self) -> str:
        """Without [relay] secret_key, one random key kept in the queue store: every worker (SQLite, one host) or
        every host (Redis) that shares the queue signs and verifies time-trap tokens with the same key."""
        key = self.store.kv_add("relay:time-trap-key", secrets.token_urlsafe(32), SHARED_KEY_TTL)
        logs.add_secrets([key])
        return key

    @property
    def store(self) -> Store:
        """The outbox, opened on first use (a description touches it once, for the shared time-trap key)."""
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

    def screen(self, form: Form, body: Mapping[str, Any], remote_ip: str | None,
               submission: Submission | None = None) -> Outcome | None:
        """None for a person; for a bot the answer a person would get, with nothing delivered.

        A person the traps cannot vouch for (too fast, a page open for days) is asked to send again, never
        silently dropped. The token's single use is claimed last, once nothing else can refuse the submission;
        `accept` frees it again when the submission does not go through, so the person can send it again.
        """
        honeypot = body.get("_hp")
        started = body.get("_started")
        check = TrapCheck("honeypot filled", fake=True) if honeypot not in (None, "", []) else \
            self.time_trap.check(form.slug, started if isinstance(started, str) else None, form.config.require_started)
        if check.reason:
            abuse.count(form.slug, check.reason)
            log.info("form %s: %s a submission (%s)", form.slug, "discarded" if check.fake else "asked again for",
                     check.reason)
            if check.fake:
                return self.bot_answer(form)
            if check.wait is not None:
                return Outcome("rate_limited", message=_(TOO_FAST_MESSAGE), retry_after=max(1, math.ceil(check.wait)))
            return Outcome("invalid", message=_(RELOAD_MESSAGE), errors={"_started": [_(RELOAD_MESSAGE)]})
        refused = self._check_captcha(form, body, remote_ip)
        if refused is not None:
            return refused
        if check.nonce and not self._use_once(form, check, submission):
            abuse.count(form.slug, "time-trap token reused")
            log.info("form %s: discarded a submission (time-trap token reused)", form.slug)
            return self.bot_answer(form)
        return None

    def _use_once(self, form: Form, check: TrapCheck, submission: Submission | None) -> bool:
        """Claim the token's nonce in the shared store; True unless another submission used it first.

        The same submission sent again (the same idempotency key: a retry after a lost answer) may reuse it:
        the idempotency record answers that one.
        """
        owner = (submission.idempotency_key or submission.id) if submission is not None else secrets.token_hex(8)
        try:
            return self.store.kv_add(f"started:{check.nonce}", owner, check.ttl) == owner
        except Exception as exc:  # the store cannot say: a person is never dropped for that
            log.warning("form %s: cannot record a time-trap token's use (%s); accepting the submission", form.slug,
                        exc.__class__.__name__)
            return True

    def accept(self, form: Form, body: Mapping[str, Any], submission: Submission) -> Outcome:
        """Submit a screened submission; then free its time-trap token unless it went through, and remember the
        answer for the bots."""
        try:
            outcome = self.submit(form, submission)
        except BaseException:
            self._free_token(form, body, submission)
            raise
        if outcome.ok:
            self.remember_answer(form, outcome)
        else:
            self._free_token(form, body, submission)
        return outcome

    def _free_token(self, form: Form, body: Mapping[str, Any], submission: Submission) -> None:
        started = body.get("_started")
        if not isinstance(started, str) or not started:
            return
        check = self.time_trap.check(form.slug, started, False)
        if check.nonce:
            try:
                self.store.kv_delete(f"started:{check.nonce}", submission.idempotency_key or submission.id)
            except Exception as exc:  # storage away: the token stays used, as a bot's replay would find it
                log.warning("form %s: cannot free a time-trap token (%s)", form.slug, exc.__class__.__name__)

    def remember_answer(self, form: Form, outcome: Outcome) -> None:
        """Keep what a person was just told (status, message, redirect), here and in the shared store.

        The relay's own words are kept as their English source and translated for each bot, so a bot hears the
        language it asked for, as a person would; a CRM's words are kept as they are (every person gets them).
        """
        message = outcome.message
        if message is not None and message in (QUEUED_MESSAGE, _(QUEUED_MESSAGE)):
            message = str(QUEUED_MESSAGE)
        answer = Outcome(outcome.status, message=message, redirect=outcome.redirect)
        if answer == form.last_answer:
            return
        form.last_answer = answer
        try:
            self.store.kv_set(f"answer:{form.slug}", json.dumps(answer.public()), ANSWER_TTL)
        except Exception as exc:  # storage away: this process still remembers it
            log.warning("form %s: cannot share the last answer (%s)", form.slug, exc.__class__.__name__)

    def bot_answer(self, form: Form) -> Outcome:
        """The answer a person would get now: the last one a person got, on any worker or host sharing the store."""
        shared = None
        try:
            shared = self.store.kv_get(f"answer:{form.slug}")
        except Exception as exc:  # storage away: this process's own memory of it
            log.warning("form %s: cannot read the last answer (%s)", form.slug, exc.__class__.__name__)
        answer = form.last_answer or Outcome("delivered")
        if shared:
            body = json.loads(shared)
            answer = Outcome(body["status"], message=body.get("message"), redirect=body.get("redirect"))
        guard = self.guards.get(form.config.provider)
        if guard is not None and guard.breaker.state == OPEN and form.provider.queueable(form.config):
            answer = Outcome("queued", message=QUEUED_MESSAGE)  # the CRM is failing: a person is queued now
        if answer.message == QUEUED_MESSAGE:
            answer = dataclasses.replace(answer, message=_(QUEUED_MESSAGE))
        return dataclasses.replace(answer, detail={"caught": True})  # detail is never shown

    def _check_captcha(self, form: Form, body: Mapping[str, Any], remote_ip: str | None) -> Outcome | None:
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
            return form.provider.timed_deliver(form.config, form.definition, submission)
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

    def defer(self, form: Form, submission: Submission, target: str, reason: TryLater, why: str = "provider",
              due_in: float | None = None) -> Outcome | None:
        """Store the delivery durably, then answer 'queued'; 503 when the queue is at its cap; None when it must
        not (payment forms) or cannot (storage down) be stored."""
        if not form.provider.queueable(form.config):
            return None
        if self.queue_full():
            metrics.QUEUE_REFUSALS.labels(form.slug).inc()
            log.error("form %s: the queue is at its cap; submission %s refused with 503", form.slug, submission.id)
            return Outcome("unavailable", message=_(QUEUE_FULL), retry_after=60, detail={"queued": "queue full"})
        job = new_job(form.slug, target, submission)
        job.attempts, job.uncertain = 1, reason.may_have_arrived  # the synchronous attempt counts
        if reason.misconfigured:
            job.attempts = 0  # the relay's configuration failed, not the delivery
        if reason.hold:
            job.state, job.last_error = DEAD, f"{reason.reason}; {HELD_CONFIG}"
            log.warning("form %s: submission %s %s", form.slug, submission.id, HELD_CONFIG)
        elif reason.may_have_arrived and self.rule(form) == "hold":
            job.state, job.last_error = DEAD, f"{reason.reason}; {HELD}"
            log.warning("form %s: submission %s %s", form.slug, submission.id, HELD)
        else:
            delay = due_in if due_in is not None else backoff(self.queue_settings, 1, reason.retry_after)
            job.due_at = time.time() + delay
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
        metrics.DEFERRALS.labels(form.config.provider, why).inc()
        if target == "primary":
            self.destinations.queued(form, submission, reason.reason)
            if job.state == DEAD:
                self.destinations.dead(form, job.submission, job.last_error or reason.reason)
        return Outcome("queued", message=_(QUEUED_MESSAGE), detail={"queued": why})

    def submit(self, form: Form, submission: Submission) -> Outcome:
        """Deliver now, else keep it durably (202), else 503. Idempotency keys follow the IETF draft: a repeat
        with the same body gets the first answer, another body 422, a repeat while the first is in flight 409."""
        key = self._idempotency_key(form, submission)
        fp = marker = ""
        if key is not None:
            fp = fingerprint(submission)
            marker = json.dumps({"fp": fp})
            try:
                prior = self._claim_key(form, key, fp, marker)
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
                self._forget_key(key, marker)
            raise
        if key is not None:
            try:
                if outcome.status in ("delivered", "queued", "rejected"):
                    record = {"fp": fp, "answer": outcome.public()}
                    self.store.idem_store(key, json.dumps(record), self.queue_settings.idempotency_ttl)
                else:  # invalid or unavailable: the supporter may fix it and send again
                    self.store.idem_release(key, marker)
            except Exception as exc:
                if not storage_down(exc):
                    raise
                log.warning("form %s: could not record the answer for its idempotency key (%s)",
                            form.slug, exc.__class__.__name__)
        return outcome

    def _forget_key(self, key: str, marker: str = "") -> None:
        try:
            self.store.idem_release(key, marker)
        except Exception as exc:
            if not storage_down(exc):
                raise
            log.warning("could not release an idempotency key (%s)", exc.__class__.__name__)

    def _deliver_now(self, form: Form, submission: Submission) -> Outcome:
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
            return Outcome("queued", message=_(QUEUED_MESSAGE), detail={"queued": "deadline"})
        if isinstance(result, TryLater):
            log.warning("form %s: delivery of %s deferred: %s", form.slug, submission.id, result.reason)
            return dataclasses.replace(self._not_now(form, submission, result, "provider", None),
                                       upstream_status=result.upstream_status, upstream_ms=result.upstream_ms)
        if isinstance(result, BaseException):
            raise result
        if result.status == "delivered":
            self.after_delivery(form, submission)
        outcome: Outcome = result
        return outcome

    def _not_now(self, form: Form, submission: Submission, reason: TryLater, why: str,
                 due_in: float | None) -> Outcome:
        return self.defer(form, submission, "primary", reason, why, due_in) or Outcome(
            "unavailable",
            message=_("We could not send this just now. Please try again in a few minutes."),
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
                    result: Any = self.attempt(form, submission)
                except BaseException as exc:  # handed to whoever settles it
                    result = exc
                _judge(guard.breaker, result)
                with flight.lock:
                    flight.result, job = result, flight.job
                    flight.done.set()
                if job is not None:
                    try:
                        self._settle(form, job, submission, result)
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
        job = new_job(form.slug, "primary", submission)
        job.state, job.attempts = INFLIGHT, 1
        job.lease_until = time.time() + max(self.queue_settings.lease, self.attempt_bound)
        job.last_error = f"no answer within {self.answer_within:g} s; the first attempt was still in flight"
        try:
            self.store.put(job)
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
            self.destinations.queued(form, submission, job.last_error or "")
        except Exception:  # the supporter's answer does not depend on a webhook
            log.exception("form %s: could not tell the destinations that %s is queued", form.slug, submission.id)
        return job

    def _settle(self, form: Form, job: Job, submission: Submission, result: Any) -> None:
        """A queued job's attempt ended: delivered -> done; refused -> dead letter; not now -> backoff."""
        if isinstance(result, Outcome):
            if result.status == "delivered":
                if job.target == "primary":
                    self.remember_answer(form, result)  # the CRM answers again: a person would be told this now
                    # Destination jobs first: should this process die before `finish`, the primary's retry makes
                    # them again, and Store.add keeps the ones already made (and done) as they are. Made first,
                    # they also keep the submission's data in the store until the last of them is done.
                    self.after_delivery(form, submission)
                erased = retention.finish(self.store, job, result.status, self.queue_settings)
                log.info("queue: job %s delivered to %s after %d attempt(s)%s", job.id, destination(job.target)
                         if self.destinations.handles(job.target) else form.config.provider, job.attempts,
                         "; the submission's personal data erased from the queue" if erased else "")
            else:
                detail = f"{result.status}: {result.message or ''} {json.dumps(result.errors or {})}".strip()
                self.bury(form, job, f"refused by the provider ({detail})")
                log.warning("queue: job %s refused by %s: %s", job.id, form.config.provider, result.status)
        elif isinstance(result, DeadLetter):
            self.bury(form, job, str(result))
            log.warning("queue: job %s moved to dead letters: %s", job.id, result)
        elif isinstance(result, ProviderError):
            self._retry_later(form, job, result)
            if job.target == "primary" and form.provider.queueable(form.config):
                self.remember_answer(form, Outcome("queued", message=QUEUED_MESSAGE))  # what a person gets now
        else:  # a bug must not lose the job: keep it and back off
            log.error("queue: job %s failed unexpectedly", job.id, exc_info=result)
            self._retry_later(form, job, TryLater(f"unexpected {result.__class__.__name__}"))

    def _idempotency_key(self, form: Form, submission: Submission) -> str | None:
        if not submission.idempotency_key:
            return None
        digest = hashlib.sha256(submission.idempotency_key.encode("utf-8", "replace")).hexdigest()
        return f"{form.slug}:{digest}"

    def _claim_key(self, form: Form, key: str, fp: str, marker: str) -> Outcome | None:
        """None when this request owns the key; else what a repeat gets (first answer, 422 or 409)."""
        ttl = self.queue_settings.idempotency_ttl
        # The first request answers within answer_within (then its answer is stored): wait that long for it.
        deadline = time.monotonic() + self.answer_within + 1.0
        while True:
            prior = self.store.idem_claim(key, ttl, marker)
            if prior is None:
                return None
            record = _idem_record(prior)
            if record.get("fp") and record["fp"] != fp:
                return self._repeat(form, "another body", Outcome(
                    "invalid", message=_(KEY_REUSED), errors={"_idempotency_key": [_(KEY_REUSED)]}))
            answer = record.get("answer")
            if isinstance(answer, dict):
                return self._repeat(form, "first answer", Outcome(
                    answer["status"], message=answer.get("message"), redirect=answer.get("redirect"),
                    errors=answer.get("errors"), retry_after=answer.get("retry_after")))
            if time.monotonic() > deadline:
                return self._repeat(form, "in progress", Outcome("conflict", message=_(IN_PROGRESS), retry_after=1))
            time.sleep(0.05)

    def _repeat(self, form: Form, kind: str, outcome: Outcome) -> Outcome:
        metrics.REPEATS.labels(form.slug, kind).inc()
        return Outcome(outcome.status, message=outcome.message, redirect=outcome.redirect, errors=outcome.errors,
                       retry_after=outcome.retry_after, detail={"repeat": kind})

    def work(self, job: Job) -> None:
        """One worker attempt at a claimed job, through the provider's breaker (not while it is open)."""
        form = self.forms.get(job.form)
        if form is None:
            self.store.bury(job, f"form {job.form!r} is no longer configured")
            return
        if job.uncertain and self.rule(form, job.target) == "hold":
            self.bury(form, job, f"an earlier attempt was cut off mid-flight; {HELD}")
            return
        guard = self._guard_for(form, job.target)
        if guard is not None and not guard.breaker.allow():
            job.attempts -= 1  # not tried: it must not count towards max_attempts
            self.store.reschedule(job, time.time() + max(1.0, guard.breaker.retry_in()),
                                  f"circuit breaker open: {guard.breaker.last_problem}")
            return
        submission = restore_submission(job.submission)
        try:
            if self.destinations.handles(job.target):
                result: Any = self.destinations.attempt(form, job)
            else:
                result = self.attempt(form, submission, job.target)
        except Exception as exc:  # settled below: a bug must not lose the job
            result = exc
        if guard is not None:
            _judge(guard.breaker, result)
        self._count(form, job, _label(result))
        self._settle(form, job, submission, result)

    def _guard_for(self, form: Form, target: str) -> Guard | None:
        """The breaker a job's calls go through: the form's provider, EngageOne for a follow-up; destinations
        (other forms, webhooks) are judged by their own jobs' backoff."""
        if target == "primary":
            return self.guards.get(form.config.provider)
        if target == "followup":
            return self.guards.get("engageone")
        return None

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
        if isinstance(exc, TryLater) and exc.misconfigured:
            job.attempts = max(0, job.attempts - 1)  # waits for the operator's fix without using up its attempts
        if isinstance(exc, TryLater) and exc.hold:
            self.bury(form, job, f"{reason}; {HELD_CONFIG}")
        elif isinstance(exc, TryLater) and exc.may_have_arrived and self.rule(form, job.target) == "hold":
            self.bury(form, job, f"{reason}; {HELD}")
        elif job.attempts >= settings.max_attempts or time.time() - started > settings.max_age:
            self.bury(form, job, f"gave up after {job.attempts} attempt(s): {reason}")
            log.error("queue: job %s moved to dead letters after %d attempts", job.id, job.attempts)
        else:
            retry_after = exc.retry_after if isinstance(exc, TryLater) else None
            delay = backoff(settings, job.attempts, retry_after)
            self.store.reschedule(job, time.time() + delay, reason)
            log.info("queue: job %s not delivered (%s); next try in %.1f s", job.id, reason, delay)

    def worker(self, threads: int | None = None) -> Worker:
        """The queue worker that delivers this relay's jobs (not started): threads in `serve`, or `formrelay worker`."""
        return Worker(self.store, self.work, self.queue_settings, threads,
                      log_actions=self.log_operator_actions, sweep=self.sweep)

    def log_operator_actions(self) -> int:
        """Print into this server's log the actions the queue CLI recorded in the store (each by one process)."""
        return admin.emit_recorded(self.store)

    def sweep(self) -> int:
        """Erase what keep_done kept (or a crash left), drop old metadata: the worker calls it every 5 minutes."""
        return retention.sweep(self.store, self.queue_settings)

    def queue_stats(self, max_age: float = 0.0) -> dict[str, Any]:
        """Depth, oldest waiting age, dead letters, bytes and how full the queue is: counts only, refreshed from
        the store at most once per `max_age` seconds (one thread refreshes; the others take the last copy)."""
        cached = self._stats
        if cached is not None and time.monotonic() - cached[0] <= max_age:
            return cached[1]
        if cached is not None and not self._stats_lock.acquire(blocking=False):
            return cached[1]
        if cached is None:
            self._stats_lock.acquire()
        try:
            stats = self.store.stats(time.time())
            settings = self.queue_settings
            now = time.monotonic()
            self._dead_seen.append((now, stats.dead))
            while len(self._dead_seen) > 1 and now - self._dead_seen[0][0] > settings.alert_after:
                self._dead_seen.popleft()
            view = {"depth": stats.depth, "oldest_age": stats.oldest_age, "dead": stats.dead,
                    "inflight": stats.inflight, "bytes": stats.bytes,
                    "capacity_used": round(max(stats.depth / settings.max_jobs, stats.bytes / settings.max_bytes), 4),
                    # as seen by this process within alert_after (an operator's drop lowers the baseline)
                    "dead_growing": stats.dead > min(dead for _, dead in self._dead_seen)}
            self._stats = (time.monotonic(), view)
            return view
        finally:
            self._stats_lock.release()

    def queue_full(self) -> bool:
        try:
            # a count at most a second old: a burst may overshoot the cap by a second's worth, never the disk
            return bool(self.queue_stats(max_age=1.0)["capacity_used"] >= 1.0)
        except Exception:
            return False  # the store does not answer: the put that follows will say so

    def close(self) -> None:
        self._executor.shutdown()
        self.destinations.close()
        for provider in self.providers.values():
            provider.close()
        if self._store is not None:
            self._store.close()


def _label(result: Any) -> str:
    """A worker attempt's result as the queue-attempts metric names it."""
    if isinstance(result, Outcome):
        return result.status
    if isinstance(result, DeadLetter):
        return "dead"
    return "not now" if isinstance(result, ProviderError) else "error"


def _idem_record(stored: str) -> dict[str, Any]:
    """An idempotency record: {"fp", "answer"} (a first answer), {"fp"} (in flight), or older shapes."""
    if not stored:
        return {}
    try:
        record = json.loads(stored)
    except ValueError:
        return {}
    if not isinstance(record, dict):
        return {}
    if "status" in record:  # written before fingerprints: the answer itself
        return {"answer": record}
    return record


def current_relay() -> Relay:
    from flask import current_app

    relay: Relay = current_app.extensions[EXTENSION]
    return relay

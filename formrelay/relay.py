"""The relay: configured forms with their cached definitions and schemas, and the delivery of submissions."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from marshmallow import ValidationError, fields

from formrelay.config import Config, FormConfig
from formrelay.errors import FormNotFound, Invalid, ProviderError, TryLater
from formrelay.fields import WIDGET, Definition, FormSchema, build_schema, describe_schema, flatten_errors
from formrelay.outcome import Outcome
from formrelay.providers import provider_class
from formrelay.submission import Submission, Value, reject_card_data, split_controls

if TYPE_CHECKING:
    from flask import Flask

    from formrelay.providers.base import Provider

log = logging.getLogger(__name__)

EXTENSION = "formrelay"
ONE_VALUE = "Only one value is accepted."


@dataclass(frozen=True)
class Loaded:
    """A definition and the schema derived from it, as fetched at one moment."""

    definition: Definition
    schema: FormSchema
    fetched_at: float


class Form:
    """One configured form: its provider, its definition (cached), its schema, and its validation."""

    def __init__(self, config: FormConfig, provider: Provider, relay_config: Config) -> None:
        self.config = config
        self.provider = provider
        self.slug = config.slug
        self._relay_config = relay_config
        self._loaded: Loaded | None = None
        self._lock = threading.Lock()

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
            except ProviderError as exc:
                if current is not None:
                    log.warning("form %s: definition refresh failed, keeping the cached one: %s", self.slug, exc)
                    self._loaded = Loaded(current.definition, current.schema, time.monotonic())
                    return self._loaded
                raise
            schema_cls = build_schema(self.slug, definition.fields, self._relay_config.relay.max_value_length)
            self._loaded = Loaded(definition, schema_cls(), time.monotonic())
            return self._loaded
        finally:
            self._lock.release()

    @property
    def definition(self) -> Definition:
        return self.loaded().definition

    @property
    def schema(self) -> FormSchema:
        return self.loaded().schema

    def title(self) -> str:
        return self.config.title or self.definition.title or self.slug

    def describe(self) -> dict[str, Any]:
        """The public description (contract section 2), derived from the validating schema."""
        return {
            "form": self.slug,
            "provider": self.config.provider,
            "title": self.title(),
            "fields": describe_schema(self.schema),
        }

    def labels(self) -> dict[str, str]:
        return {name: f.metadata.get("title", name) for name, f in self.schema.fields.items()}

    def aliases(self) -> dict[str, str]:
        aliases = self.definition.aliases()
        aliases.update(self.config.aliases)
        return aliases

    def validate(self, body: Mapping[str, Value], idempotency_key: str | None = None) -> Submission:
        """Body -> Submission, or Invalid (422) with messages keyed by field name."""
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
        if errors:
            raise Invalid("Some fields need attention.", errors=errors)
        key = idempotency_key or controls.get("idempotency_key") or None
        return Submission(form=self.slug, values=data or {}, context=context, idempotency_key=key)


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
            errors[name] = [ONE_VALUE]
    return out, errors


class Relay:
    """The Flask extension: config, providers and forms, shared by every request."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.providers: dict[str, Provider] = {}
        for name, settings in config.providers.items():
            cls = provider_class(name)
            assert cls is not None  # parse_config checked the name
            self.providers[name] = cls(settings, config.relay)
        self.forms: dict[str, Form] = {
            slug: Form(form, self.providers[form.provider], config) for slug, form in config.forms.items()
        }

    def init_app(self, app: Flask) -> None:
        app.extensions[EXTENSION] = self

    def form(self, slug: str) -> Form:
        try:
            return self.forms[slug]
        except KeyError:
            raise FormNotFound(f"There is no form called {slug!r}.") from None

    def attempt(self, form: Form, submission: Submission, target: str = "primary") -> Outcome:
        """One delivery try of a submission to a target ("primary" = the form's provider). TryLater propagates."""
        if target != "primary":
            raise ValueError(f"unknown delivery target {target!r}")
        return form.provider.deliver(form.config, form.definition, submission)

    def defer(self, form: Form, submission: Submission, target: str, reason: TryLater) -> Outcome | None:
        """Keep a delivery to try later, returning the 'queued' outcome; None when there is nowhere durable to keep it."""
        return None

    def submit(self, form: Form, submission: Submission) -> Outcome:
        """Deliver now; what cannot be delivered now is deferred, or answered 'unavailable' if it can't be kept."""
        started = time.perf_counter()
        try:
            outcome = self.attempt(form, submission)
        except TryLater as exc:
            log.warning("form %s: delivery of %s deferred: %s", form.slug, submission.id, exc.reason)
            outcome = self.defer(form, submission, "primary", exc) or Outcome(
                "unavailable",
                message="We could not send this just now. Please try again in a few minutes.",
                retry_after=int(exc.retry_after) if exc.retry_after else None,
            )
        log.info(
            "form %s: submission %s %s in %.1f ms",
            form.slug, submission.id, outcome.status, (time.perf_counter() - started) * 1000,
        )
        return outcome

    def close(self) -> None:
        for provider in self.providers.values():
            provider.close()


def current_relay() -> Relay:
    from flask import current_app

    relay: Relay = current_app.extensions[EXTENSION]
    return relay

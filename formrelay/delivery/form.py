"""One configured form at run time: its provider, its definition (fetched once, cached, refreshed), the schema
derived from it, its public description, and the validation of a body (forms/validation.py, a pure function).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from formrelay import abuse
from formrelay.core import i18n
from formrelay.core.config import Config, FormConfig
from formrelay.core.errors import DefinitionError, ProviderError, TryLater
from formrelay.core.failure_memory import FailureMemory
from formrelay.core.suggest import did_you_mean
from formrelay.forms import attribution
from formrelay.forms.fields import Definition, FormSchema, build_schema, describe_schema, relabel, shown
from formrelay.forms.person import MappingError, PersonMapping, apply_overrides
from formrelay.forms.submission import Submission, Value
from formrelay.forms.validation import FormRules, validate

if TYPE_CHECKING:
    from formrelay.providers.base import Provider

log = logging.getLogger(__name__)

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
        self._failed = FailureMemory(FAILURE_MEMORY, FAILURE_MEMORY_MAX)
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
        self._failed.raise_if_remembered()
        done = self._fetch_in_background()
        limit = self._relay_config.relay.answer_within if wait is _WAIT_DEFAULT else wait
        if not done.wait(limit):
            raise TryLater(f"form {self.slug}: the definition is still being fetched from {self.config.provider}",
                           retry_after=5)
        if self._loaded is not None:
            return self._loaded
        self._failed.raise_if_remembered()  # the fetch just failed
        raise TryLater(f"form {self.slug}: no definition", retry_after=5)

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
                self.last_error = None
                self._failed.forget()
                return
            self.last_error = str(failure)
            current = self._loaded
            if current is not None:
                log.warning("form %s: definition refresh failed, keeping the cached one: %s", self.slug, failure)
                self._loaded = Loaded(current.definition, current.schema, time.monotonic(), current.person)
                return
            memory = self._failed.remember(failure)
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

    def rules(self) -> FormRules:
        """What validation needs of this form, from its cached definition and its config."""
        loaded = self.loaded()
        return FormRules(slug=self.slug, schema=loaded.schema, definition=loaded.definition, aliases=self.aliases(),
                         attribution=self.config.attribution, person=loaded.person, osdi=self.config.osdi,
                         labels=self.labels,
                         page_params=attribution.page_refs(self.config.options, loaded.definition.extra))

    def validate(self, body: Mapping[str, Value], idempotency_key: str | None = None) -> Submission:
        """Body -> Submission, or Invalid (422) with messages keyed by field name."""
        checked = validate(self.rules(), body, idempotency_key, i18n.current_tag())
        if checked.dropped:
            abuse.count(self.slug, "card number in context")
            # A count, not the names: a control's name is the client's (it may hold the card number, or a line feed).
            log.warning("form %s: dropped %d page value(s) and %d control(s): a card number is never forwarded, "
                        "stored or logged", self.slug, checked.dropped_context, checked.dropped_controls)
        return checked.submission

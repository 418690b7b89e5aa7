"""Read the TOML configuration once, interpolate ${ENV}, validate it, and hand out typed objects."""
from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from marshmallow import (
    EXCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
)

from formrelay.core import i18n
from formrelay.core.funnel import ATTRIBUTION, DEFAULT_ATTRIBUTION, ThanksSchema, ThanksSettings
from formrelay.core.suggest import did_you_mean

# Every config key the relay itself reads, named once (providers name their own keys).
CONFIG_ENV = "FORMRELAY_CONFIG"
# Where the SQLite queue goes when the file sets no [queue] path: the container image points it at its volume,
# so the queue is kept whatever (read-only) directory the config is mounted in.
QUEUE_PATH_ENV = "FORMRELAY_QUEUE_PATH"
DEFAULT_CONFIG_PATH = "formrelay.toml"

ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Keys whose values are credentials: masked in logs and never echoed anywhere.
SECRET_KEY_NAME = re.compile(r"(key|token|secret|password|passwd|credential)", re.IGNORECASE)
SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why (never a secret value)."""


class ProviderSchemas(Protocol):
    """What the config needs of a provider (its class satisfies this): the schemas of its own keys."""

    needs_settings: bool  # a form of this provider needs a [providers.<name>] table

    def settings_schema(self) -> Schema: ...  # [providers.<name>]

    def form_schema(self) -> Schema: ...  # a [forms.x] table's keys beyond the common ones


# Filled at start-up by the floors above, which this bottom floor never imports: formrelay.providers registers
# every provider's name (its class, and so its schemas, is imported only when a config names it),
# formrelay.delivery.settings the [queue] schema, formrelay.abuse the [forms.x.captcha] schema (EngageOne's class
# carries the [forms.x.followup] schema). formrelay.delivery.relay imports all three; create_app and the CLI
# import the relay before they read a config.
_PROVIDERS: dict[str, Callable[[], ProviderSchemas]] = {}
_SECTIONS: dict[str, type[Schema]] = {}
_REQUIRED_SECTIONS = ("queue", "captcha")
_OPTIONAL_TOP = ("alerts",)  # top-level tables a higher floor registers (formrelay.alerts.settings)


def register_provider(name: str, load: Callable[[], ProviderSchemas]) -> None:
    """Make `provider = "<name>"` and [providers.<name>] known; `load` returns the provider's class."""
    _PROVIDERS[name] = load


def register_section(name: str, schema: type[Schema]) -> None:
    """Give the schema of a table the config reads but a higher floor defines ([queue], [forms.x.captcha], ...)."""
    _SECTIONS[name] = schema


def provider_schemas(name: str) -> ProviderSchemas | None:
    """The registered provider called name (its class), or None."""
    load = _PROVIDERS.get(name)
    return load() if load is not None else None


def _section_schema(name: str) -> Schema:
    return _SECTIONS[name]()


def _check_registered() -> None:
    missing = [f"the [{name}] schema" for name in _REQUIRED_SECTIONS if name not in _SECTIONS]
    missing += [] if _PROVIDERS else ["the providers"]
    if missing:
        # A programming error, not a config error: the start-up registrations this config needs did not happen.
        raise RuntimeError(f"formrelay.core.config: nothing registered {', '.join(missing)}; import "
                           "formrelay.delivery.relay (as create_app and the CLI do) before reading a config")


@dataclass(frozen=True)
class RelaySettings:
    """Relay-wide settings from [relay]."""

    allowed_origins: tuple[str, ...] = ()
    rate_limit: str = "10/minute;100/hour"
    rate_limit_storage: str | None = None
    # One switch for scale-out: rate limits, provider budgets, queue and idempotency records all live here.
    redis_url: str | None = None
    trusted_proxies: int = 0
    max_body_bytes: int = 64 * 1024
    max_fields: int = 100
    max_value_length: int = 10_000
    schema_ttl: float = 900.0
    timeout: float = 10.0
    connect_timeout: float = 3.05
    global_rate_limit: str = "600/minute"
    secret_key: str | None = None
    time_trap_min: float = 2.0
    time_trap_max: float = 3 * 24 * 3600.0
    require_origin: bool = False
    # The longest a supporter waits for a CRM: past it the submission is kept durably and answered 202 queued.
    answer_within: float = 3.0
    # Concurrent upstream calls per provider per process; when all are busy, submissions go straight to the queue.
    provider_concurrency: int = 4
    # A provider's circuit breaker opens after this many failures in a row, and lets a probe through after reset.
    breaker_failures: int = 5
    breaker_reset: float = 30.0
    # The language of answers when Accept-Language matches none of the shipped ones (and there is none).
    locale: str = "en"
    # IPv6 clients are limited per network of this size: one home or server gets a whole /64.
    ipv6_prefix: int = 64


@dataclass(frozen=True)
class LoggingSettings:
    """[logging]: personal data in logs is masked unless switched on for debugging."""

    personal_data: bool = False
    format: str = "text"  # "text" or "json" (one object a line, for log shippers)
    level: str = "INFO"


@dataclass(frozen=True)
class MetricsSettings:
    """[metrics]: Prometheus at /metrics, for addresses in `allow` or a client with the bearer `token`."""

    enabled: bool = True
    token: str | None = None
    allow: tuple[str, ...] = ("127.0.0.1/32", "::1/128")


@dataclass(frozen=True)
class OSDISettings:
    """[forms.x.osdi]: what a page posting an OSDI helper body may decide; by default nothing but the person."""

    allow_add_tags: tuple[str, ...] = ()       # tags a page may add (exactly these, matched ignoring case)
    allow_remove_tags: tuple[str, ...] = ()    # tags a page may remove
    allow_autoresponse_off: bool = False       # whether a body not asking for the autoresponse gets none
    allow_status: bool = False                 # whether email/phone status "subscribed" ticks the consent field


WEBHOOK_EVENTS = ("delivered", "queued", "dead")
WEBHOOK_SECRET_PREFIX = "whsec_"
WEBHOOK_NAME = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


@dataclass(frozen=True)
class WebhookConfig:
    """One [[forms.x.webhooks]] entry: where to send which events, signed with which secret."""

    name: str  # in the queue, logs and metrics (the URL may hold a token, so it is never shown)
    url: str = field(repr=False)
    secret: str = field(repr=False)  # "whsec_" + base64 of the key (Standard Webhooks)
    events: tuple[str, ...] = WEBHOOK_EVENTS
    include_personal_data: bool = True
    rate: str = "10/second"

    @property
    def host(self) -> str:
        """host[:port] of the URL: what `formrelay check` and the default name show."""
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else "?"


@dataclass(frozen=True)
class FormConfig:
    """One [forms.<slug>] table: what every form has, plus the provider's own typed options."""

    slug: str
    provider: str
    title: str | None = None
    success_url: str | None = None
    error_url: str | None = None
    allowed_origins: tuple[str, ...] | None = None
    rate_limit: str | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)
    options: Any = None
    # [forms.x.followup]: an EngageOne email after the form's own delivery succeeded
    followup: Any = None
    require_started: bool = False
    captcha: Any = None
    # A language tag (e.g. fr-CA) that forces the form's answers into one language; ENS also gets it as `locale`.
    locale: str | None = None
    # Labels for every language ({field: label}), and per language tag ({"fr": {field: label}}), lower-case tags.
    labels: Mapping[str, str] = field(default_factory=dict)
    labels_by_locale: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    titles: Mapping[str, str] = field(default_factory=dict)

    def localized(self, table: Mapping[str, Any], language: str, tag: str | None) -> Any:
        """The entry of a per-language table for an answer: the exact tag (fr-ca), else the language (fr)."""
        if tag and tag.lower() in table:
            return table[tag.lower()]
        return table.get(language)
    # [forms.x.person]: person key -> the form's field, over the provider's own mapping (forms/person.py)
    person: Mapping[str, str] = field(default_factory=dict)
    osdi: OSDISettings = OSDISettings()
    # after the form's own delivery, the same submission goes to these forms too (each a queue job of its own)
    also: tuple[str, ...] = ()
    # [[forms.x.webhooks]]: signed Standard Webhooks notifications
    webhooks: tuple[WebhookConfig, ...] = ()
    # The funnel (core/funnel.py): the touch the CRM is credited with, a queued answer's page, the thank-you ladder.
    attribution: str = DEFAULT_ATTRIBUTION
    queued_url: str | None = None
    thanks: ThanksSettings | None = None


@dataclass(frozen=True)
class Config:
    """The whole validated configuration."""

    relay: RelaySettings
    providers: Mapping[str, Any]
    forms: Mapping[str, FormConfig]
    secrets: frozenset[str] = frozenset()
    source: str = "<mapping>"
    queue: Any = None
    logging: LoggingSettings = LoggingSettings()
    metrics: MetricsSettings = MetricsSettings()
    alerts: Any = None  # [alerts]: formrelay.alerts.settings registers its schema (the cli and web import it)

    @property
    def shared_storage(self) -> str:
        """The `limits` storage URI for budgets: Redis when configured, else this process's memory."""
        return self.relay.redis_url or "memory://"

    def origins_for(self, form: FormConfig) -> tuple[str, ...]:
        """The CORS allow-list of a form: its own, else the relay's."""
        return form.allowed_origins if form.allowed_origins is not None else self.relay.allowed_origins


def _url(**kwargs: Any) -> fields.Url:
    return fields.Url(schemes={"http", "https"}, require_tld=False, **kwargs)


def _rate_limit_ok(value: str) -> None:
    from limits import parse_many

    if value == "":
        return
    try:
        items = parse_many(value)
    except ValueError:
        raise ValidationError(f"{value!r} is not a rate limit such as '10/minute;100/hour' "
                              "(a number, '/', and second, minute, hour or day; ';' between several)") from None
    if any(item.amount == 0 for item in items):
        raise ValidationError(f"{value!r} would refuse every submission; to turn this limit off, set it to \"\"")


def rate_ok(value: str, example: str) -> None:
    """A budget such as '4/second' (Action Network's `rate`, ENS's `page_budget`), checked at start-up."""
    from limits import parse

    try:
        item = parse(value)
    except ValueError:
        raise ValidationError(f"{value!r} is not a rate such as {example!r}") from None
    if item.amount == 0:
        raise ValidationError(f"{value!r} allows no calls at all; use at least 1")


ORIGIN = re.compile(r"^https?://[^/?#\s]+$")


def _origins_ok(values: list[str]) -> None:
    """Each entry is '*' or an origin: scheme://host[:port], exactly what browsers send, with no path or slash."""
    bad = [v for v in values if v != "*" and not ORIGIN.match(v)]
    if bad:
        hints = []
        for value in bad:
            match = re.match(r"^(https?://[^/?#\s]+)[/?#]", value)
            hints.append(f"{value!r} (write {match.group(1)!r})" if match else repr(value))
        raise ValidationError("an origin is scheme://host[:port] with no path or trailing slash, as browsers send "
                              "it: " + ", ".join(hints))


class RelaySchema(Schema):
    class Meta:
        unknown = RAISE

    allowed_origins = fields.List(fields.String(), load_default=list, validate=_origins_ok)
    rate_limit = fields.String(load_default="10/minute;100/hour", validate=_rate_limit_ok)
    rate_limit_storage = fields.String(load_default=None)
    redis_url = fields.String(load_default=None, validate=validate.Regexp(r"^rediss?://", error="must start with redis:// or rediss://"))
    trusted_proxies = fields.Integer(load_default=0, validate=validate.Range(min=0, max=10))
    max_body_bytes = fields.Integer(load_default=64 * 1024, validate=validate.Range(min=1024, max=10 * 1024 * 1024))
    max_fields = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    max_value_length = fields.Integer(load_default=10_000, validate=validate.Range(min=1, max=1_000_000))
    schema_ttl = fields.Float(load_default=900.0, validate=validate.Range(min=0))
    timeout = fields.Float(load_default=10.0, validate=validate.Range(min=0.1, max=120))
    connect_timeout = fields.Float(load_default=3.05, validate=validate.Range(min=0.1, max=60))
    global_rate_limit = fields.String(load_default="600/minute", validate=_rate_limit_ok)
    secret_key = fields.String(load_default=None, validate=validate.Length(min=16))
    time_trap_min = fields.Float(load_default=2.0, validate=validate.Range(min=0))
    time_trap_max = fields.Float(load_default=3 * 24 * 3600.0, validate=validate.Range(min=1))
    require_origin = fields.Boolean(load_default=False)
    answer_within = fields.Float(load_default=3.0, validate=validate.Range(min=0.05, max=120))
    provider_concurrency = fields.Integer(load_default=4, validate=validate.Range(min=1, max=256))
    breaker_failures = fields.Integer(load_default=5, validate=validate.Range(min=1, max=1000))
    breaker_reset = fields.Float(load_default=30.0, validate=validate.Range(min=0.001, max=3600))
    locale = fields.String(load_default="en", validate=lambda tag: _shipped_language(tag) is not None)
    ipv6_prefix = fields.Integer(load_default=64, validate=validate.Range(min=16, max=128))

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> RelaySettings:
        data["allowed_origins"] = tuple(data["allowed_origins"])
        data["locale"] = _shipped_language(data["locale"]) or "en"
        return RelaySettings(**data)


COMMON_FORM_KEYS = frozenset(
    {"provider", "title", "success_url", "error_url", "allowed_origins", "rate_limit", "aliases", "followup",
     "require_started", "captcha", "locale", "labels", "titles", "person", "osdi", "also", "webhooks",
     "attribution", "queued_url", "thanks"}
)
LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


def _shipped_language(tag: str) -> str | None:
    """The shipped language a tag answers in, or a ValidationError that lists the shipped ones."""
    language = i18n.language_of(tag) if LANGUAGE_TAG.match(tag) else None
    if language is None:
        raise ValidationError(f"no catalogue for {tag!r}; shipped: {', '.join(i18n.available())} "
                              "(README: adding a language)")
    return language


def _tag_key(tag: str) -> str:
    """A per-language table's key as it is looked up: lower case, '-' between subtags."""
    if not LANGUAGE_TAG.match(tag):
        raise ValidationError(f"{tag!r} is not a language tag such as 'fr' or 'fr-CA'")
    _shipped_language(tag)
    return tag.lower().replace("_", "-")


def _labels(value: Any) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """`labels`: a string is a field's label in every language; a table is one language's labels."""
    if not isinstance(value, dict):
        raise ValidationError("a table of field = label, or of language = {field = label}")
    flat: dict[str, str] = {}
    by_locale: dict[str, dict[str, str]] = {}
    for key, item in value.items():
        if isinstance(item, str):
            flat[key] = item
        elif isinstance(item, dict) and all(isinstance(v, str) for v in item.values()):
            by_locale[_tag_key(key)] = dict(item)
        else:
            raise ValidationError(f"labels.{key}: a label (string) or a table of field = label")
    return flat, by_locale


class OSDISchema(Schema):
    class Meta:
        unknown = RAISE

    allow_add_tags = fields.List(fields.String(validate=validate.Length(min=1, max=255)), load_default=list)
    allow_remove_tags = fields.List(fields.String(validate=validate.Length(min=1, max=255)), load_default=list)
    allow_autoresponse_off = fields.Boolean(load_default=False)
    allow_status = fields.Boolean(load_default=False)

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> OSDISettings:
        return OSDISettings(allow_add_tags=tuple(data["allow_add_tags"]),
                            allow_remove_tags=tuple(data["allow_remove_tags"]),
                            allow_autoresponse_off=data["allow_autoresponse_off"], allow_status=data["allow_status"])


class CommonFormSchema(Schema):
    """The keys every form has; the provider's own schema checks the rest."""

    class Meta:
        unknown = EXCLUDE

    provider = fields.String(required=True)
    title = fields.String()
    success_url = _url()
    error_url = _url()
    allowed_origins = fields.List(fields.String(), validate=_origins_ok)
    rate_limit = fields.String(validate=_rate_limit_ok)
    aliases = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    followup = fields.Dict(load_default=None)
    require_started = fields.Boolean(load_default=False)
    captcha = fields.Dict(load_default=None)
    locale = fields.String(load_default=None, validate=validate.Regexp(LANGUAGE_TAG, error="not a language tag such as 'fr' or 'fr-CA'"))
    labels = fields.Raw(load_default=dict)
    titles = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    # Keys are checked against the person model when the form's definition loads (forms/person.py).
    person = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=200)), values=fields.String(),
                         load_default=dict)
    osdi = fields.Nested(OSDISchema, load_default=OSDISettings)
    also = fields.List(fields.String(validate=validate.Regexp(SLUG, error="not a form slug")), load_default=list)
    webhooks = fields.List(fields.Dict(), load_default=list)
    attribution = fields.String(load_default=DEFAULT_ATTRIBUTION, validate=validate.OneOf(ATTRIBUTION))
    queued_url = _url()
    thanks = fields.Nested(ThanksSchema, load_default=None)


def webhook_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_` secret; ValueError (never naming the secret) when it is not one."""
    if not secret.startswith(WEBHOOK_SECRET_PREFIX):
        raise ValueError("must start with whsec_ (a Standard Webhooks secret)")
    encoded = secret[len(WEBHOOK_SECRET_PREFIX):]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("whsec_ must be followed by base64") from None
    # The specification asks for 24 to 64 random bytes; fewer would be a weak key.
    if not 24 <= len(key) <= 64:
        raise ValueError(f"the key after whsec_ must be 24 to 64 bytes (it is {len(key)})")
    return key


def _webhook_secret_ok(value: str) -> None:
    try:
        webhook_key(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


class WebhookSchema(Schema):
    class Meta:
        unknown = RAISE

    url = _url(required=True)
    secret = fields.String(required=True, validate=_webhook_secret_ok)
    events = fields.List(fields.String(validate=validate.OneOf(WEBHOOK_EVENTS)),
                         load_default=lambda: list(WEBHOOK_EVENTS), validate=validate.Length(min=1))
    include_personal_data = fields.Boolean(load_default=True)
    name = fields.String(load_default=None, validate=validate.Regexp(
        WEBHOOK_NAME, error="letters, digits, '.', ':', '_' and '-' (at most 64)"))
    rate = fields.String(load_default="10/second", validate=_rate_limit_ok)


def _request_target(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _webhooks(raw: list[Any], where: str, source: str) -> tuple[WebhookConfig, ...]:
    out: list[WebhookConfig] = []
    for i, table in enumerate(raw):
        try:
            data = WebhookSchema().load(table)
        except ValidationError as err:
            raise ConfigError(f"{source}: {_messages(err, f'{where}.webhooks[{i}]')}") from None
        hook = WebhookConfig(name="", url=data["url"], secret=data["secret"], events=tuple(dict.fromkeys(data["events"])),
                             include_personal_data=data["include_personal_data"], rate=data["rate"])
        name = data["name"] or hook.host
        if data["name"] is None:
            # Two receivers on one host: the second is host-2, and so on (name them to keep them apart for good).
            taken = {h.name for h in out}
            base, n = name, 1
            while name in taken:
                n += 1
                name = f"{base}-{n}"
        elif any(h.name == name for h in out):
            raise ConfigError(f"{source}: {where}.webhooks[{i}].name: {name!r} is used twice")
        out.append(WebhookConfig(name=name, url=hook.url, secret=hook.secret, events=hook.events,
                                 include_personal_data=hook.include_personal_data, rate=hook.rate))
    return tuple(out)


class LoggingSchema(Schema):
    class Meta:
        unknown = RAISE

    personal_data = fields.Boolean(load_default=False)
    format = fields.String(load_default="text", validate=validate.OneOf(["text", "json"]))
    level = fields.String(load_default="INFO", validate=validate.OneOf(["DEBUG", "INFO", "WARNING", "ERROR"]))

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> LoggingSettings:
        return LoggingSettings(**data)


def _network_ok(value: str) -> None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValidationError(f"{value!r} is not an address or network (e.g. 10.0.0.0/8)") from None


class MetricsSchema(Schema):
    class Meta:
        unknown = RAISE

    enabled = fields.Boolean(load_default=True)
    token = fields.String(load_default=None, validate=validate.Length(min=16))
    allow = fields.List(fields.String(validate=_network_ok), load_default=lambda: ["127.0.0.1/32", "::1/128"])

    @post_load
    def make(self, data: dict[str, Any], **_: Any) -> MetricsSettings:
        return MetricsSettings(enabled=data["enabled"], token=data["token"], allow=tuple(data["allow"]))


def interpolate(value: Any, env: Mapping[str, str], where: str = "") -> Any:
    """Replace ${NAME} in every string with env[NAME]; missing names are one ConfigError naming them all."""
    missing: list[str] = []
    result = _interpolate(value, env, where, missing)
    if missing:
        names = sorted({entry.split(" ", 1)[0] for entry in missing})
        raise ConfigError(f"environment variable{'s' if len(names) > 1 else ''} not set: {', '.join(names)} "
                          f"(used by {'; '.join(entry.split(' ', 1)[1] for entry in missing)})")
    return result


def _interpolate(value: Any, env: Mapping[str, str], where: str, missing: list[str]) -> Any:
    if isinstance(value, str):
        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                missing.append(f"{name} {where or 'config'}")
                return ""
            return env[name]

        return ENV_REFERENCE.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _interpolate(v, env, f"{where}.{k}" if where else k, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, f"{where}[{i}]", missing) for i, v in enumerate(value)]
    return value


def collect_secrets(value: Any, key: str = "") -> set[str]:
    """Every string value held under a credential-like key, anywhere in the tree."""
    found: set[str] = set()
    if isinstance(value, str):
        if SECRET_KEY_NAME.search(key) and len(value) >= 4:
            found.add(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            found |= collect_secrets(v, str(k))
    elif isinstance(value, list):
        for v in value:
            found |= collect_secrets(v, key)
    return found


UNKNOWN = "Unknown field."


def _known(schema: Schema | None, extra: frozenset[str] = frozenset()) -> list[str]:
    if schema is None:
        return sorted(extra)
    return sorted({f.data_key or name for name, f in schema.fields.items()} | extra)


def _messages(err: ValidationError, where: str, known: list[str] | None = None) -> str:
    """Marshmallow's messages as 'where.key: message'; an unknown key gets the close names, if any."""
    messages = err.messages
    if known and isinstance(messages, dict):
        messages = {k: [f"unknown key{did_you_mean(str(k), known)}" if m == UNKNOWN else m for m in v]
                    if isinstance(v, list) else v for k, v in messages.items()}
    err = ValidationError(messages)

    def flatten(prefix: str, messages: Any) -> list[str]:
        if isinstance(messages, dict):
            out: list[str] = []
            for k, v in messages.items():
                out += flatten(f"{prefix}.{k}" if prefix else str(k), v)
            return out
        if isinstance(messages, list):
            return [f"{prefix}: {m}" for m in messages if isinstance(m, str)] or flatten(prefix, messages[0] if messages else "")
        return [f"{prefix}: {messages}"]

    return "; ".join(flatten(where, err.messages))


def parse_config(raw: Mapping[str, Any], env: Mapping[str, str] | None = None, source: str = "<mapping>") -> Config:
    """Validate a decoded TOML document into a Config."""
    _check_registered()
    env = os.environ if env is None else env
    tables = ["relay", "providers", "forms", "queue", "metrics", "logging"]
    tables += [t for t in _OPTIONAL_TOP if t in _SECTIONS]
    unknown_top = set(raw) - set(tables)
    if unknown_top:
        raise ConfigError(f"{source}: unknown top-level table(s): "
                          + ", ".join(f"{t}{did_you_mean(t, tables)}" for t in sorted(unknown_top)))
    try:
        data = interpolate(dict(raw), env)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    secrets = frozenset(collect_secrets(data))

    def section(schema: Schema, name: str) -> Any:
        try:
            return schema.load(data.get(name, {}))
        except ValidationError as err:
            raise ConfigError(f"{source}: {_messages(err, name, _known(schema))}") from None

    relay = section(RelaySchema(), "relay")
    queue = section(_section_schema("queue"), "queue")
    logging_settings = section(LoggingSchema(), "logging")
    metrics_settings = section(MetricsSchema(), "metrics")
    alerts = section(_section_schema("alerts"), "alerts") if "alerts" in _SECTIONS else None
    secrets = secrets | frozenset(getattr(alerts, "secrets", ()))

    providers: dict[str, Any] = {}
    for name, table in (data.get("providers") or {}).items():
        cls = provider_schemas(name)
        if cls is None:
            raise ConfigError(f"{source}: providers.{name}: unknown provider{did_you_mean(name, _PROVIDERS)}")
        try:
            providers[name] = cls.settings_schema().load(table or {})
        except ValidationError as err:
            known = _known(cls.settings_schema())
            raise ConfigError(f"{source}: {_messages(err, f'providers.{name}', known)}") from None

    forms: dict[str, FormConfig] = {}
    for slug, table in (data.get("forms") or {}).items():
        where = f"forms.{slug}"
        if not SLUG.match(slug):
            raise ConfigError(f"{source}: {where}: a slug is lowercase letters, digits, '-' and '_'")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: {where}: must be a table")
        try:
            common = CommonFormSchema().load(table)
        except ValidationError as err:
            raise ConfigError(f"{source}: {_messages(err, where)}") from None
        cls = provider_schemas(common["provider"])
        if cls is None:
            raise ConfigError(f"{source}: {where}.provider: unknown provider {common['provider']!r}"
                              f"{did_you_mean(common['provider'], _PROVIDERS)}")
        if common["provider"] not in providers:
            if cls.needs_settings:
                raise ConfigError(f"{source}: {where}: needs a [providers.{common['provider']}] table")
            providers[common["provider"]] = cls.settings_schema().load({})
        own = {k: v for k, v in table.items() if k not in COMMON_FORM_KEYS}
        try:
            options = cls.form_schema().load(own)
        except ValidationError as err:
            known = _known(cls.form_schema(), COMMON_FORM_KEYS)
            raise ConfigError(f"{source}: {_messages(err, where, known)}") from None
        followup = None
        if common.get("followup") is not None:
            if "engageone" not in providers:
                raise ConfigError(f"{source}: {where}.followup: needs a [providers.engageone] table")
            mailer: Any = provider_schemas("engageone")  # loaded above: [providers.engageone] is there
            try:
                followup = mailer.followup_schema().load(common["followup"])
            except ValidationError as err:
                raise ConfigError(f"{source}: {_messages(err, where + '.followup')}") from None
        captcha = None
        if common.get("captcha") is not None:
            try:
                captcha = _section_schema("captcha").load(common["captcha"])
            except ValidationError as err:
                raise ConfigError(f"{source}: {_messages(err, where + '.captcha')}") from None
        try:
            flat_labels, labels_by_locale = _labels(common["labels"])
            titles = {_tag_key(tag): title for tag, title in common["titles"].items()}
        except ValidationError as err:
            raise ConfigError(f"{source}: {where}: {err.messages[0] if isinstance(err.messages, list) else err.messages}") from None
        origins = common.get("allowed_origins")
        forms[slug] = FormConfig(
            slug=slug,
            provider=common["provider"],
            title=common.get("title"),
            success_url=common.get("success_url"),
            error_url=common.get("error_url"),
            allowed_origins=tuple(origins) if origins is not None else None,
            rate_limit=common.get("rate_limit"),
            aliases=common["aliases"],
            options=options,
            followup=followup,
            require_started=common["require_started"],
            captcha=captcha,
            locale=common["locale"],
            labels=flat_labels,
            labels_by_locale=labels_by_locale,
            titles=titles,
            person=common["person"],
            osdi=common["osdi"],
            also=tuple(dict.fromkeys(common["also"])),
            webhooks=_webhooks(common["webhooks"], where, source),
            attribution=common["attribution"],
            queued_url=common.get("queued_url"),
            thanks=common["thanks"],
        )
    for slug, form in forms.items():
        for other in form.also:
            if other == slug:
                raise ConfigError(f"{source}: forms.{slug}.also: a form cannot name itself")
            if other not in forms:
                raise ConfigError(f"{source}: forms.{slug}.also: there is no form {other!r}")
    # A webhook URL may carry a token in its path (chat and automation tools): mask it like any secret.
    # The key part of a whsec_ secret is masked on its own too (collect_secrets has the whole string), and so is
    # the URL's path and query, which an HTTP library's debug line shows without the host.
    hooks = [hook for form in forms.values() for hook in form.webhooks]
    secrets = secrets | {hook.url for hook in hooks} | {hook.secret[len(WEBHOOK_SECRET_PREFIX):] for hook in hooks}
    secrets = secrets | {target for target in (_request_target(hook.url) for hook in hooks) if len(target) >= 8}
    return Config(relay=relay, providers=providers, forms=forms, secrets=secrets, source=source, queue=queue,
                  logging=logging_settings, metrics=metrics_settings, alerts=alerts)


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the TOML file named by path, else $FORMRELAY_CONFIG, else ./formrelay.toml."""
    env = os.environ if env is None else env
    file = Path(path or env.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such config file (set {CONFIG_ENV} or pass --config)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: cannot read: {exc.__class__.__name__}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not valid TOML: {exc}") from None
    queue = raw.get("queue", {})
    if env.get(QUEUE_PATH_ENV) and isinstance(queue, dict) and "path" not in queue:
        raw = {**raw, "queue": {**queue, "path": env[QUEUE_PATH_ENV]}}
    return parse_config(raw, env, source=str(file))

"""What the relay's own tables hold: [relay], [logging], [metrics], and the keys every [forms.x] has.

Each key is declared once, with its default and one line of meaning (core/settings.py derives the schemas);
core/config.py reads the file with them. The tables higher floors own declare themselves the same way:
[queue] in delivery/settings.py, [forms.x.captcha] in abuse.py, [providers.x] and a form's own keys in its
provider's module, [forms.x.thanks] in core/funnel.py, [[forms.x.webhooks]] in core/webhook_settings.py.
May import: core.settings, core.funnel, core.i18n, core.webhook_settings.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from marshmallow import EXCLUDE, ValidationError, fields, validate

from formrelay.core import i18n
from formrelay.core.funnel import ATTRIBUTION, DEFAULT_ATTRIBUTION, ThanksSettings
from formrelay.core.settings import derived, rate_limit_ok, schema_for, setting, url_field
from formrelay.core.webhook_settings import WebhookConfig

SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
LANGUAGE_TAG = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
ORIGIN = re.compile(r"^https?://[^/?#\s]+$")


def origins_ok(values: list[str]) -> None:
    """Each entry is '*' or an origin: scheme://host[:port], exactly what browsers send, with no path or slash."""
    bad = [v for v in values if v != "*" and not ORIGIN.match(v)]
    if bad:
        hints = []
        for value in bad:
            match = re.match(r"^(https?://[^/?#\s]+)[/?#]", value)
            hints.append(f"{value!r} (write {match.group(1)!r})" if match else repr(value))
        raise ValidationError("an origin is scheme://host[:port] with no path or trailing slash, as browsers send "
                              "it: " + ", ".join(hints))


def shipped_language(tag: str) -> str | None:
    """The shipped language a tag answers in, or a ValidationError that lists the shipped ones."""
    language = i18n.language_of(tag) if LANGUAGE_TAG.match(tag) else None
    if language is None:
        raise ValidationError(f"no catalogue for {tag!r}; shipped: {', '.join(i18n.available())} "
                              "(README: adding a language)")
    return language


def _network_ok(value: str) -> None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValidationError(f"{value!r} is not an address or network (e.g. 10.0.0.0/8)") from None


_ORIGINS = "'*' or origins: scheme://host[:port], no path"
_SHIPPED = "a shipped language (en, de, es, fr, nl, pt)"


@dataclass(frozen=True)
class RelaySettings:
    """Relay-wide settings from [relay]."""

    allowed_origins: tuple[str, ...] = setting(
        (), "the CORS allow-list of every form that sets none of its own (\"*\" = any site)",
        validate=origins_ok, allowed=_ORIGINS)
    rate_limit: str = setting("10/minute;100/hour", "submissions per client address per form; \"\" turns it off",
                              validate=rate_limit_ok)
    rate_limit_storage: str | None = setting(None, "a `limits` storage URI for the rate limits only "
                                                   "(default: redis_url, else this process's memory)")
    # One switch for scale-out: rate limits, provider budgets, queue and idempotency records all live here.
    redis_url: str | None = setting(None, "Redis shared by every process and host: rate limits, provider budgets, "
                                          "the queue and idempotency records",
                                    validate=validate.Regexp(r"^rediss?://",
                                                             error="must start with redis:// or rediss://"))
    trusted_proxies: int = setting(0, "how many proxies in front of the relay may set X-Forwarded-For (0: ignored)",
                                   validate=validate.Range(min=0, max=10))
    max_body_bytes: int = setting(64 * 1024, "the largest request body accepted, in bytes (413 above)",
                                  validate=validate.Range(min=1024, max=10 * 1024 * 1024))
    max_fields: int = setting(100, "the most fields a submission may carry (413 above)",
                              validate=validate.Range(min=1, max=1000))
    max_value_length: int = setting(10_000, "the longest text any field takes that sets no length of its own",
                                    validate=validate.Range(min=1, max=1_000_000))
    schema_ttl: float = setting(900.0, "seconds a form's definition from its CRM is cached",
                                validate=validate.Range(min=0))
    timeout: float = setting(10.0, "seconds any one read of a CRM's or webhook's answer may wait; plus "
                             "connect_timeout, the wall-clock limit of a whole call (docs/upstream-calls.md)",
                             validate=validate.Range(min=0.1, max=120))
    connect_timeout: float = setting(3.05, "seconds to wait for a connection to a CRM or webhook receiver",
                                     validate=validate.Range(min=0.1, max=60))
    global_rate_limit: str = setting("600/minute", "valid submissions of all clients together; above it they are "
                                                   "queued (202), not refused; \"\" turns it off",
                                     validate=rate_limit_ok)
    secret_key: str | None = setting(None, "signs the _started time-trap tokens (unset: one random key kept in "
                                           "the queue store)", validate=validate.Length(min=16))
    time_trap_min: float = setting(2.0, "seconds: a form sent sooner after its token was issued is asked to send "
                                        "again", validate=validate.Range(min=0))
    time_trap_max: float = setting(3 * 24 * 3600.0, "seconds: an older _started token asks the person to reload "
                                                     "the page; each used token is remembered this long",
                                   validate=validate.Range(min=1))
    require_origin: bool = setting(False, "refuse posts that carry neither Origin nor Referer (true if only "
                                          "browsers post to this relay)")
    # The longest a supporter waits for a CRM: past it the submission is kept durably and answered 202 queued.
    answer_within: float = setting(3.0, "seconds a supporter waits for a CRM before the submission is queued "
                                        "(202)", validate=validate.Range(min=0.05, max=120))
    # Concurrent upstream calls per provider per process; when all are busy, submissions go straight to the queue.
    provider_concurrency: int = setting(4, "upstream calls in flight per provider and process; beyond, submissions "
                                           "go straight to the queue", validate=validate.Range(min=1, max=256))
    # A provider's circuit breaker opens after this many failures in a row, and lets a probe through after reset.
    breaker_failures: int = setting(5, "failures in a row that open a provider's circuit breaker",
                                    validate=validate.Range(min=1, max=1000))
    breaker_reset: float = setting(30.0, "seconds a breaker stays open before one probe goes through",
                                   validate=validate.Range(min=0.001, max=3600))
    # The language of answers when Accept-Language matches none of the shipped ones (and there is none).
    locale: str = setting("en", "the language of answers when the browser asks for none of the shipped ones",
                          validate=lambda tag: shipped_language(tag) is not None, allowed=_SHIPPED,
                          convert=lambda tag: shipped_language(tag) or "en")
    # IPv6 clients are limited per network of this size: one home or server gets a whole /64.
    ipv6_prefix: int = setting(64, "IPv6 clients are rate limited per network of this prefix length",
                               validate=validate.Range(min=16, max=128))


@dataclass(frozen=True)
class LoggingSettings:
    """[logging]: personal data in logs is masked unless switched on for debugging."""

    personal_data: bool = setting(False, "log submitted values unmasked (for debugging only)")
    format: str = setting("text", "text, or json: one object a line, for log shippers",
                          validate=validate.OneOf(["text", "json"]))
    level: str = setting("INFO", "the least severe level logged",
                         validate=validate.OneOf(["DEBUG", "INFO", "WARNING", "ERROR"]))


@dataclass(frozen=True)
class MetricsSettings:
    """[metrics]: Prometheus at /metrics, for addresses in `allow` or a client with the bearer `token`."""

    enabled: bool = setting(True, "serve Prometheus metrics at /metrics")
    token: str | None = setting(None, "a bearer token that opens /metrics from any address",
                                validate=validate.Length(min=16))
    allow: tuple[str, ...] = setting(("127.0.0.1/32", "::1/128"), "addresses and networks that may read /metrics "
                                                                   "without the token",
                                     field=lambda **kw: fields.List(fields.String(validate=_network_ok), **kw),
                                     allowed="addresses or networks such as 10.0.0.0/8")


_TAG_LENGTH = validate.Length(min=1, max=255)


@dataclass(frozen=True)
class OSDISettings:
    """[forms.x.osdi]: what a page posting an OSDI helper body may decide; by default nothing but the person."""

    allow_add_tags: tuple[str, ...] = setting(
        (), "tags a page's add_tags may add (exactly these, matched ignoring case)",
        field=lambda **kw: fields.List(fields.String(validate=_TAG_LENGTH), **kw))
    allow_remove_tags: tuple[str, ...] = setting(
        (), "tags a page's remove_tags may remove", field=lambda **kw: fields.List(fields.String(validate=_TAG_LENGTH),
                                                                                     **kw))
    allow_autoresponse_off: bool = setting(False, "whether a body not asking for the autoresponse gets none")
    allow_status: bool = setting(False, 'whether an email/phone status "subscribed" ticks the consent field')


@dataclass(frozen=True)
class FormConfig:
    """One [forms.<slug>] table: what every form has, plus the provider's own typed options."""

    slug: str = derived()
    provider: str = setting(meaning="which CRM the form goes to: ngp, ens, actionnetwork or engageone")
    title: str | None = setting(None, "the form's title (default: the CRM's)")
    success_url: str | None = setting(None, "where a plain HTML form post goes after success", field=url_field)
    error_url: str | None = setting(None, "where a plain HTML form post goes after a refusal", field=url_field)
    allowed_origins: tuple[str, ...] | None = setting(None, "this form's CORS allow-list, replacing [relay]'s",
                                                      validate=origins_ok, allowed=_ORIGINS)
    rate_limit: str | None = setting(None, "submissions per client address for this form, replacing [relay]'s",
                                     validate=rate_limit_ok)
    aliases: Mapping[str, str] = setting(meaning="extra field names accepted for this form: alias = field name",
                                         default_factory=dict)
    options: Any = derived(None)  # the provider's own typed options (its form schema)
    # [forms.x.followup]: an EngageOne email after the form's own delivery succeeded
    followup: Any = setting(None, "an EngageOne email sent after the form's own delivery succeeded (a table)",
                            field=fields.Dict)
    require_started: bool = setting(False, "refuse posts without a _started time-trap token (only if every page "
                                           "that posts uses the snippet or embeds the token)")
    captcha: Any = setting(None, "CAPTCHA verification for this form (a table)", field=fields.Dict)
    # A language tag (e.g. fr-CA) that forces the form's answers into one language; ENS also gets it as `locale`.
    locale: str | None = setting(None, "a language tag (e.g. fr-CA) the form's answers are always in",
                                 validate=validate.Regexp(LANGUAGE_TAG,
                                                          error="not a language tag such as 'fr' or 'fr-CA'"))
    # Labels for every language ({field: label}), and per language tag ({"fr": {field: label}}), lower-case tags.
    labels: Mapping[str, str] = setting(meaning="field = label in every language, or language = {field = label}",
                                        default_factory=dict, field=fields.Raw)
    labels_by_locale: Mapping[str, Mapping[str, str]] = derived(default_factory=dict)
    titles: Mapping[str, str] = setting(meaning="the form's title per language: language tag = title",
                                        default_factory=dict)
    # [forms.x.person]: person key -> the form's field, over the provider's own mapping (forms/person.py)
    # (keys are checked against the person model when the form's definition loads).
    person: Mapping[str, str] = setting(
        meaning="which field holds which part of the common person model: person key = field name",
        default_factory=dict, field=lambda **kw: fields.Dict(
            keys=fields.String(validate=validate.Length(min=1, max=200)), values=fields.String(), **kw))
    osdi: OSDISettings = setting(OSDISettings(), "what a page posting an OSDI helper body may decide (a table)")
    # after the form's own delivery, the same submission goes to these forms too (each a queue job of its own)
    also: tuple[str, ...] = setting(
        (), "other forms (slugs) the same submission goes to after this form's own delivery",
        field=lambda **kw: fields.List(fields.String(validate=validate.Regexp(SLUG, error="not a form slug")), **kw),
        convert=lambda slugs: tuple(dict.fromkeys(slugs)))
    # [[forms.x.webhooks]]: signed Standard Webhooks notifications
    webhooks: tuple[WebhookConfig, ...] = setting(
        (), "signed Standard Webhooks notifications (an array of tables)",
        field=lambda **kw: fields.List(fields.Dict(), **kw))
    # The funnel (core/funnel.py): the touch the CRM is credited with, a queued answer's page, the thank-you ladder.
    attribution: str = setting(DEFAULT_ATTRIBUTION, "which campaign touch the CRM is credited with",
                               validate=validate.OneOf(ATTRIBUTION))
    queued_url: str | None = setting(None, "where a plain HTML form post goes when it was queued "
                                           "(default: success_url)", field=url_field)
    thanks: ThanksSettings | None = setting(None, "the thank-you ladder shown after a success (a table)")

    def localized(self, table: Mapping[str, Any], language: str, tag: str | None) -> Any:
        """The entry of a per-language table for an answer: the exact tag (fr-ca), else the language (fr)."""
        if tag and tag.lower() in table:
            return table[tag.lower()]
        return table.get(language)


RelaySchema = schema_for(RelaySettings)
LoggingSchema = schema_for(LoggingSettings)
MetricsSchema = schema_for(MetricsSettings)
OSDISchema = schema_for(OSDISettings)
# The keys every form has, as a dict (the form parser builds the FormConfig); the provider's schema checks the rest.
CommonFormSchema = schema_for(FormConfig, make=lambda data: data, unknown=EXCLUDE, name="CommonFormSchema")
COMMON_FORM_KEYS = frozenset(CommonFormSchema().fields)

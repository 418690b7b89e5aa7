"""Engaging Networks (ENS) page processing: a cached ens-auth-token, fields checked against the account, budgeted calls."""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

from marshmallow import Schema, ValidationError, fields, validate

from formrelay import metrics
from formrelay.core import logs
from formrelay.budget import Budget
from formrelay.core.config import FormConfig, RelaySettings, rate_ok
from formrelay.core.settings import derived, schema_for, setting, url_field
from formrelay.core.errors import DefinitionError, TryLater
from formrelay.forms import attribution
from formrelay.forms.fields import Definition, FieldSpec, Option, to_text
from formrelay.core.i18n import Msg
from formrelay.core.i18n import gettext as _
from formrelay.forms.person import BY_TYPE, PersonMapping, match_fields
from formrelay.core.outcome import Outcome
from formrelay.core.suggest import did_you_mean
from formrelay.providers.base import (
    Provider,
    SharedToken,
    json_or_none,
    may_have_arrived,
)
from formrelay.forms.submission import Submission

log = logging.getLogger(__name__)

INVALID_TOKEN = "Invalid ens-auth-token"
API_LIMIT = "exceeded its api limit"
# What ENS's own pages put in txn1..txn5 (confirmed); the API calls txn1..txn10 "external references" and copies
# nothing by itself, so the relay fills them only as a form's `txn_from_page` says (an account's own external
# references are never overwritten by default).
TXN_NAMES = tuple(f"txn{i}" for i in range(1, 11))
# Inferred (campaign practice; not in the API documents we have): ENS's own pages read trackingId from the URL's
# ea.tracking.id. The body key trackingId itself is documented. Sites can name another parameter per form.
TRACKING_PARAM = "ea.tracking.id"
MANAGE_SUPPORTERS = ("supporter lookups (fields, questions, origin source) need the API user's "
                     "'Manage individual supporters' permission")
CONTACT_SUBJECT, CONTACT_MESSAGE = "contact_subject", "contact_message"
YES, NO = Msg("Yes"), Msg("No")
PUBLIC_REFUSAL = Msg("The campaign's system did not accept this submission.")

# Known formats of standard supporter fields, by their `property` (OpenAPI supporter schema, confirmed).
PROPERTY_FORMATS: Mapping[str, dict[str, Any]] = {
    "emailAddress": {"type": "email", "max_length": 500},
    "firstName": {"max_length": 500},
    "lastName": {"max_length": 500},
    "postcode": {"max_length": 200},
    "phoneNumber": {"type": "tel", "max_length": 200},
    "dateOfBirth": {"type": "date"},
}
# Inferred: other supporter fields publish no length; 500 matches the documented name fields.
DEFAULT_FIELD_MAX = 500
GEN_MAX = 2000
QUESTION_WIDGETS = {"checkbox": "checkbox", "radio": "radio", "select": "select", "textarea": "textarea",
                    "telephone": "tel", "calendar": "date", "text": "text"}


def _api_budget_ok(value: str) -> None:
    from limits import parse

    try:
        parse(value)
    except ValueError:
        raise ValidationError("not a rate such as '5000/hour'") from None


@dataclass(frozen=True)
class ENSSettings:
    """[providers.ens]."""

    base_url: str = setting(meaning="your account's data centre: https://ca.engagingnetworks.app/ens/service "
                                    "(or us., us2.)", field=url_field, convert=lambda url: url.rstrip("/"))
    api_token: str = setting(meaning="the API user's token, posted to /authenticate", validate=validate.Length(min=1))
    page_budget: str = setting("200/5minute", "page processing calls allowed (ENS: 200 per 5 minutes per source "
                                              "IP); beyond, submissions are queued",
                               validate=lambda v: rate_ok(v, "200/5minute"))
    budget_wait: float = setting(0.0, "seconds a submission may wait for budget before it is queued",
                                 validate=validate.Range(min=0, max=30))
    token_margin: float = setting(300.0, "seconds before its expiry an ens-auth-token is renewed",
                                  validate=validate.Range(min=0))
    # Documented: 5,000 requests an hour per API user, blocked beyond; every call counts (authenticate,
    # definition lookups, page processing, origin source).
    api_budget: str = setting("5000/hour", "every call to ENS (ENS allows 5,000 an hour per API user)",
                              validate=_api_budget_ok)


ENSSettingsSchema = schema_for(ENSSettings)


@dataclass(frozen=True)
class ENSField:
    """[forms.x.fields.<name>] of an ENS form: a supporter field or question, by its name in the account."""

    name: str = derived()
    required: bool = setting(False, "whether the field must be filled in")
    label: str | None = setting(None, "the field's label (default: the account's)")


FieldSchema = schema_for(ENSField, make=lambda data: data)  # the name comes from the table around it


@dataclass(frozen=True)
class ContactMessage:
    """[forms.x.contact_message] of an ENS form: the message sent to the target."""

    subject: str = setting(meaning="the message's subject")
    message: str = setting(meaning="the message's text")
    editable: bool = setting(False, "whether the supporter may change them (contact_subject, contact_message)")


ContactSchema = schema_for(ContactMessage)


@dataclass(frozen=True)
class OriginTable:
    """origin_source = {code, category}: the separate /supporter/{id}/originsource call."""

    code: str = setting(meaning="the origin source's code")
    category: str = setting(meaning="the origin source's category")


OriginSchema = schema_for(OriginTable, make=lambda data: data)


class OriginSource(fields.Field):
    """`origin_source = "web"` (the body field) or `{code, category}` (the separate call)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, str):
            if not value.strip() or len(value) > 255:
                raise ValidationError("a non-empty text of at most 255 characters")
            return value.strip()
        if isinstance(value, Mapping):
            return OriginSchema().load(value)
        raise ValidationError('a text (sent as originSource) or a table {code = "...", category = "..."}')


@dataclass(frozen=True)
class ENSForm:
    """A [forms.x] table with provider = "ens"."""

    page_id: int = setting(meaning="the ENS page the submissions are processed on",
                           validate=validate.Range(min=1))
    fields: tuple[ENSField, ...] = setting(
        meaning="the page's fields by their names in the account: name = {required, label}",
        field=lambda **kw: fields.Dict(keys=fields.String(), values=fields.Nested(FieldSchema), **kw),
        validate=validate.Length(min=1))
    contact_message: ContactMessage | None = setting(None, "the message to the target: {subject, message, "
                                                           "editable}")
    demo: bool = setting(False, "ENS test mode (email-to-target mail goes to the supporter only)")
    suppress_auto_responder: bool = setting(False, "send suppressAutoResponder: no autoresponder email")
    appeal_code: str | None = setting(None, "sent as appealCode")
    tracking_id: str | None = setting(None, "sent as trackingId when the page gives none (tracking_from_page)")
    campaign_references: tuple[str, ...] = setting((), "sent as txn6..txn10, in order",
                                                   validate=validate.Length(max=5))
    # A string: sent as `originSource` in the process body (documented, CONTRACT section 8). A {code, category}
    # table: the separate /supporter/{id}/originsource call, only for operators who ask for it.
    origin_source: str | Mapping[str, str] | None = setting(
        None, "a text sent as originSource, or {code, category} for the separate origin-source call",
        field=lambda **kw: OriginSource(allow_none=True, **kw), kind="string or table", table=OriginSchema)
    locale: str | None = derived(None)  # the form's own locale, when it forces one
    # txnN -> the page context key it carries (e.g. txn1 = "utm_source", txn2 = "first.source"); empty: no page
    # value goes into txn. A bare key is the credited touch's (forms/attribution.py), `first.`/`last.` either one.
    txn_from_page: Mapping[str, str] = setting(
        meaning="external references filled from the page: txnN = a page context key (utm_source, first.source, "
                "...)", default_factory=dict,
        field=lambda **kw: fields.Dict(keys=fields.String(validate=validate.OneOf(TXN_NAMES)),
                                       values=fields.String(validate=validate.OneOf(attribution.REFS)), **kw))
    # The attribution parameter whose value (from the credited touch or the page) is sent as `trackingId`,
    # ahead of `tracking_id`; "" never takes it from the page.
    tracking_from_page: str = setting(TRACKING_PARAM, "the page parameter sent as trackingId, ahead of "
                                                      "tracking_id (\"\": never from the page)",
                                      validate=validate.OneOf(("", *attribution.REFS)))
    # Documented opt-ins only ever send "Y"; "N" for an existing supporter can opt them out. "omit" (default)
    # leaves an unticked opt-in box out; "N" sends it as N, for forms whose purpose is to record a refusal.
    unticked_opt_ins: str = setting("omit", "an unticked opt-in box: left out (omit) or sent as N",
                                    validate=validate.OneOf(["omit", "N"]))
    phone_region: str = setting("GB", "the region of phone numbers typed without a country code",
                                validate=validate.Length(equal=2), convert=str.upper)
    extra: Mapping[str, Any] = derived(default_factory=dict)


def _form(data: dict[str, Any]) -> ENSForm:
    taken = {f"txn{i + 6}" for i in range(len(data["campaign_references"]))}
    clash = sorted(taken & set(data["txn_from_page"]), key=lambda t: int(t[3:]))
    if clash:
        raise ValidationError({"txn_from_page": [f"{', '.join(clash)} already carry campaign_references"]})
    return ENSForm(**{**data, "fields": tuple(ENSField(name, f["required"], f["label"])
                                              for name, f in data["fields"].items())})


ENSFormSchema = schema_for(ENSForm, make=_form)


def token_lifetime(expires: Any, now: float) -> float:
    """Seconds a token may be used, from the authenticate answer's `expires`, never more than an hour (pure).

    Live transcripts show a lifetime in milliseconds (3600000); the documentation only says "an expiry date", so
    an epoch timestamp (milliseconds or seconds) is read as one (inferred), and nothing is cached past an hour.
    """
    try:
        value = float(expires)
    except (TypeError, ValueError):
        return 3600.0
    if value != value or value <= 0:  # NaN or nonsense
        return 3600.0
    if value > 1e11:  # epoch milliseconds (1e11 ms of lifetime would be three years)
        seconds = value / 1000.0 - now
    elif value > 1e9:  # epoch seconds (as a lifetime in ms this would be 11 days)
        seconds = value - now
    else:
        seconds = value / 1000.0
    return min(max(seconds, 1.0), 3600.0)


class AuthProblem(TryLater):
    """The relay cannot authenticate (bad key, hourly API limit): an operator must know; submissions wait."""


def field_spec(name: str, conf: ENSField, supporter_field: Mapping[str, Any] | None,
               question: Mapping[str, Any] | None, detail: Any, phone_region: str) -> FieldSpec:
    """One configured name -> FieldSpec, from the account's field or question (pure)."""
    label = conf.label
    if supporter_field is not None:
        known = PROPERTY_FORMATS.get(str(supporter_field.get("property") or ""), {})
        ftype = known.get("type", "text")
        return FieldSpec(
            name=name, label=label or name, type=ftype, required=conf.required,
            max_length=known.get("max_length", None if ftype == "date" else DEFAULT_FIELD_MAX),
            format="email" if ftype == "email" else ("phone" if ftype == "tel" else None),
            phone_region=phone_region,
        )
    assert question is not None
    qtype = str(question.get("type", "GEN")).upper()
    locale = _first_locale(detail)
    label = label or str(locale.get("label") or question.get("name") or name)
    options = _question_options(locale)
    widget = QUESTION_WIDGETS.get(str(locale.get("htmlFieldType", "")).lower())
    if qtype == "OPT":
        if widget in ("radio", "select"):
            return FieldSpec(name=name, label=label, type=widget, required=conf.required,
                             options=options or (Option("Y", YES), Option("N", NO)))
        return FieldSpec(name=name, label=label, type="checkbox", required=conf.required)
    if qtype == "CONF":
        return FieldSpec(name=name, label=label, type=widget if widget in ("radio", "select") else "select",
                         required=conf.required,
                         options=options or (Option("Y", YES), Option("P", Msg("Pending")), Option("N", NO)))
    if options and widget in ("radio", "select", "checkbox"):
        return FieldSpec(name=name, label=label, type=widget, required=conf.required, options=options,
                         multiple=widget == "checkbox")
    return FieldSpec(name=name, label=label, type=widget if widget in ("textarea", "date", "tel") else "text",
                     required=conf.required, max_length=GEN_MAX,
                     format="phone" if widget == "tel" else None, phone_region=phone_region)


def _first_locale(detail: Any) -> Mapping[str, Any]:
    if isinstance(detail, list) and detail and isinstance(detail[0], Mapping):
        return detail[0]
    return detail if isinstance(detail, Mapping) else {}


def _question_options(locale: Mapping[str, Any]) -> tuple[Option, ...] | None:
    content = locale.get("content")
    data = content.get("data") if isinstance(content, Mapping) else None
    if not isinstance(data, list):
        return None
    out = tuple(Option(str(d.get("value")), str(d.get("label", d.get("value"))))
                for d in data if isinstance(d, Mapping) and d.get("value") is not None)
    return out or None


# The person model in the account's supporter fields, by their standard `property` first (which survives an
# account renaming "Postcode" to "ZIP"), then by the usual field names. emailAddress, firstName, lastName,
# postcode and phoneNumber are confirmed properties; address1, address2, city, region, country are inferred.
PERSON_PROPERTIES: Mapping[str, str] = {
    "given_name": "firstName", "family_name": "lastName", "email": "emailAddress", "phone": "phoneNumber",
    "street": "address1", "street2": "address2", "locality": "city", "region": "region",
    "postal_code": "postcode", "country": "country",
}
PERSON_NAMES: Mapping[str, tuple[str, ...]] = {
    "given_name": ("First Name",), "family_name": ("Last Name",), "email": ("Email Address",),
    "phone": ("Phone Number",), "street": ("Address 1",), "street2": ("Address 2",), "locality": ("City",),
    "region": ("Region",), "postal_code": ("Postcode",), "country": ("Country",),
}


def person_mapping_for(definition: Definition) -> PersonMapping:
    """The form's supporter fields <-> the person model (pure); questions take custom fields of their own name."""
    properties: Mapping[str, str] = definition.extra.get("properties", {})
    candidates = {
        key: (*[name for name, prop in properties.items() if prop == PERSON_PROPERTIES.get(key)], *names)
        for key, names in PERSON_NAMES.items()
    }
    return match_fields(definition, candidates, custom="{key}", by_type=BY_TYPE)


def build_payload(form: ENSForm, definition: Definition, values: Mapping[str, Any],
                  context: Mapping[str, str], page_options: Mapping[str, Any] | None = None,
                  locale: str | None = None) -> dict[str, Any]:
    """Validated values -> the page/process body (pure). Campaign references come from config, never the browser;
    the page may switch the auto-responder off only where [forms.x.osdi] allowed it (page_options).

    `locale` is the form's own (config) or else the supporter's negotiated tag, e.g. fr-CA. ENS's OpenAPI confirms
    the key with the example "de-DE"; that it takes any language-REGION tag and falls back to the page's default
    locale for one the page lacks is inferred, so a tag is only sent when the supporter's language was known.
    """
    questions_kind: Mapping[str, str] = definition.extra.get("questions", {})
    supporter: dict[str, Any] = {}
    questions: dict[str, str] = {}
    for spec in definition.fields:
        if spec.name not in values or spec.name in (CONTACT_SUBJECT, CONTACT_MESSAGE):
            continue
        value = values[spec.name]
        if spec.name in questions_kind:
            if isinstance(value, bool):
                if not value and form.unticked_opt_ins == "omit":
                    continue  # an unticked box says nothing: "N" could opt an existing supporter out
                questions[spec.name] = "Y" if value else "N"
            else:
                questions[spec.name] = ",".join(to_text(v) for v in value) if isinstance(value, list) else to_text(value)
        else:
            supporter[spec.name] = ",".join(to_text(v) for v in value) if isinstance(value, list) else to_text(value)
    if questions:
        supporter["questions"] = questions
    body: dict[str, Any] = {
        "demo": form.demo,
        "suppressAutoResponder": form.suppress_auto_responder or (page_options or {}).get("autoresponse") is False,
        "supporter": supporter,
    }
    if form.appeal_code:
        body["appealCode"] = form.appeal_code
    # The credited touch's (or the page's) TRACKING_PARAM first, as ENS's own pages do; config is the fallback.
    tracking = attribution.lookup(context, form.tracking_from_page) if form.tracking_from_page else ""
    if tracking or form.tracking_id:
        body["trackingId"] = tracking[:255] or form.tracking_id
    if locale or form.locale:
        body["locale"] = locale or form.locale
    if isinstance(form.origin_source, str):
        body["originSource"] = form.origin_source
    for txn, key in form.txn_from_page.items():
        value = attribution.lookup(context, key)
        if value:
            body[txn] = value[:255]
    for i, reference in enumerate(form.campaign_references[:5]):
        body[f"txn{i + 6}"] = reference
    if form.contact_message is not None:
        subject, message = form.contact_message.subject, form.contact_message.message
        if form.contact_message.editable:
            subject = str(values.get(CONTACT_SUBJECT) or subject)
            message = str(values.get(CONTACT_MESSAGE) or message)
        body["contactMessage"] = {"subject": subject, "message": message}
    return body


def read_answer(status: int, body: Any, definition: Definition) -> Outcome:
    """ENS's answer -> Outcome or TryLater (pure). Success is HTTP 200 AND status SUCCESS, nothing else."""
    if status != 200 or not isinstance(body, Mapping):
        raise TryLater(f"ens: page processing answered HTTP {status}", may_have_arrived=may_have_arrived(status) or status == 200)
    result = str(body.get("status", "")).upper()
    if result == "SUCCESS":
        supporter_id = body.get("supporterId")
        return Outcome("delivered", upstream_status=status,
                       reference=str(supporter_id) if supporter_id is not None else None)
    if result == "ERROR":
        text = str(body.get("error") or body.get("message") or "").strip()[:500]
        lowered = text.lower()
        named = [spec.name for spec in definition.fields if spec.name.lower() in lowered]
        if named and text:
            return Outcome("invalid", errors={named[0]: [text]}, upstream_status=status)
        log.warning("ens: page processing refused a submission: %s", text or "(no text)")
        return Outcome("rejected", message=_(PUBLIC_REFUSAL), upstream_status=status)
    raise TryLater(f"ens: page processing answered an unknown status {result!r}", may_have_arrived=True)


class ENS(Provider):
    """ENS pages: POST {base_url}/page/{page_id}/process with a cached ens-auth-token."""

    name: ClassVar[str] = "ens"
    settings_schema: ClassVar[type[Schema]] = ENSSettingsSchema
    form_schema: ClassVar[type[Schema]] = ENSFormSchema
    # ENS matches supporters by email address, so a repeated page process updates the same supporter;
    # it may add a second page-participation record, which is better than losing the signature.
    uncertain_delivery: ClassVar[str] = "retry"

    def __init__(self, settings: ENSSettings, relay: RelaySettings) -> None:
        super().__init__(settings, relay)
        self.tokens = SharedToken("ens", f"{settings.base_url} {settings.api_token}", self.authenticate,
                                  lambda lifetime: min(self.settings.token_margin, lifetime / 2))
        # ENS allows 200 page-process calls per 5 minutes per source IP; the relay is one IP for everyone,
        # and with Redis every host spends the same budget (inferred: hosts behind one NAT share that IP).
        self.budget = Budget("ens-page-process", settings.page_budget, relay.redis_url or "memory://")
        # The 5,000 calls an hour belong to the API user, whichever process or host spends them (documented).
        user = hashlib.sha256(f"{settings.base_url} {settings.api_token}".encode()).hexdigest()[:16]
        self.api_budget = Budget(f"ens-api-user-{user}", settings.api_budget, relay.redis_url or "memory://")
        self.auth_state: dict[str, Any] = {"state": "not yet authenticated"}
        self._lookups: dict[str, Any] = {}
        self._lookup_lock = threading.Lock()

    # -- authentication ----------------------------------------------------------------------------

    def authenticate(self) -> tuple[str, float]:
        """POST the API token as the raw body; (token, lifetime in seconds). Never logs the answer raw."""
        self._spend()
        response = self.request(
            "POST", f"{self.settings.base_url}/authenticate", data=self.settings.api_token.encode("utf-8"),
            # Documented with the charset: `Content-Type: application/json; charset=UTF-8`.
            headers={"Content-Type": "application/json; charset=UTF-8", "Accept": "application/json"},
        )
        body = json_or_none(response)
        if response.status_code == 200 and isinstance(body, Mapping) and body.get("ens-auth-token"):
            token = str(body["ens-auth-token"])
            logs.add_secrets([token])
            lifetime = token_lifetime(body.get("expires", 3_600_000), time.time())
            self.auth_state = {"state": "ok", "since": time.time()}
            metrics.TOKEN_REFRESHES.labels("ens", "ok").inc()
            return token, lifetime
        message = str(body.get("message", "")) if isinstance(body, Mapping) else ""
        if response.status_code == 401 and API_LIMIT in message:
            problem = "the API user has exceeded its hourly API limit (5,000 calls)"
        elif response.status_code == 401:
            # The body echoes the key ("Invalid api key [<key>]"): it is never logged or passed on.
            host = urlsplit(self.settings.base_url).netloc
            problem = (f"the API token was refused by {host}: check api_token, that this server's address is "
                       "whitelisted for the API user, and that the account lives in this data centre "
                       "(ca., us. or us2.engagingnetworks.app)")
        else:
            problem = f"authenticate answered HTTP {response.status_code}"
        self.auth_state = {"state": "failing", "problem": problem, "since": time.time()}
        metrics.TOKEN_REFRESHES.labels("ens", "failed").inc()
        log.error("ens: cannot authenticate: %s", problem)
        raise AuthProblem(f"ens: {problem}", retry_after=60)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """An authenticated call, counted against the API user's hourly budget.

        Re-authenticates and retries once on any 401 but the documented API-limit one: the documented expiry text
        is 'Invalid ens-auth-token', but recovery should not hang on one exact wording.
        """
        extra_headers = kwargs.pop("headers", {})
        each_send = kwargs.pop("each_send", None)
        for attempt in (1, 2):
            token = self.tokens.get()
            headers = {"ens-auth-token": token, "Accept": "application/json", **extra_headers}
            if each_send is not None:
                each_send()  # e.g. the page budget: a page process sent again after re-authenticating counts again
            self._spend()
            response = self.request(method, f"{self.settings.base_url}{path}", headers=headers, **kwargs)
            if response.status_code != 401:
                return response
            answer = json_or_none(response)
            message = str(answer.get("message", "")) if isinstance(answer, Mapping) else ""
            if API_LIMIT not in message and attempt == 1:
                self.tokens.invalidate(token)
                continue
            if API_LIMIT in message:
                self.auth_state = {"state": "failing", "problem": "hourly API limit exceeded", "since": time.time()}
                log.error("ens: the API user has exceeded its hourly API limit")
                raise AuthProblem("ens: the API user has exceeded its hourly API limit", retry_after=300)
            raise AuthProblem(f"ens: HTTP 401 on {path.split('?')[0]}", retry_after=60)
        raise AuthProblem("ens: the session token was refused twice", retry_after=60)

    def _spend(self) -> None:
        """One call from the API user's hourly budget. A failing shared store never stops a call: ENS's own limit
        still answers 401 beyond it, which the relay reads as 'try later'."""
        try:
            self.api_budget.take(wait=self.settings.budget_wait)
        except TryLater:
            raise
        except Exception as exc:
            log.warning("ens: the hourly API budget's store failed (%s); calling without counting", exc.__class__.__name__)

    def _get_json(self, path: str) -> Any:
        response = self.call("GET", path)
        if response.status_code in (204, 404):
            return None
        if response.status_code == 403:
            raise TryLater(f"ens: GET {path} answered HTTP 403: {MANAGE_SUPPORTERS}", retry_after=300)
        if response.status_code != 200:
            raise TryLater(f"ens: GET {path} answered HTTP {response.status_code}")
        body = json_or_none(response)
        if body is None:
            raise TryLater(f"ens: GET {path} did not answer JSON")
        return body

    def _lookup(self, path: str) -> Any:
        """Account-wide lists (fields, questions, question details), cached for the provider's lifetime."""
        with self._lookup_lock:
            if path in self._lookups:
                return self._lookups[path]
        value = self._get_json(path)
        with self._lookup_lock:
            self._lookups[path] = value
        return value

    # -- the provider interface ---------------------------------------------------------------------

    def definition(self, form: FormConfig) -> Definition:
        options: ENSForm = form.options
        with self._lookup_lock:
            self._lookups.clear()  # refreshed with the definition (schema_ttl)
        supporter_fields = self._lookup("/supporter/fields") or []
        questions = self._lookup("/supporter/questions") or []
        by_field = {str(f.get("name")): f for f in supporter_fields if isinstance(f, Mapping)}
        by_question = {str(q.get("name")): q for q in questions if isinstance(q, Mapping)}
        specs: list[FieldSpec] = []
        question_names: dict[str, str] = {}
        properties: dict[str, str] = {}
        missing = []
        for conf in options.fields:
            if conf.name in by_field:
                specs.append(field_spec(conf.name, conf, by_field[conf.name], None, None, options.phone_region))
                properties[conf.name] = str(by_field[conf.name].get("property") or "")
            elif conf.name in by_question:
                question = by_question[conf.name]
                detail = self._lookup(f"/supporter/questions/{question.get('id')}")
                specs.append(field_spec(conf.name, conf, None, question, detail, options.phone_region))
                question_names[conf.name] = str(question.get("type", "GEN")).upper()
            else:
                missing.append(conf.name)
        if missing:
            known = [*by_field, *by_question]
            raise DefinitionError(
                "ens: the account has no supporter field or question named "
                + ", ".join(f"{m!r}{did_you_mean(m, known)}" for m in missing)
            )
        contact = options.contact_message
        if contact is not None and contact.editable:
            specs.append(FieldSpec(CONTACT_SUBJECT, Msg("Subject"), max_length=200))
            specs.append(FieldSpec(CONTACT_MESSAGE, Msg("Your message"), type="textarea", max_length=GEN_MAX))
        page = self._get_json(f"/page/{options.page_id}")
        if page is None:
            raise DefinitionError(f"ens: no page {options.page_id} in this account")
        title = str(page.get("title") or page.get("name") or "") if isinstance(page, Mapping) else ""
        return Definition(title=title, fields=tuple(specs), extra={"questions": question_names, "properties": properties})

    def person_mapping(self, form: FormConfig, definition: Definition) -> PersonMapping:
        return person_mapping_for(definition)

    def deliver(self, form: FormConfig, definition: Definition, submission: Submission) -> Outcome:
        options: ENSForm = form.options
        body = build_payload(options, definition, submission.values, submission.context, submission.page_options,
                             locale=form.locale or submission.locale)
        response = self.call("POST", f"/page/{options.page_id}/process", json=body,
                             each_send=lambda: self.budget.take(wait=self.settings.budget_wait))
        outcome = read_answer(response.status_code, json_or_none(response), definition)
        if outcome.status == "delivered" and isinstance(options.origin_source, Mapping) and outcome.reference:
            self._origin_source(outcome.reference, options.origin_source)
        return outcome

    def _origin_source(self, supporter_id: str, origin: Mapping[str, str]) -> None:
        """A second call after success; its failure is logged and never fails the submission."""
        try:
            response = self.call("POST", f"/supporter/{supporter_id}/originsource",
                                 json={"code": origin["code"], "category": origin["category"]})
            if response.status_code >= 300:
                log.warning("ens: origin source for supporter %s answered HTTP %s", supporter_id, response.status_code)
        except TryLater as exc:
            log.warning("ens: origin source for supporter %s not recorded: %s", supporter_id, exc.reason)

    def check(self, form: FormConfig) -> list[str]:
        return [self.auth_state["problem"]] if self.auth_state.get("state") == "failing" else []

    def warnings(self, form: FormConfig) -> list[str]:
        found = [f"{MANAGE_SUPPORTERS}; every call counts against its {self.settings.api_budget} budget"]
        if isinstance(form.options.origin_source, Mapping):
            found.append("origin_source as a table makes a second call per submission (/supporter/{id}/originsource): "
                         'origin_source = "<value>" sends it in the process body instead (documented)')
        return found

    def probe(self, form: FormConfig) -> str:
        return "answered (authenticated; supporter fields and questions fetched)"

    def shared_tokens(self) -> list[SharedToken]:
        return [self.tokens]

    def status(self) -> dict[str, Any]:
        return {**self.auth_state, "authentications": self.tokens.authentications}

"""NGP VAN (NGP 7) forms: definition -> fields, submission -> urlencoded POST, answer -> outcome."""
from __future__ import annotations

import functools
import html
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from html.parser import HTMLParser
from typing import Any, ClassVar

from marshmallow import Schema, ValidationError, fields, validate

from formrelay.core.config import FormConfig
from formrelay.core.settings import schema_for, setting, url_field
from formrelay.core.errors import DefinitionError, ProviderError, TryLater
from formrelay.forms import attribution
from formrelay.forms.fields import Definition, FieldSpec, Option, to_text
from formrelay.core.i18n import Msg
from formrelay.core.i18n import gettext as _
from formrelay.forms.person import BY_TYPE, PersonMapping, match_fields
from formrelay.forms.regions import CA_PROVINCES, US_MILITARY, US_STATES, US_TERRITORIES
from formrelay.core.outcome import Outcome
from formrelay.providers.base import Provider, json_or_none, may_have_arrived
from formrelay.forms.submission import CARD_FIELD, Submission

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.myngp.com/v2"

# NGP's "states" named list, resolved here: a form titled "State or Province" takes US states, DC, territories,
# military codes and Canadian provinces (inferred from NGP's own forms; the list itself is not published).
STATE_OPTIONS: tuple[Option, ...] = tuple(
    Option(code, name) for code, name in (*US_STATES, *US_TERRITORIES, *US_MILITARY, *CA_PROVINCES))
NAMED_LISTS: Mapping[str, tuple[Option, ...]] = {
    "states": STATE_OPTIONS,
}

# Element types seen in NGP definitions, and the field type each becomes.
FIELD_ELEMENTS = {
    "textfield": "text", "textarea": "textarea", "select": "select", "checkbox": "checkbox",
    "checkboxes": "checkbox", "radio": "radio", "radios": "radio", "email": "email", "tel": "tel",
    "date": "date", "number": "number",
}
NOT_FIELDS = {"markup", "submit", "button", "html", "fieldset"}
# `postalCode` (documented validation name) is checked by the state/province or country the same form carries: a
# US ZIP for US states, Canada Post's format for provinces, a plausible length otherwise (forms/regions.py).
VALIDATIONS = {"email": "email", "phone": "phone", "postalcode": "postal_code"}
PUBLISHED = "Published"  # documented status of a live form; anything else is refused with its deactivation text
# Documented: a closed form's message is the definition's metadata.deactivationHtmlContent.
DEACTIVATION_KEY = "deactivationHtmlContent"
CREDENTIALS_RETRY = 300.0  # seconds between tries while NGP refuses the key
DEACTIVATED = Msg("This form is not accepting submissions at the moment.")
# Card data is tokenised in the browser by NGP's own embed (documented): a ContributionForm cannot be relayed.
REFUSED_TYPES = {"ContributionForm": "card data is tokenised by NGP's own embed and never passes through the relay; "
                                     "link to NGP's own contribution page instead"}
# A retried advocacy submission can send a second message to a target: hold uncertain deliveries instead.
HOLD_TYPES = frozenset({"AdvocacyForm"})
PAGE_VALUE_MAX = 255  # inferred: NGP publishes no length for MarketSource-style hidden values
COUNTRY_NAME = re.compile(r"^country(code|name)?$", re.IGNORECASE)


@dataclass(frozen=True, kw_only=True)
class NGPSettings:
    """[providers.ngp]."""

    base_url: str = setting(DEFAULT_BASE_URL, "NGP VAN's API root: forms live at {base_url}/forms/{form_id}",
                            field=url_field, convert=lambda url: url.rstrip("/"))
    # Documented: "You must attach your API key using BasicAuth when making all API calls" (the one stated
    # exception is the form definition GET), so a keyless configuration could only fill the dead letters.
    api_key: str = setting(meaning="the API key, sent as HTTP Basic apiuser:<key> (server-side only)",
                           field=lambda **kw: fields.String(error_messages={
                               "required": "required: NGP takes submissions only with the API key "
                                           "(Basic auth apiuser:<key>)"}, **kw),
                           validate=validate.Length(min=1))


NGPSettingsSchema = schema_for(NGPSettings)


@dataclass(frozen=True)
class NGPForm:
    """A [forms.x] table with provider = "ngp"."""

    form_id: str = setting(meaning="the form's id in NGP VAN", field=fields.Raw, kind="string or integer",
                           allowed="letters, digits, '-' or '_'")
    phone_region: str = setting("US", "the region of phone numbers typed without a country code",
                                validate=validate.Length(equal=2), convert=str.upper)


def _form(data: dict[str, Any]) -> NGPForm:
    form_id = str(data["form_id"]).strip()
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", form_id):
        raise ValidationError({"form_id": ["letters, digits, '-' or '_'"]})
    return NGPForm(form_id=form_id, phone_region=data["phone_region"])


NGPFormSchema = schema_for(NGPForm, make=_form)


def _options(raw: Any, name: str) -> tuple[Option, ...] | None:
    """Inline option arrays in the shapes seen ({val,label,display}, {value,label}, strings, a mapping)."""
    if isinstance(raw, str):
        named = NAMED_LISTS.get(raw.lower())
        if named is None:
            # Inferred: other named lists exist (countries?). Without the list, accept free text.
            log.warning("ngp: element %s uses an unknown named list %r; accepting free text", name, raw)
        return named
    if isinstance(raw, Mapping):
        return tuple(Option(str(k), str(v)) for k, v in raw.items())
    if isinstance(raw, list):
        out: list[Option] = []
        for item in raw:
            if isinstance(item, Mapping):
                value = item.get("val", item.get("value", item.get("key")))
                if value is None:
                    continue
                label = item.get("label", item.get("display", item.get("text", value)))
                out.append(Option(str(value), str(label)))
            elif isinstance(item, str | int | float):
                out.append(Option(str(item), str(item)))
        return tuple(out) or None
    return None


def _int_or_none(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _spec(element: Mapping[str, Any], kind: str, phone_region: str) -> FieldSpec | None:
    name = str(element["name"])
    options = _options(element.get("options"), name) if "options" in element else None
    ftype = FIELD_ELEMENTS.get(kind, "text")
    if ftype in ("select", "radio") and options is None:
        ftype = "text"
    if ftype == "text" and options:
        ftype = "select"
    fmt = None
    raw_validation = element.get("validation")
    if raw_validation:
        fmt = VALIDATIONS.get(str(raw_validation).lower())
        if fmt is None:
            log.warning("ngp: element %s has an unknown validation %r; not checked", name, raw_validation)
        elif fmt == "email":
            ftype = "email"
        elif fmt == "phone":
            ftype = "tel"
    query = element.get("queryString")
    aliases = (str(query),) if isinstance(query, str) and query and query != name else ()
    minimum = element.get("valueMin")
    maximum = element.get("valueMax")
    return FieldSpec(
        name=name,
        label=str(element.get("title") or element.get("label") or name),
        type=ftype,
        required=bool(element.get("required")),
        max_length=_int_or_none(element.get("maxlength")),
        options=options,
        multiple=kind == "checkboxes" and options is not None,
        format=fmt,
        phone_region=phone_region,
        minimum=float(minimum) if isinstance(minimum, int | float) and ftype == "number" else None,
        maximum=float(maximum) if isinstance(maximum, int | float) and ftype == "number" else None,
        aliases=aliases,
    )


def definition_from_ngp(doc: Mapping[str, Any], phone_region: str = "US") -> Definition:
    """NGP's form definition -> the relay's Definition (pure; unknown element types never crash it)."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("form_elements"), list):
        raise DefinitionError("ngp: the form definition has no form_elements list")
    form_type = doc.get("type")
    if not isinstance(form_type, str) or not form_type:
        raise DefinitionError("ngp: the form definition has no type")
    if form_type in REFUSED_TYPES:
        raise DefinitionError(f"ngp: form {doc.get('formId', '')} is a {form_type}: {REFUSED_TYPES[form_type]}")
    specs: list[FieldSpec] = []
    fixed: dict[str, Any] = {}
    from_page: dict[str, str] = {}  # hidden element name -> the page URL parameter that fills it
    seen: set[str] = set()

    def walk(elements: Iterable[Any], depth: int = 0) -> None:
        if depth > 20:
            raise DefinitionError("ngp: fieldsets nested too deeply")
        for element in elements:
            if not isinstance(element, Mapping):
                continue
            kind = str(element.get("type", "")).lower()
            if kind == "fieldset":
                children = element.get("children")
                if isinstance(children, list):
                    walk(children, depth + 1)
                continue
            if kind in NOT_FIELDS:
                continue
            name = element.get("name")
            if not isinstance(name, str) or not name:
                log.warning("ngp: skipping a %r element without a name", kind)
                continue
            if kind == "hidden":
                fixed[name] = element.get("value", "")
                query = element.get("queryString")
                if isinstance(query, str) and query:
                    # Attribution (MarketSource <- ms, MailingId <- midqs): NGP's own embed reads it from the
                    # page URL; the fixed value stays the fallback.
                    from_page[name] = query
                continue
            if CARD_FIELD.search(name):
                # Card data is tokenised by NGP's own embed; the relay never takes it (PCI scope).
                log.warning("ngp: not offering card element %s: card data never passes through the relay", name)
                continue
            if kind not in FIELD_ELEMENTS:
                log.warning("ngp: unknown element type %r for %s; treating it as text", kind, name)
            if name in seen:
                continue
            seen.add(name)
            spec = _spec(element, kind, phone_region)
            if spec is not None:
                specs.append(spec)

    walk(doc["form_elements"])
    fixed["type"] = form_type
    state = next((s.name for s in specs if s.options is STATE_OPTIONS), None)
    country = next((s.name for s in specs if COUNTRY_NAME.match(s.name)), None)
    specs = [replace(s, region_fields=(state, country)) if s.format == "postal_code" else s for s in specs]
    status = doc.get("status")
    return Definition(
        title=str(doc.get("title") or ""),
        fields=tuple(specs),
        fixed=fixed,
        extra={"form_type": form_type, "form_id": str(doc.get("formId", "")), "from_page": from_page,
               "status": status if isinstance(status, str) else None,
               "deactivation": deactivation_text(doc)},
    )


# The common person model in NGP's element names (seen in NGP's and EveryAction's form definitions; the phone
# and ZIP variants are inferred). The first name a form has wins; a form without them is matched by field type.
PERSON_NAMES: Mapping[str, tuple[str, ...]] = {
    "given_name": ("FirstName",),
    "family_name": ("LastName",),
    "email": ("EmailAddress", "Email"),
    "phone": ("Phone", "MobilePhone", "HomePhone", "WorkPhone", "PhoneNumber"),
    "street": ("AddressLine1",),
    "street2": ("AddressLine2",),
    "locality": ("City",),
    "region": ("StateProvince", "State"),
    "postal_code": ("PostalCode", "ZipCode", "Zip"),
    "country": ("Country",),
    "comments": ("Comments",),
}


def person_mapping_for(definition: Definition) -> PersonMapping:
    """NGP element names <-> the person model (pure); any other element takes the custom field of its own name."""
    return match_fields(definition, PERSON_NAMES, custom="{key}", by_type=BY_TYPE)


def closed(status: str | None) -> bool:
    """Whether a definition's status refuses submissions: anything but Published (a missing status is not read
    as closed, since older definitions may not carry one: inferred)."""
    return status is not None and status.strip().lower() != PUBLISHED.lower()


def deactivation_text(doc: Mapping[str, Any]) -> str:
    """The form's own words for "closed" (metadata.deactivationHtmlContent, documented), as plain text, or ""."""
    metadata = doc.get("metadata")
    text = metadata.get(DEACTIVATION_KEY) if isinstance(metadata, Mapping) else None
    return plain_text(text)[:500] if isinstance(text, str) and text.strip() else ""


def build_payload(definition: Definition, values: Mapping[str, Any],
                  context: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """Validated values -> the urlencoded pairs NGP takes: the form's fields, then its fixed values (pure).

    A hidden element with a `queryString` takes that parameter from the touch the form credits (the campaign
    page the supporter arrived on, forms/attribution.py), else from the page URL when the page carried it.
    """
    pairs: list[tuple[str, str]] = []
    fixed = dict(definition.fixed)
    from_page: Mapping[str, str] = definition.extra.get("from_page", {})
    if from_page and context:
        for name, query in from_page.items():
            value = attribution.lookup(context, query)
            if value:
                fixed[name] = value[:PAGE_VALUE_MAX]
    for spec in definition.fields:
        if spec.name not in values or spec.name in fixed:
            continue
        value = values[spec.name]
        if isinstance(value, list):
            pairs += [(spec.name, to_text(v)) for v in value]
        else:
            pairs.append((spec.name, to_text(value)))
    # Fixed values come last, from the definition (or, for attribution, the page URL): form fields never override them.
    pairs += [(name, to_text(value)) for name, value in fixed.items()]
    return pairs


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


@functools.lru_cache(maxsize=256)  # a form's confirmation text is the same for every submission
def plain_text(markup: str) -> str:
    """NGP's confirmation HTML as plain text for the JSON answer."""
    parser = _Text()
    parser.feed(markup)
    parser.close()
    return re.sub(r"\s+", " ", html.unescape("".join(parser.parts))).strip()


GENERIC_REFUSAL = Msg("The form could not be accepted. Please check your details and try again.")


def read_answer(status: int, body: Any, definition: Definition) -> Outcome:
    """NGP's answer -> an Outcome, or TryLater (pure). Decided by resultCode and errors, not status alone."""
    if status in (408, 425, 429) or status >= 500:
        raise TryLater(f"ngp: HTTP {status}", may_have_arrived=may_have_arrived(status))
    if status in (401, 403):
        # The key is wrong or lacks the permission: a configuration problem, not the supporter's, and asking
        # again soon does not fix it. Kept waiting (not counted as attempts), tried again slowly.
        raise TryLater(f"ngp: HTTP {status}: the API key was refused (check [providers.ngp] api_key)",
                       retry_after=CREDENTIALS_RETRY, misconfigured=True)
    if status == 404:
        raise TryLater("ngp: HTTP 404: the form was not found (check form_id)")
    if not isinstance(body, Mapping):
        raise TryLater(f"ngp: HTTP {status} with a body that is not a JSON object", may_have_arrived=True)
    errors = body.get("errors") or []
    result = body.get("resultCode")
    if result is None and not errors and 200 <= status < 300:
        # Documented: no errors array means success. Without resultCode either, it is read as delivered.
        log.info("ngp: HTTP %s without resultCode or errors; read as delivered", status)
        result = "Success"
    if result == "Success" and not errors and 200 <= status < 300:
        raw_page = body.get("page")
        page: Mapping[str, Any] = raw_page if isinstance(raw_page, Mapping) else {}
        message = None
        content = page.get("confirmationPageContent")
        if isinstance(content, str) and content.strip():
            message = plain_text(content)[:2000] or None
        redirect = None
        for key in ("confirmationRedirectUrl", "redirectUrl", "confirmationUrl"):
            # Inferred key names: the seed only shows DisplayContent confirmations.
            url = page.get(key)
            if isinstance(url, str) and url.startswith(("https://", "http://")):
                redirect = url
                break
        return Outcome("delivered", message=message, redirect=redirect, upstream_status=status)
    return _refusal(status, errors, definition)


def _refusal(status: int, errors: Any, definition: Definition) -> Outcome:
    by_name = {spec.name.lower(): spec.name for spec in definition.fields}
    for spec in definition.fields:
        for alias in spec.aliases:
            by_name.setdefault(alias.lower(), spec.name)
    field_errors: dict[str, list[str]] = {}
    general: list[str] = []
    for error in errors if isinstance(errors, list) else []:
        if not isinstance(error, Mapping):
            continue
        text = str(error.get("text") or "").strip()[:500] or _("This value was not accepted.")
        raw_properties = error.get("properties")
        properties: list[Any] = raw_properties if isinstance(raw_properties, list) else []
        named = [by_name[p.lower()] for p in properties if isinstance(p, str) and p.lower() in by_name]
        for name in named:
            field_errors.setdefault(name, []).append(text)
        if not named:
            general.append(text)
    if field_errors:
        return Outcome(
            "invalid", message=" ".join(general) or None, errors=field_errors, upstream_status=status
        )
    return Outcome("rejected", message=" ".join(general) or _(GENERIC_REFUSAL), upstream_status=status)


class NGP(Provider):
    """NGP VAN forms: GET {base_url}/forms/{id} for the definition, POST the same URL to submit."""

    name: ClassVar[str] = "ngp"
    settings_schema: ClassVar[type[Schema]] = NGPSettingsSchema
    form_schema: ClassVar[type[Schema]] = NGPFormSchema
    # NGP deduplicates contacts by their details; a repeated petition post is matched to the same person.
    uncertain_delivery: ClassVar[str] = "retry"

    def __init__(self, settings: NGPSettings, relay: Any) -> None:
        super().__init__(settings, relay)
        # HTTP Basic apiuser:<key> (documented, on every call); sent from the server only.
        self.http.auth = ("apiuser", settings.api_key)
        self._types: dict[str, str] = {}  # form id -> its type, from the last definition fetched
        self._status: dict[str, str | None] = {}  # form id -> its status, likewise
        self._key_refused = False

    def uncertain_delivery_for(self, form: FormConfig) -> str:
        form_type = self._types.get(form.options.form_id)
        if form_type is None:
            # A worker that restarted may judge a job before it has loaded the form: look the type up once, and
            # hold when it cannot be known (a repeated advocacy message is worse than an operator's look).
            try:
                form_type = self.definition(form).extra["form_type"]
            except ProviderError:
                return "hold"
        return "hold" if form_type in HOLD_TYPES else self.uncertain_delivery

    def url(self, form: FormConfig) -> str:
        return f"{self.settings.base_url}/forms/{form.options.form_id}"

    def person_mapping(self, form: FormConfig, definition: Definition) -> PersonMapping:
        return person_mapping_for(definition)

    def check(self, form: FormConfig) -> list[str]:
        status = self._status.get(form.options.form_id)
        if closed(status):
            return [f"form {form.options.form_id} has status {status!r}, not {PUBLISHED!r}: submissions get 503"]
        return []

    def definition(self, form: FormConfig) -> Definition:
        response = self.request("GET", self.url(form), headers={"Accept": "application/json"})
        if response.status_code == 404:
            raise DefinitionError(f"ngp: no form {form.options.form_id} at {self.settings.base_url}")
        if response.status_code in (401, 403):
            raise DefinitionError(f"ngp: HTTP {response.status_code}: the API key was refused for this form")
        if response.status_code != 200:
            raise TryLater(f"ngp: definition fetch answered HTTP {response.status_code}")
        doc = json_or_none(response)
        if doc is None:
            raise TryLater("ngp: definition fetch answered with something that is not JSON")
        definition = definition_from_ngp(doc, form.options.phone_region)
        self._types[form.options.form_id] = definition.extra["form_type"]
        self._status[form.options.form_id] = definition.extra["status"]
        if closed(definition.extra["status"]):
            log.warning("ngp: form %s has status %r: submissions are refused with its deactivation text",
                        form.options.form_id, definition.extra["status"])
        return definition

    def deliver(self, form: FormConfig, definition: Definition, submission: Submission) -> Outcome:
        if closed(definition.extra.get("status")):
            # Refused now (503) rather than queued to fail for a week; a definition refresh lifts it.
            return Outcome("unavailable", message=definition.extra.get("deactivation") or _(DEACTIVATED))
        response = self.request(
            "POST",
            self.url(form),
            data=build_payload(definition, submission.values, submission.context),
            headers={
                "Content-Type": "application/x-www-form-urlencoded; charset=UTF-8",
                "Accept": "application/json",
            },
        )
        try:
            outcome = read_answer(response.status_code, json_or_none(response), definition)
        except TryLater as exc:
            if exc.misconfigured and not self._key_refused:
                self._key_refused = True  # logged once per change, not once per queued submission
                log.error("%s: submissions wait in the queue until it is fixed", exc.reason)
            raise
        self._key_refused = False
        return outcome

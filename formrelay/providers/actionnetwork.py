"""Action Network (OSDI) action helpers: blind or keyed POSTs, consent-aware person records, 4 calls a second."""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from marshmallow import Schema, ValidationError, fields, validate

from formrelay.budget import Budget
from formrelay.core.config import FormConfig, RelaySettings, rate_ok
from formrelay.core.settings import derived, schema_for, setting, url_field
from formrelay.core.errors import DefinitionError, TryLater
from formrelay.forms.fields import FIELD_TYPES, Definition, FieldSpec, Option, to_text
from formrelay.core.i18n import Msg
from formrelay.core.i18n import gettext as _
from formrelay.forms.person import PersonMapping
from formrelay.core.outcome import Outcome
from formrelay.providers.base import Provider, json_or_none, may_have_arrived
from formrelay.forms.submission import Submission

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://actionnetwork.org/api/v2"
# action -> helper path. Documented: petition, form, event, advocacy_campaign, survey (the changelog: "Added a new
# action type, surveys, ... and the record_response_helper") and the person signup helper (/people, needs a key).
HELPERS: Mapping[str, str] = {
    "petition": "/petitions/{id}/signatures",
    "form": "/forms/{id}/submissions",
    "event": "/events/{id}/attendances",
    "advocacy_campaign": "/advocacy_campaigns/{id}/outreaches",
    "survey": "/surveys/{id}/responses",
    "signup": "/people",
}
# The OSDI jQuery plugin's flat names, so forms built for it keep working (CONTRACT section 5).
STANDARD_FIELDS: tuple[tuple[str, str, str, int], ...] = (
    # The labels are the relay's own words, so they are translated; `labels` in the form's config replaces them.
    ("given_name", Msg("First name"), "text", 255),
    ("family_name", Msg("Last name"), "text", 255),
    ("email_address", Msg("Email"), "email", 255),
    ("phone_number", Msg("Phone"), "tel", 50),
    ("street", Msg("Street address"), "text", 255),
    ("locality", Msg("City"), "text", 255),
    ("region", Msg("State or region"), "text", 255),
    ("postal_code", Msg("Postal code"), "text", 50),
    ("country", Msg("Country"), "text", 2),
)
ALIASES = {"email_address": ("email",), "phone_number": ("phone",)}
# The resource each action's helper belongs to, for `formrelay check` to look the action up (GET, documented).
COLLECTIONS: Mapping[str, str] = {"petition": "petitions", "form": "forms", "event": "events",
                                  "advocacy_campaign": "advocacy_campaigns", "survey": "surveys"}
# The changelog lists the helpers that accept remove_tags ("Added the ability to remove tags on person signup helper,
# record attendance helper, outreach helper, signature helper and submission helper"): not the survey response one.
REMOVE_TAGS_UNDOCUMENTED = frozenset({"survey"})
# Only the person signup helper takes an email status other than "subscribed" (its documentation: "If the person is
# new and unsubscribed is passed, they will be added to the list unsubscribed").
UNTICKED_STATUSES = ("unsubscribed",)
TAG_PAGES = 40  # at most this many pages of /tags are read by `check` (25 a page: 1,000 tags)
PUBLIC_REFUSAL = Msg("Action Network did not accept this submission.")


@dataclass(frozen=True)
class ANSettings:
    """[providers.actionnetwork]."""

    base_url: str = setting(DEFAULT_BASE_URL, "Action Network's API root", field=url_field,
                            convert=lambda url: url.rstrip("/"))
    api_key: str | None = setting(None, "the OSDI-API-Token; without it helpers are posted blind (and signup "
                                        "forms cannot be used)", validate=validate.Length(min=1))
    rate: str = setting("4/second", "calls per second (and per minute, ...) across all threads and hosts",
                        validate=lambda v: rate_ok(v, "4/second"))
    budget_wait: float = setting(2.0, "seconds a submission may wait for a call slot before it is queued",
                                 validate=validate.Range(min=0, max=30))


ANSettingsSchema = schema_for(ANSettings)


@dataclass(frozen=True)
class CustomField:
    """[forms.x.custom_fields.<key>]: a field posted as custom[<key>]."""

    key: str = derived()
    label: str = setting(None, "the field's label (default: its key)")
    type: str = setting("text", "the kind of input", validate=validate.OneOf(FIELD_TYPES))
    required: bool = setting(False, "whether the field must be filled in")
    options: tuple[Option, ...] | None = setting(None, "the choices of a select or radio field",
                                                 field=lambda **kw: fields.List(fields.String(), **kw))
    max_length: int | None = setting(1000, "the longest text accepted (not for checkbox, number, date)",
                                     validate=validate.Range(min=1, max=10_000))


CustomFieldSchema = schema_for(CustomField, make=lambda data: data)  # the key comes from the table around it


@dataclass(frozen=True)
class ANForm:
    """A [forms.x] table with provider = "actionnetwork"."""

    action: str = setting(meaning="the kind of action the form posts to",
                          validate=validate.OneOf(list(HELPERS)))
    action_id: str | None = setting(None, "the action's id in Action Network (every action but signup)",
                                    validate=validate.Regexp(r"^[A-Za-z0-9_-]{1,64}$"))
    autoresponse: bool = setting(True, "ask Action Network to send its autoresponse (never for outreaches)")
    add_tags: tuple[str, ...] = setting((), "tags added to the person (they must exist in Action Network)")
    remove_tags: tuple[str, ...] = setting((), "tags removed from the person (not documented for action "
                                               "helpers: check warns)")
    required: tuple[str, ...] = setting((), "more fields that must be filled in (standard names or custom[key])")
    custom_fields: tuple[CustomField, ...] = setting(
        (), "custom fields, posted as custom[<key>]: key = {label, type, required, options, max_length}",
        field=lambda **kw: fields.Dict(keys=fields.String(validate=validate.Regexp(r"^[A-Za-z0-9_ -]{1,64}$")),
                                       values=fields.Nested(CustomFieldSchema), **kw))
    email_consent_field: str | None = setting(None, "a checkbox: email status subscribed only when it is ticked")
    email_consent_label: str = setting(Msg("Email me updates"), "the email consent checkbox's label")
    sms_opt_in_field: str | None = setting(None, "a checkbox: mobile status subscribed only when it is ticked")
    sms_opt_in_label: str = setting(Msg("Text me updates"), "the SMS opt-in checkbox's label")
    phone_region: str = setting("US", "the region of phone numbers typed without a country code",
                                validate=validate.Length(equal=2), convert=str.upper)
    background: bool = setting(False, "post with ?background_request=true: Action Network answers at once and "
                                      "processes later")
    # The email status sent when the consent box is left unticked (signup forms only); None: no status at all.
    unticked_email_status: str | None = setting(
        None, "the email status sent when the consent box is left unticked (signup forms only; default: none)",
        validate=validate.OneOf(UNTICKED_STATUSES))
    # The person's languages_spoken: None sends the supporter's negotiated language; () sends none.
    languages_spoken: tuple[str, ...] | None = setting(
        None, "the person's languages_spoken, ISO 639-1 codes (default: the supporter's language; [] sends none)",
        field=lambda **kw: fields.List(fields.String(validate=validate.Regexp(r"^[a-z]{2,3}$")), **kw),
        validate=validate.Length(max=10))


def _form(data: dict[str, Any]) -> ANForm:
    if data["action"] != "signup" and not data["action_id"]:
        raise ValidationError({"action_id": [f"required for action {data['action']!r}"]})
    if data["unticked_email_status"] and data["action"] != "signup":
        raise ValidationError({"unticked_email_status": [
            "only the person signup helper (action = 'signup') takes an email status other than 'subscribed'"]})
    if data["unticked_email_status"] and not data["email_consent_field"]:
        raise ValidationError({"unticked_email_status": ["needs email_consent_field: the box it is about"]})
    known = {name for name, *_ in STANDARD_FIELDS} | {"comments"} | {f"custom[{k}]" for k in data["custom_fields"]}
    unknown = [name for name in data["required"] if name not in known]
    if unknown:
        raise ValidationError({"required": [f"unknown field(s): {', '.join(unknown)}"]})
    customs = tuple(
        CustomField(key=key, label=c["label"] or key, type=c["type"], required=c["required"],
                    options=tuple(Option(o, o) for o in c["options"]) if c["options"] else None,
                    max_length=c["max_length"])
        for key, c in data["custom_fields"].items()
    )
    return ANForm(**{**data, "custom_fields": customs})


ANFormSchema = schema_for(ANForm, make=_form)


def definition_for(form: ANForm, title: str) -> Definition:
    """The OSDI person model, plus the form's custom fields and consent boxes, as fields (pure)."""
    specs = [
        FieldSpec(
            name=name, label=label, type=ftype, required=name in form.required,
            max_length=max_length, format="email" if ftype == "email" else ("phone" if ftype == "tel" else None),
            phone_region=form.phone_region, phone_output="digits", aliases=ALIASES.get(name, ()),
        )
        for name, label, ftype, max_length in STANDARD_FIELDS
    ]
    if form.action in ("petition", "advocacy_campaign"):
        specs.append(FieldSpec("comments", Msg("Comments"), type="textarea",
                               required="comments" in form.required, max_length=2000))
    for custom in form.custom_fields:
        name = f"custom[{custom.key}]"
        specs.append(FieldSpec(
            name=name, label=custom.label, type=custom.type, required=custom.required or name in form.required,
            options=custom.options, max_length=custom.max_length if custom.type not in ("checkbox", "number", "date") else None,
        ))
    if form.email_consent_field:
        specs.append(FieldSpec(form.email_consent_field, form.email_consent_label, type="checkbox"))
    if form.sms_opt_in_field:
        specs.append(FieldSpec(form.sms_opt_in_field, form.sms_opt_in_label, type="checkbox"))
    return Definition(title=title, fields=tuple(specs), one_of=(("email_address", "phone_number"),))


# The person model is Action Network's own (OSDI): each person key has its flat field (CONTRACT section 5).
PERSON_FIELDS: Mapping[str, str] = {
    "given_name": "given_name", "family_name": "family_name", "email": "email_address", "phone": "phone_number",
    "street": "street", "locality": "locality", "region": "region", "postal_code": "postal_code",
    "country": "country",
}


def person_mapping_for(form: ANForm) -> PersonMapping:
    """The flat fields <-> the OSDI person (pure): natively, consent boxes as statuses, custom[<key>] fields."""
    mapped = dict(PERSON_FIELDS)
    if form.action in ("petition", "advocacy_campaign"):
        mapped["comments"] = "comments"
    if form.email_consent_field:
        mapped["email_status"] = form.email_consent_field
    if form.sms_opt_in_field:
        mapped["phone_status"] = form.sms_opt_in_field
    return PersonMapping(mapped, custom="custom[{key}]")


def build_payload(form: ANForm, values: Mapping[str, Any], context: Mapping[str, str],
                  page_options: Mapping[str, Any] | None = None, locale: str | None = None) -> dict[str, Any]:
    """Validated values -> the OSDI helper body (pure). Tags and triggers come from config, and from the page only
    where [forms.x.osdi] allowed it (page_options, already filtered by forms/osdi.py). `locale` is the supporter's
    negotiated language tag (e.g. es, fr-CA), None when the browser did not say."""
    page = page_options or {}
    person: dict[str, Any] = {}
    for name in ("given_name", "family_name"):
        if values.get(name):
            person[name] = values[name]
    if values.get("email_address"):
        email: dict[str, Any] = {"address": values["email_address"]}
        if form.email_consent_field and values.get(form.email_consent_field) is True:
            email["status"] = "subscribed"
        elif form.email_consent_field and form.unticked_email_status:
            # Documented for the person signup helper: a new person sent "unsubscribed" is added unsubscribed
            # (without a status a new person is subscribed); an existing subscriber sent it is unsubscribed.
            email["status"] = form.unticked_email_status
        person["email_addresses"] = [email]
    if values.get("phone_number"):
        phone: dict[str, Any] = {"number": values["phone_number"], "number_type": "Mobile"}
        # Mobile subscription needs an explicit opt-in; AN defaults to unsubscribed without it (confirmed).
        if form.sms_opt_in_field and values.get(form.sms_opt_in_field) is True:
            phone["status"] = "subscribed"
        person["phone_numbers"] = [phone]
    address: dict[str, Any] = {}
    if values.get("street"):
        address["address_lines"] = [values["street"]]
    for name in ("locality", "region", "postal_code", "country"):
        if values.get(name):
            address[name] = values[name]
    if address:
        person["postal_addresses"] = [address]
    # OSDI's person has languages_spoken (ISO 639-1 codes, documented on Action Network's person resource).
    languages = form.languages_spoken if form.languages_spoken is not None else (
        (locale.split("-")[0].lower(),) if locale else ())
    if languages:
        person["languages_spoken"] = list(languages)
    custom = {
        c.key: (",".join(to_text(v) for v in values[f"custom[{c.key}]"]) if isinstance(values[f"custom[{c.key}]"], list)
                else to_text(values[f"custom[{c.key}]"]))
        for c in form.custom_fields if f"custom[{c.key}]" in values
    }
    if custom:
        person["custom_fields"] = custom
    body: dict[str, Any] = {"person": person}
    add_tags = list(dict.fromkeys([*form.add_tags, *page.get("add_tags", ())]))
    remove_tags = [t for t in dict.fromkeys([*form.remove_tags, *page.get("remove_tags", ())]) if t not in add_tags]
    if add_tags:
        body["add_tags"] = add_tags
    if remove_tags:
        body["remove_tags"] = remove_tags
    if values.get("comments") and form.action in ("petition", "advocacy_campaign"):
        body["comments"] = values["comments"]
    referrer = {k: context[k] for k in ("source", "referrer") if context.get(k)}
    if referrer:
        # Inferred key: OSDI's referrer_data; AN's resources say action_network:referrer_data.
        body["referrer_data"] = referrer
    if form.autoresponse and form.action != "advocacy_campaign" and page.get("autoresponse") is not False:
        body["triggers"] = {"autoresponse": {"enabled": True}}
    return body


def read_answer(status: int, body: Any, keyed: bool, background: bool = False) -> Outcome:
    """AN's answer -> Outcome or TryLater (pure).

    `background`: the POST carried ?background_request=true, which AN answers at once with `200 {}` and processes
    later (documented), with a key or without: that `{}` is "accepted", not "nothing was created".
    """
    if status == 429 or status >= 500 or status == 408:
        raise TryLater(f"actionnetwork: HTTP {status}", may_have_arrived=may_have_arrived(status))
    if status in (401, 403):
        raise TryLater(f"actionnetwork: HTTP {status}: the API key was refused")
    if status == 404:
        raise TryLater("actionnetwork: HTTP 404: no such action (check action and action_id)")
    if 200 <= status < 300:
        if not keyed or background:
            # A blind POST answers 200 {} for success and failure alike, and a background request answers 200 {}
            # before processing (both documented): all we can say is that AN took it.
            return Outcome("delivered", upstream_status=status)
        if isinstance(body, Mapping) and (body.get("identifiers") or body.get("_links")):
            ids = body.get("identifiers") or []
            return Outcome("delivered", upstream_status=status, reference=str(ids[0]) if ids else None)
        # With a key, an empty body means nothing was created (as the ControlShift client checks).
        log.warning("actionnetwork: keyed POST answered %s without a created resource", status)
        return Outcome("rejected", message=_(PUBLIC_REFUSAL), upstream_status=status)
    text = str(body.get("error", "")) if isinstance(body, Mapping) else ""
    lowered = text.lower()
    if "email" in lowered:
        return Outcome("invalid", errors={"email_address": [text[:300]]}, upstream_status=status)
    if "phone" in lowered:
        return Outcome("invalid", errors={"phone_number": [text[:300]]}, upstream_status=status)
    log.warning("actionnetwork: refused (HTTP %s): %s", status, text[:300] or "(no text)")
    return Outcome("rejected", message=_(PUBLIC_REFUSAL), upstream_status=status)


class ActionNetwork(Provider):
    """Action Network helpers; the key, when configured, is sent from the server only."""

    name: ClassVar[str] = "actionnetwork"
    settings_schema: ClassVar[type[Schema]] = ANSettingsSchema
    form_schema: ClassVar[type[Schema]] = ANFormSchema
    needs_settings: ClassVar[bool] = False

    def __init__(self, settings: ANSettings, relay: RelaySettings) -> None:
        super().__init__(settings, relay)
        # AN allows 4 calls per second per key/IP: the relay holds calls back rather than earn a 429,
        # across every thread, and across hosts when Redis is configured.
        self.budget = Budget("actionnetwork", settings.rate, relay.redis_url or "memory://")
        self._advice: dict[str, list[str]] = {}  # form slug -> what the last check found worth a warning

    def uncertain_delivery_for(self, form: FormConfig) -> str:
        # People and signatures are deduplicated by email/phone upstream; outreaches are not (confirmed).
        return "hold" if form.options.action == "advocacy_campaign" else "retry"

    def url(self, options: ANForm) -> str:
        path = HELPERS[options.action].format(id=options.action_id)
        suffix = "?background_request=true" if options.background else ""
        return f"{self.settings.base_url}{path}{suffix}"

    def person_mapping(self, form: FormConfig, definition: Definition) -> PersonMapping:
        return person_mapping_for(form.options)

    def definition(self, form: FormConfig) -> Definition:
        options: ANForm = form.options
        if options.action == "signup" and not self.settings.api_key:
            raise DefinitionError("actionnetwork: action 'signup' posts to /people, which needs [providers.actionnetwork] api_key")
        return definition_for(options, form.title or options.action.replace("_", " ").capitalize())

    def deliver(self, form: FormConfig, definition: Definition, submission: Submission) -> Outcome:
        options: ANForm = form.options
        self.budget.take(wait=self.settings.budget_wait)
        headers = {"Content-Type": "application/json", "Accept": "application/hal+json, application/json"}
        if self.settings.api_key:
            headers["OSDI-API-Token"] = self.settings.api_key
        started = time.perf_counter()
        response = self.request("POST", self.url(options), json=build_payload(options, submission.values,
                                                                              submission.context,
                                                                              submission.page_options,
                                                                              submission.locale),
                                     headers=headers)
        log.debug("actionnetwork: %s answered %s in %.1f ms", options.action, response.status_code,
                  (time.perf_counter() - started) * 1000)
        return read_answer(response.status_code, json_or_none(response), keyed=bool(self.settings.api_key),
                           background=options.background)

    def probe(self, form: FormConfig) -> str:
        """GET the API entry point. That it exists at {base_url}/ follows OSDI (inferred for Action Network): any
        HTTP answer proves the host right; 401/403 with a key means the key was refused. Nothing is submitted.
        """
        headers = {"Accept": "application/hal+json", "Content-Type": "application/json"}
        if self.settings.api_key:
            headers["OSDI-API-Token"] = self.settings.api_key
        response = self.request("GET", f"{self.settings.base_url}/", headers=headers)
        if response.status_code in (401, 403) and self.settings.api_key:
            raise TryLater(f"actionnetwork: HTTP {response.status_code}: the API key was refused")
        if response.status_code >= 500:
            raise TryLater(f"actionnetwork: HTTP {response.status_code} from the API entry point")
        return f"answered (API entry point: HTTP {response.status_code})"

    def check(self, form: FormConfig) -> list[str]:
        """With a key, look up the configured action, custom fields and tags (GET only), so a wrong action_id
        fails the check instead of queueing every signature for a week."""
        options: ANForm = form.options
        if options.action == "signup" and not self.settings.api_key:
            return ["action 'signup' needs [providers.actionnetwork] api_key"]
        self._advice[form.slug] = []
        if not self.settings.api_key:
            return []
        try:
            return self._look_up(form, options)
        except TryLater as exc:
            return [f"could not look the {options.action} up: {exc.reason}"]

    def _look_up(self, form: FormConfig, options: ANForm) -> list[str]:
        problems: list[str] = []
        if options.action in COLLECTIONS:
            status, _ = self._get(f"/{COLLECTIONS[options.action]}/{options.action_id}")
            if status == 404:
                problems.append(f"no {options.action} {options.action_id!r} in this Action Network group "
                                "(check action and action_id)")
            elif status in (401, 403):
                problems.append(f"HTTP {status}: the API key was refused looking up the {options.action}")
            elif status != 200:
                problems.append(f"looking up the {options.action} answered HTTP {status}")
        if options.custom_fields:
            status, body = self._get("/metadata/custom_fields")
            listed = body.get("action_network:custom_fields") if isinstance(body, Mapping) else None
            if status == 200 and isinstance(listed, list):
                known = {str(f.get("name")) for f in listed if isinstance(f, Mapping)}
                missing = [c.key for c in options.custom_fields if c.key not in known]
                if missing:
                    # Inferred: AN stores a custom field sent by the API even when no record has it yet, so an
                    # unknown key is worth a look (a typo?) rather than a failure.
                    self._advice[form.slug].append(
                        f"custom field(s) {', '.join(repr(m) for m in missing)} are not among the group's custom "
                        "fields yet (a typo, or a new field?)")
            else:
                self._advice[form.slug].append(f"could not list the group's custom fields (HTTP {status})")
        if options.add_tags or options.remove_tags:
            wanted = set(options.add_tags) | set(options.remove_tags)
            found, complete = self._tag_names(wanted)
            missing_tags = sorted(wanted - found)
            if missing_tags and complete:
                # Documented: tags must exist already; an unknown tag is silently ignored, so it would never be set.
                problems.append(f"tag(s) {', '.join(repr(t) for t in missing_tags)} do not exist in this group: "
                                "Action Network ignores unknown tags silently")
            elif missing_tags:
                self._advice[form.slug].append("could not read the whole tag list to confirm "
                                               + ", ".join(repr(t) for t in missing_tags))
        return problems

    def warnings(self, form: FormConfig) -> list[str]:
        options: ANForm = form.options
        found = list(self._advice.get(form.slug, []))
        if options.remove_tags and options.action in REMOVE_TAGS_UNDOCUMENTED:
            found.append("remove_tags on survey responses is not in Action Network's documentation (its changelog "
                         "names the signup, attendance, outreach, signature and submission helpers): confirm once "
                         "that the tags are removed")
        if options.unticked_email_status:
            found.append(f"unticked_email_status = {options.unticked_email_status!r}: a new person who leaves "
                         f"{options.email_consent_field!r} unticked is added {options.unticked_email_status}, and an "
                         f"existing subscriber who leaves it unticked is {options.unticked_email_status} too")
        return found

    def _get(self, path: str) -> tuple[int, Any]:
        """One keyed GET for `check`, within the 4-a-second budget."""
        self.budget.take(wait=max(self.settings.budget_wait, 1.0))
        response = self.request("GET", path if path.startswith("http") else f"{self.settings.base_url}{path}",
                                headers={"Accept": "application/hal+json", "Content-Type": "application/json",
                                         "OSDI-API-Token": self.settings.api_key or ""})
        return response.status_code, json_or_none(response)

    def _tag_names(self, wanted: set[str]) -> tuple[set[str], bool]:
        """Names of the group's tags among `wanted`, and whether every page was read (GET /tags, paginated)."""
        found: set[str] = set()
        url: str | None = "/tags"
        for _ in range(TAG_PAGES):
            if url is None or found >= wanted:
                return found, True
            status, body = self._get(url)
            if status != 200 or not isinstance(body, Mapping):
                return found, False
            embedded = body.get("_embedded")
            tags = embedded.get("osdi:tags") if isinstance(embedded, Mapping) else None
            if not isinstance(tags, list) or not tags:
                return found, True  # past the last page: Action Network still gives a `next` there
            for tag in tags:
                if isinstance(tag, Mapping) and tag.get("name") in wanted:
                    found.add(str(tag["name"]))
            page, pages = body.get("page"), body.get("total_pages")
            if isinstance(page, int) and isinstance(pages, int) and page >= pages:
                return found, True
            links = body.get("_links")
            following = links.get("next") if isinstance(links, Mapping) else None
            href = following.get("href") if isinstance(following, Mapping) else None
            url = href if isinstance(href, str) and href.startswith(self.settings.base_url) else None
        return found, url is None

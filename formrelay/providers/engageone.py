"""EngageOne Communicate: transactional sends from a form (and follow-up emails for any form), with a cached JWT."""
from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from marshmallow import Schema, fields, validate

from formrelay import metrics
from formrelay.core import logs
from formrelay.core.config import FormConfig, RelaySettings
from formrelay.core.settings import schema_for, setting, url_field
from formrelay.core.errors import TryLater
from formrelay.forms.fields import FIELD_TYPES, Definition, FieldSpec, Option, to_text
from formrelay.core.i18n import Msg
from formrelay.core.i18n import gettext as _
from formrelay.forms.person import BY_TYPE, COMMON_NAMES, PersonMapping, match_fields
from formrelay.core.outcome import Outcome
from formrelay.providers.base import (
    Provider,
    SharedToken,
    json_or_none,
    may_have_arrived,
)
from formrelay.forms.submission import Submission

log = logging.getLogger(__name__)

PUBLIC_REFUSAL = Msg("The email could not be sent.")
SEND_KEYS = ("sender", "sender_name", "reply_to", "subject", "project")


@dataclass(frozen=True, kw_only=True)
class EngageOneSettings:
    """[providers.engageone]."""

    users_url: str = setting("https://usersapi.communicate.engageone.co", "the users API, where the relay "
                             "authenticates", field=url_field, convert=lambda url: url.rstrip("/"))
    api_url: str = setting(meaning="the Communicate API root of your account", field=url_field,
                           convert=lambda url: url.rstrip("/"))
    client_id: str = setting(meaning="the API client's id", validate=validate.Length(min=1))
    secret: str = setting(meaning="the API client's secret", validate=validate.Length(min=1))
    customer_id: str = setting(meaning="the customer id sent when authenticating", validate=validate.Length(min=1))
    token_margin: float = setting(300.0, "seconds before its expiry a JWT is renewed", validate=validate.Range(min=0))
    # The PB-Customer-Id header: "the Communicate company's name prefixed with eocm-, spaces as hyphens, case
    # sensitive" (documented). Not necessarily the authenticate body's customer_id; that is the default when unset.
    pb_customer_id: str | None = setting(
        None, "the PB-Customer-Id header: eocm-<company name>, spaces as hyphens (default: customer_id)",
        validate=validate.Regexp(r"^\S+$", error="no spaces: the documented form is eocm-<company name> with "
                                                  "spaces as hyphens"))

    @property
    def company_header(self) -> str:
        return self.pb_customer_id or self.customer_id


EngageOneSettingsSchema = schema_for(EngageOneSettings)


@dataclass(frozen=True)
class Send:
    """What one transactional send needs: campaign, communication and the optional sender details."""

    campaign: str
    communication: str
    email_json_path: str
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EngageOneForm:
    send: Send
    fields: tuple[FieldSpec, ...]


@dataclass(frozen=True)
class Followup:
    """[forms.x.followup]: an email sent after the form's own delivery succeeded."""

    send: Send
    email_field: str | None
    dataset: Mapping[str, str]  # data-set key -> the form's field name


@dataclass(frozen=True, kw_only=True)
class SendKeys:
    """The keys of a transactional send, in a form's table (provider = "engageone") and in [forms.x.followup]."""

    campaign: str = setting(meaning="the Communicate campaign whose transactional send is used",
                            validate=validate.Regexp(r"^[A-Za-z0-9_.-]{1,100}$"))
    communication: str = setting(meaning="the communication (email template) sent",
                                 validate=validate.Length(min=1))
    email_json_path: str = setting("email", "the data-set record's key that holds the address")
    sender: str | None = setting(None, "the sender address, if not the communication's")
    sender_name: str | None = setting(None, "the sender name, if not the communication's")
    reply_to: str | None = setting(None, "the reply-to address, if not the communication's")
    subject: str | None = setting(None, "the subject, if not the communication's")
    project: str | None = setting(None, "the Communicate project, if not the default one")


@dataclass(frozen=True)
class DataField:
    """[forms.x.fields.<name>] of an EngageOne form: one field of the data set."""

    type: str = setting("text", "the kind of input", validate=validate.OneOf(FIELD_TYPES))
    label: str | None = setting(None, "the field's label (default: its name, capitalised)")
    required: bool = setting(False, "whether the field must be filled in")
    max_length: int = setting(500, "the longest text accepted (not for checkbox, number, date)",
                              validate=validate.Range(min=1, max=100_000))
    options: tuple[str, ...] | None = setting(None, "the choices of a select or radio field")


DataFieldSchema = schema_for(DataField, make=lambda data: data)


@dataclass(frozen=True, kw_only=True)
class FormKeys(SendKeys):
    """A [forms.x] table with provider = "engageone": a send, and the data set's fields besides email."""

    fields: Mapping[str, Any] = setting(
        meaning="the data set's fields besides email: name = {type, label, required, max_length, options}",
        default_factory=dict, field=lambda **kw: fields.Dict(
            keys=fields.String(validate=validate.Regexp(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")),
            values=fields.Nested(DataFieldSchema), **kw))


@dataclass(frozen=True, kw_only=True)
class FollowupKeys(SendKeys):
    """[forms.x.followup]: a send, and where its record's values come from."""

    email_field: str | None = setting(None, "the form field holding the address (default: the form's email field)")
    dataset: Mapping[str, str] = setting(meaning="data-set key = the form's field name",
                                         default_factory=dict)


def _send(data: Mapping[str, Any]) -> Send:
    return Send(campaign=data["campaign"], communication=data["communication"],
                email_json_path=data["email_json_path"],
                options={k: data[k] for k in SEND_KEYS if data.get(k)})


def _form(data: dict[str, Any]) -> EngageOneForm:
    declared = dict(data["fields"])
    specs = [FieldSpec("email", "Email", type="email", required=True, max_length=254)]
    for name, conf in declared.items():
        if name == "email":
            continue
        specs.append(FieldSpec(
            name=name, label=conf["label"] or name.replace("_", " ").capitalize(), type=conf["type"],
            required=conf["required"],
            max_length=conf["max_length"] if conf["type"] not in ("checkbox", "number", "date") else None,
            options=tuple(Option(o, o) for o in conf["options"]) if conf["options"] else None,
            format="email" if conf["type"] == "email" else ("phone" if conf["type"] == "tel" else None),
        ))
    return EngageOneForm(send=_send(data), fields=tuple(specs))


EngageOneFormSchema = schema_for(FormKeys, make=_form, name="EngageOneFormSchema")
FollowupSchema = schema_for(FollowupKeys, make=lambda data: Followup(
    send=_send(data), email_field=data["email_field"], dataset=data["dataset"]), name="FollowupSchema")


def jwt_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT, read without checking the signature (only to know when to refresh)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


def build_body(send: Send, record: Mapping[str, Any]) -> dict[str, Any]:
    """One record as the transactional send's dataset (pure)."""
    body: dict[str, Any] = {
        "communication": send.communication,
        "dataset": [dict(record)],
        "email_json_path": send.email_json_path,
        "ignore_missing_fields": True,
    }
    body.update(send.options)
    return body


def record_from(values: Mapping[str, Any], email_json_path: str = "email") -> dict[str, Any]:
    """A form's values as its data-set record, the address under the send's email_json_path (pure).

    The form's own field is always called `email` (CONTRACT section 5); the documented send reads the address
    from the record key `email_json_path` names (e.g. `customer_email`), so the address moves there.
    """
    record = {k: ([to_text(x) for x in v] if isinstance(v, list) else (v if isinstance(v, bool) else to_text(v)))
              for k, v in values.items()}
    if email_json_path != "email" and "email" in record:
        record[email_json_path] = record.pop("email")
    return record


def followup_record(followup: Followup, definition: Definition, values: Mapping[str, Any]) -> dict[str, Any] | None:
    """The follow-up's data-set record from the primary form's values; None without an email address (pure)."""
    email_field = followup.email_field or next((f.name for f in definition.fields if f.type == "email"), None)
    email = values.get(email_field) if email_field else None
    if not email:
        return None
    record: dict[str, Any] = {followup.send.email_json_path: str(email)}
    for key, source in followup.dataset.items():
        if source in values:
            value = values[source]
            record[key] = [to_text(v) for v in value] if isinstance(value, list) else to_text(value)
    return record


def person_mapping_for(definition: Definition) -> PersonMapping:
    """The data set's keys <-> the person model (pure): `email` always, the rest by common key names
    (first_name, last_name, phone, postcode, ...); any other key takes the custom field of its own name."""
    return match_fields(definition, {**COMMON_NAMES, "email": ("email",)}, custom="{key}", by_type=BY_TYPE)


def read_answer(status: int, body: Any, send: Send | None = None) -> Outcome:
    """EngageOne's answer -> Outcome or TryLater (pure). Status codes are not published: 5xx/429 mean later."""
    if status == 429 or status >= 500 or status == 408:
        raise TryLater(f"engageone: HTTP {status}", may_have_arrived=may_have_arrived(status))
    if status in (401, 403):
        # Inferred: a 401/403 with a fresh token is the relay's permission or company header (PB-Customer-Id),
        # not the supporter's submission: keep it and retry once an operator has fixed it, as NGP and AN do.
        raise TryLater(f"engageone: HTTP {status}: the token or PB-Customer-Id was refused "
                       "(check pb_customer_id and the API user's permissions)", retry_after=300)
    if status == 404:
        # Inferred (status codes are not published): a 404 on /campaigns/v2/{campaign}/transactional names a
        # campaign or communication this account lacks, the configuration's fault, not the supporter's. Held for
        # the operator (answered `queued`), so the send is not lost and not retried unchanged.
        what = f"campaign {send.campaign!r} or communication {send.communication!r}" if send else "the campaign"
        raise TryLater(f"engageone: HTTP 404: {what} was not found (check campaign and communication)", hold=True)
    if 200 <= status < 300 and isinstance(body, Mapping) and body.get("send_id"):
        return Outcome("delivered", upstream_status=status, reference=str(body["send_id"]))
    if 200 <= status < 300:
        raise TryLater(f"engageone: HTTP {status} without a send_id", may_have_arrived=True)
    log.warning("engageone: send refused with HTTP %s", status)
    return Outcome("rejected", message=_(PUBLIC_REFUSAL), upstream_status=status)


class EngageOne(Provider):
    """Transactional sends: POST {api_url}/campaigns/v2/{campaign}/transactional with a cached JWT."""

    name: ClassVar[str] = "engageone"
    settings_schema: ClassVar[type[Schema]] = EngageOneSettingsSchema
    form_schema: ClassVar[type[Schema]] = EngageOneFormSchema
    # [forms.x.followup] of any form: an email through EngageOne after that form's own delivery
    followup_schema: ClassVar[type[Schema]] = FollowupSchema
    # A repeated send would mail the supporter twice: hold uncertain sends for an operator.
    uncertain_delivery: ClassVar[str] = "hold"

    def __init__(self, settings: EngageOneSettings, relay: RelaySettings) -> None:
        super().__init__(settings, relay)
        self.tokens = SharedToken(
            "engageone", f"{settings.users_url} {settings.client_id} {settings.customer_id} {settings.secret}",
            self._authenticate, lambda lifetime: min(self.settings.token_margin, lifetime / 2))
        self.auth_state: dict[str, Any] = {"state": "not yet authenticated"}

    @property
    def authentications(self) -> int:
        return self.tokens.authentications

    def token(self) -> str:
        return self.tokens.get()

    def _authenticate(self) -> tuple[str, float]:
        response = self.request(
            "POST", f"{self.settings.users_url}/authenticate",
            json={"client_id": self.settings.client_id, "secret": self.settings.secret,
                  "customer_id": self.settings.customer_id},
            headers={"Accept": "application/json"},
        )
        body = json_or_none(response)
        if response.status_code == 200 and isinstance(body, str) and body.count(".") == 2:
            logs.add_secrets([body])
            expiry = jwt_expiry(body) or (time.time() + 3600)  # one hour seen in issued tokens (inferred)
            self.auth_state = {"state": "ok", "since": time.time()}
            metrics.TOKEN_REFRESHES.labels("engageone", "ok").inc()
            return body, max(expiry - time.time(), 1.0)
        problem = ("the client id, secret or customer id was refused" if response.status_code in (400, 401, 403)
                   else f"authenticate answered HTTP {response.status_code}")
        self.auth_state = {"state": "failing", "problem": problem, "since": time.time()}
        metrics.TOKEN_REFRESHES.labels("engageone", "failed").inc()
        log.error("engageone: cannot authenticate: %s", problem)
        raise TryLater(f"engageone: {problem}", retry_after=60)

    def _invalidate(self, token: str) -> None:
        self.tokens.invalidate(token)

    def send(self, send: Send, record: Mapping[str, Any]) -> Outcome:
        """One transactional send; refreshes the JWT once on 401."""
        url = f"{self.settings.api_url}/campaigns/v2/{send.campaign}/transactional"
        for attempt in (1, 2):
            token = self.token()
            response = self.request("POST", url, json=build_body(send, record), headers={
                "Authorization": f"Bearer {token}", "PB-Customer-Id": self.settings.company_header,
                "Accept": "application/json"})
            if response.status_code == 401 and attempt == 1:
                self._invalidate(token)
                continue
            if response.status_code == 401:
                raise TryLater("engageone: the token was refused twice (check the PB-Customer-Id header, "
                               "pb_customer_id, and the API user's permissions)", retry_after=300)
            return read_answer(response.status_code, json_or_none(response), send)
        raise TryLater("engageone: unreachable")  # pragma: no cover

    def definition(self, form: FormConfig) -> Definition:
        options: EngageOneForm = form.options
        return Definition(title=form.title or options.send.communication, fields=options.fields)

    def person_mapping(self, form: FormConfig, definition: Definition) -> PersonMapping:
        return person_mapping_for(definition)

    def deliver(self, form: FormConfig, definition: Definition, submission: Submission) -> Outcome:
        send: Send = form.options.send
        return self.send(send, record_from(submission.values, send.email_json_path))

    def send_followup(self, followup: Followup, definition: Definition, submission: Submission) -> Outcome:
        record = followup_record(followup, definition, submission.values)
        if record is None:
            return Outcome("rejected", message="no email address to send the follow-up to")
        return self.send(followup.send, record)

    def probe(self, form: FormConfig) -> str:
        self.token()
        return "answered (authenticated)"

    def shared_tokens(self) -> list[SharedToken]:
        return [self.tokens]

    def status(self) -> dict[str, Any]:
        return {**self.auth_state, "authentications": self.authentications}

    def check(self, form: FormConfig) -> list[str]:
        return [self.auth_state["problem"]] if self.auth_state.get("state") == "failing" else []

    def warnings(self, form: FormConfig) -> list[str]:
        # `check` cannot look a campaign or communication up: EngageOne publishes no such call (only the send),
        # so a wrong name shows as held jobs (HTTP 404) in `formrelay queue list`.
        header = self.settings.company_header
        if header.startswith("eocm-"):
            return []
        source = "pb_customer_id" if self.settings.pb_customer_id else "customer_id (pb_customer_id is unset)"
        return [f"PB-Customer-Id {header!r} (from {source}) does not start with 'eocm-': the documentation defines "
                "it as eocm-<company name>, spaces as hyphens, case sensitive; set [providers.engageone] "
                "pb_customer_id"]


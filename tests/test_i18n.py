"""Answers in the supporter's language: negotiation, catalogues, every status in every language, HTML pages."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import responses
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from formrelay import create_app
from formrelay.core import i18n
from formrelay.core.config import ConfigError, parse_config
from formrelay.core.i18n import Msg
from formrelay.forms import fields as form_fields
from formrelay.providers.ens import ENSForm, build_payload
from formrelay.forms.fields import Definition, FieldSpec
from formrelay.web.locale import SNIPPET_TEXTS, STATUS_MESSAGES
from tests.conftest import NGP_FORM_URL, NGP_SUCCESS, base_config

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ("en", "fr", "es", "de", "pt", "nl")
TRANSLATED = SHIPPED[1:]
VALID = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009"}


def said(msgid: str, language: str, **values: object) -> str:
    """What the relay writes for `msgid` in `language`, straight from the catalogue."""
    with i18n.using(language):
        return Msg(msgid).format(**values) if values else i18n.gettext(msgid)


# -- negotiation ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("header", "language", "tag"), [
    ("fr-CA", "fr", "fr-CA"),                                   # a regional tag falls back to its language
    ("es-MX,es;q=0.9,en;q=0.5", "es", "es-MX"),
    ("de-DE", "de", "de-DE"),
    ("pt-BR", "pt", "pt-BR"),
    ("nl-BE", "nl", "nl-BE"),
    ("en;q=0.2, fr;q=0.8, de;q=0.5", "fr", "fr-FR"),             # quality values decide, not order
    ("fr;q=0, de;q=0.1", "de", "de-DE"),                        # q=0 means "not this one"
    ("xx-YY", "en", None),                                      # unknown: the relay's default, no tag for CRMs
    ("it-IT, ja;q=0.9", "en", None),
    ("it-IT, es;q=0.5", "es", "es-ES"),                         # the first language we have, even if lower
    ("*", "en", None),
    ("", "en", None),
    ("fr-Latn-CA", "fr", "fr-CA"),
    (";;;,=q,fr;q=abc", "en", None),                             # junk never fails negotiation
    ("fr;q=abc, de", "de", "de-DE"),                            # an unreadable quality drops that entry only
])
def test_accept_language_negotiation(header, language, tag):
    assert i18n.negotiate(header) == i18n.Choice(language, tag)


def test_the_relay_default_applies_only_when_nothing_matches():
    assert i18n.negotiate("xx-YY", default="fr") == i18n.Choice("fr", None)
    assert i18n.negotiate("de", default="fr").language == "de"


def test_the_shipped_languages_are_found_from_the_catalogues():
    assert set(i18n.available()) == set(SHIPPED) and i18n.available()[0] == "en"


def test_numbers_in_messages_are_written_the_supporters_way():
    assert said("Use at most {max} characters.", "en", max=10000) == "Use at most 10,000 characters."
    assert said("Use at most {max} characters.", "de", max=10000) == "Bitte verwenden Sie höchstens 10.000 Zeichen."
    assert "10\u202f000" in said("Use at most {max} characters.", "fr", max=10000)


# -- the catalogues -------------------------------------------------------------------------------

def source_messages() -> dict[str | tuple[str, str], list[str]]:
    """Every message in the code and templates, found as `pybabel extract -F babel.cfg -k Msg` finds them."""
    method_map = [("formrelay/**.py", "python"), ("formrelay/web/templates/**.html", "jinja2")]
    keywords = {"_": None, "gettext": None, "ngettext": (1, 2), "Msg": None}
    found: dict[str | tuple[str, str], list[str]] = {}
    for filename, _lineno, message, _comments, _context in extract_from_dir(str(ROOT), method_map, keywords=keywords):
        if "sandbox" not in filename:
            found.setdefault(message, []).append(filename)
    return found


def catalogue(language: str):
    with (i18n.CATALOGUES / language / "LC_MESSAGES" / "messages.po").open("rb") as f:
        return read_po(f, locale=language)


def test_every_message_in_the_code_is_translated_in_every_shipped_language():
    messages = source_messages()
    assert len(messages) > 60  # the extractor really found the relay's messages
    for language in TRANSLATED:
        entries = {m.id: m for m in catalogue(language) if m.id}
        for msgid, where in messages.items():
            entry = entries.get(msgid)
            assert entry is not None, f"{language}: {msgid!r} ({where[0]}) is not in the catalogue: pybabel update"
            assert "fuzzy" not in entry.flags, f"{language}: {msgid!r} is fuzzy"
            strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
            assert all(strings), f"{language}: {msgid!r} has no translation"


def test_translations_keep_every_placeholder():
    for language in TRANSLATED:
        for entry in catalogue(language):
            if not entry.id:
                continue
            ids = entry.id if isinstance(entry.id, tuple) else (entry.id,)
            strings = entry.string if isinstance(entry.string, tuple) else (entry.string,)
            wanted = set(re.findall(r"\{\w+\}|%\(\w+\)s", ids[-1]))
            for text in strings:
                assert set(re.findall(r"\{\w+\}|%\(\w+\)s", text)) == wanted, (language, entry.id, text)


def test_the_template_lists_what_the_code_says():
    with (i18n.CATALOGUES / "messages.pot").open("rb") as f:
        template = {m.id for m in read_po(f) if m.id}
    assert template == set(source_messages()), "run pybabel extract (docs/languages.md: adding a language)"


def test_a_missing_translation_falls_back_to_english_never_to_a_key():
    with i18n.using("fr"):
        assert i18n.gettext("A sentence no catalogue has.") == "A sentence no catalogue has."
        assert Msg("Nothing for {x} here.").format(x=3) == "Nothing for 3 here."


def test_every_marshmallow_message_of_every_field_is_the_relays_own():
    """Marshmallow's English defaults ("Not a valid string.") never reach a supporter: each has a Msg."""
    instances = [form_fields.Text(), form_fields.Number(), form_fields.Day(), form_fields.Checkbox(),
                 form_fields.Email(), form_fields.Phone(), form_fields.Many(form_fields.Text())]
    for field in instances:
        for key, message in field.error_messages.items():
            assert isinstance(message, Msg), (type(field).__name__, key, message)
    for validator in (form_fields.Length(max=3), form_fields.Range(min=1, max=2)):
        for name in ("message_min", "message_max", "message_all"):
            assert isinstance(getattr(validator, name), Msg), (validator, name)


# -- the Done-when of the issue: a 422 in fr-CA, es-MX, de-DE, and xx-YY -----------------------------

@pytest.mark.parametrize(("header", "language"), [("fr-CA", "fr"), ("es-MX", "es"), ("de-DE", "de"),
                                                  ("pt-BR", "pt"), ("nl-NL", "nl"), ("xx-YY", "en")])
def test_a_422_speaks_the_supporters_language(client, header, language):
    body = {**VALID, "EmailAddress": "not-an-email"}
    del body["LastName"]
    answer = client.post("/v1/forms/join", json=body, headers={"Accept-Language": header})
    assert answer.status_code == 422
    assert answer.headers["Content-Language"] == language
    assert "Accept-Language" in answer.headers["Vary"] and "Origin" in answer.headers["Vary"]
    data = answer.get_json()
    assert set(data["errors"]) == {"LastName", "EmailAddress"}  # keyed by the contract's field names
    assert data["errors"]["LastName"] == [said("This field is required.", language)]
    assert data["errors"]["EmailAddress"] == [said("Enter a valid email address.", language)]
    assert data["message"] == said("Some fields need attention.", language)
    if language != "en":
        assert data["errors"]["LastName"] != ["This field is required."]
        assert data["message"] != "Some fields need attention."


def test_lengths_options_numbers_and_dates_are_translated_too(mocked):
    raw = base_config()
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    client = create_app(raw).test_client()
    answer = client.post("/v1/forms/join", json={**VALID, "FirstName": "A" * 21, "StateProvince": "Atlantis"},
                         headers={"Accept-Language": "es"})
    errors = answer.get_json()["errors"]
    assert errors["FirstName"] == ["Usa como máximo 20 caracteres."]
    assert errors["StateProvince"] == ["Elige una de las opciones de la lista."]
    two = client.post("/v1/forms/join", json={**VALID, "LastName": ["Lee", "Li"]}, headers={"Accept-Language": "de"})
    assert two.get_json()["errors"]["LastName"] == ["Nur ein Wert ist zulässig."]


# -- every status, in every shipped language ---------------------------------------------------------

def _answer(status: str, language: str, mocked):
    """Make the relay answer `status` for a supporter who reads `language`; the JSON answer."""
    raw = base_config()
    headers = {"Accept-Language": language, "Accept": "application/json"}
    if status == "rate_limited":
        raw["relay"]["rate_limit"] = "1/minute"
    client = create_app(raw).test_client()
    if status == "delivered":
        mocked.post(NGP_FORM_URL, json={"resultCode": "Success", "errors": [], "page": {}, "response": {}})
        return client.post("/v1/forms/join", json=VALID, headers=headers)
    if status == "queued":
        mocked.post(NGP_FORM_URL, status=503)
        return client.post("/v1/forms/join", json=VALID, headers=headers)
    if status == "invalid":
        return client.post("/v1/forms/join", json={}, headers=headers)
    if status == "bad_request":
        return client.post("/v1/forms/join", data=b"{nope", content_type="application/json", headers=headers)
    if status == "forbidden":
        return client.post("/v1/forms/join", json=VALID, headers={**headers, "Origin": "https://evil.example"})
    if status == "not_found":
        return client.post("/v1/forms/nope", json=VALID, headers=headers)
    if status == "method_not_allowed":
        return client.put("/v1/forms/join", json=VALID, headers=headers)
    if status == "too_large":
        return client.post("/v1/forms/join", json={"x": "y" * 70_000}, headers=headers)
    if status == "unsupported_media_type":
        return client.post("/v1/forms/join", data="x", content_type="text/plain", headers=headers)
    if status == "rate_limited":
        client.post("/v1/forms/join", json={}, headers=headers)
        return client.post("/v1/forms/join", json={}, headers=headers)
    if status == "rejected":
        mocked.post(NGP_FORM_URL, json={"resultCode": "Failure", "errors": []})
        return client.post("/v1/forms/join", json=VALID, headers=headers)
    if status == "unavailable":
        mocked.replace(responses.GET, NGP_FORM_URL, status=500)
        return client.post("/v1/forms/join", json=VALID, headers=headers)
    if status == "error":
        app = client.application
        app.extensions["formrelay"].forms["join"].validate = lambda *a, **k: 1 / 0
        return client.post("/v1/forms/join", json=VALID, headers=headers)
    raise AssertionError(status)


EXPECTED = {
    "delivered": None,  # no CRM message: the snippet shows the description's text in the supporter's language
    "queued": "Thank you. We have your submission and will pass it on shortly.",
    "invalid": "Some fields need attention.",
    "bad_request": "The body is not valid JSON in UTF-8.",
    "forbidden": "This form does not accept submissions from this site.",
    "not_found": "There is no form by this name.",
    "method_not_allowed": "This method is not allowed here.",
    "too_large": ("The body is larger than {count} bytes.", {"count": 65536}),
    "unsupported_media_type": "Send application/json, application/x-www-form-urlencoded or multipart/form-data.",
    "rate_limited": "Too many submissions. Please wait a moment and try again.",
    "rejected": "The form could not be accepted. Please check your details and try again.",
    "unavailable": "This form cannot be reached just now. Please try again in a few minutes.",
    "error": "Something went wrong on our side.",
}


@pytest.mark.parametrize("language", SHIPPED)
@pytest.mark.parametrize("status", list(EXPECTED))
def test_every_status_in_every_language(mocked, status, language, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the queue file of "queued" lands here
    answer = _answer(status, language, mocked)
    body = answer.get_json()
    assert body["status"] == status, body
    assert answer.headers["Content-Language"] == language
    if EXPECTED[status] is None:
        assert "message" not in body
        return
    msgid, values = EXPECTED[status] if isinstance(EXPECTED[status], tuple) else (EXPECTED[status], {})
    assert body["message"] == said(msgid, language, **values)
    assert answer.headers["Content-Language"] == language
    assert "Accept-Language" in answer.headers.get("Vary", "")
    if language != "en":
        assert body["message"] != said(msgid, "en", **values)


def test_each_status_has_an_overall_message_in_every_language():
    assert set(STATUS_MESSAGES) >= set(EXPECTED) - {"delivered"}
    for language in TRANSLATED:
        with i18n.using(language):
            for status, message in STATUS_MESSAGES.items():
                assert message.translated() != str(message), (language, status)


# -- choosing and forcing -------------------------------------------------------------------------

def test_a_form_locale_forces_its_language_whatever_the_browser_says(mocked):
    raw = base_config()
    raw["forms"]["join"]["locale"] = "fr-CA"
    client = create_app(raw).test_client()
    answer = client.post("/v1/forms/join", json={}, headers={"Accept-Language": "de-DE"})
    assert answer.headers["Content-Language"] == "fr"
    assert answer.get_json()["errors"]["LastName"] == ["Ce champ est obligatoire."]
    described = client.get("/v1/forms/join", headers={"Accept-Language": "es"})
    assert described.headers["Content-Language"] == "fr" and described.get_json()["locale"] == "fr"


def test_the_relay_default_locale(mocked):
    client = create_app(base_config(locale="de")).test_client()
    assert client.post("/v1/forms/join", json={}).headers["Content-Language"] == "de"
    assert client.post("/v1/forms/join", json={}, headers={"Accept-Language": "xx"}).headers["Content-Language"] == "de"
    assert client.post("/v1/forms/join", json={}, headers={"Accept-Language": "nl"}).headers["Content-Language"] == "nl"


@pytest.mark.parametrize(("relay", "form", "problem"), [
    ({"locale": "it"}, {}, "no catalogue for 'it'"),
    ({}, {"labels": {"it": {"FirstName": "Nome"}}}, "no catalogue for 'it'"),
    ({}, {"titles": {"xx_1": "?"}}, "not a language tag"),
    ({}, {"labels": {"fr": {"FirstName": 3}}}, "labels.fr"),
    ({}, {"locale": "not a tag"}, "language tag"),
])
def test_language_settings_are_checked_at_start_up(relay, form, problem):
    raw = base_config(**relay)
    raw["forms"]["join"].update(form)
    with pytest.raises(ConfigError, match=re.escape(problem)):
        parse_config(raw)


def test_answers_without_text_carry_no_content_language(client):
    assert "Content-Language" not in client.get("/healthz").headers
    assert "Content-Language" not in client.options("/v1/forms/join").headers
    assert "Content-Language" not in client.get("/static/formrelay.js").headers


# -- the description and the snippet's texts ----------------------------------------------------------

def test_the_description_in_spanish_carries_the_snippets_texts(client):
    answer = client.get("/v1/forms/join", headers={"Accept-Language": "es-MX,es;q=0.9"})
    assert answer.headers["Content-Language"] == "es" and "Accept-Language" in answer.headers["Vary"]
    body = answer.get_json()
    assert body["locale"] == "es"
    assert set(body["texts"]) == set(SNIPPET_TEXTS)
    assert body["texts"]["submit"] == "Enviar" and body["texts"]["sending"] == "Enviando…"
    assert body["texts"]["invalid"] == "Corrige los campos marcados."
    for key, english in SNIPPET_TEXTS.items():
        assert body["texts"][key] == said(english, "es") != english, key


def test_the_snippet_keeps_english_fallbacks_under_the_same_keys():
    source = (ROOT / "static" / "formrelay.js").read_text(encoding="utf-8")
    for key, english in SNIPPET_TEXTS.items():
        assert re.search(rf'\b{key}: "', source), key
    assert "words.set(form, description.texts)" in source  # the description's texts are the fallback


def test_labels_and_titles_per_language_for_a_crm_with_one_language(mocked):
    raw = base_config()
    raw["forms"]["join"]["labels"] = {"Comments": "Why?", "fr": {"FirstName": "Prénom", "LastName": "Nom"},
                                      "fr-CA": {"FirstName": "Prénom (Canada)"}}
    raw["forms"]["join"]["titles"] = {"fr": "Signez la pétition", "de": "Unterschreiben Sie"}
    client = create_app(raw).test_client()

    def described(header: str) -> dict:
        return client.get("/v1/forms/join", headers={"Accept-Language": header}).get_json()

    labels = {f["name"]: f["label"] for f in described("fr-FR")["fields"]}
    assert labels["FirstName"] == "Prénom" and labels["LastName"] == "Nom" and labels["Comments"] == "Why?"
    assert labels["EmailAddress"] == "Email"  # NGP's own label, as the organisation wrote it
    assert {f["name"]: f["label"] for f in described("fr-CA")["fields"]}["FirstName"] == "Prénom (Canada)"
    assert described("fr-CA")["title"] == "Signez la pétition"
    english = described("en")
    assert english["title"] == "Sign the clean air petition"
    assert {f["name"]: f["label"] for f in english["fields"]}["FirstName"] == "First name"


def test_the_relays_own_labels_are_translated_for_action_network(mocked):
    raw = {"relay": {"rate_limit": ""}, "providers": {"actionnetwork": {"base_url": "https://an.test/api/v2"}},
           "forms": {"act": {"provider": "actionnetwork", "action": "petition", "action_id": "p-1",
                             "labels": {"de": {"given_name": "Rufname"}}}}}
    client = create_app(raw).test_client()
    german = {f["name"]: f["label"] for f in client.get("/v1/forms/act", headers={"Accept-Language": "de"})
              .get_json()["fields"]}
    assert german["given_name"] == "Rufname" and german["family_name"] == "Nachname"
    assert german["email_address"] == "E-Mail" and german["postal_code"] == "Postleitzahl"
    dutch = client.post("/v1/forms/act", json={"given_name": "An"}, headers={"Accept-Language": "nl"}).get_json()
    assert dutch["errors"]["email_address"] == ["Vul minstens één van deze velden in: E-mail, Telefoon."]


# -- ENS locale ------------------------------------------------------------------------------------

def test_ens_gets_the_forms_locale_else_the_supporters():
    definition = Definition("t", (FieldSpec("Email Address", "Email"),))
    page = ENSForm(page_id=1, fields=())
    assert build_payload(page, definition, {}, {}, locale="fr-CA")["locale"] == "fr-CA"
    assert "locale" not in build_payload(page, definition, {}, {})
    forced = ENSForm(page_id=1, fields=(), locale="en-GB")
    assert build_payload(forced, definition, {}, {})["locale"] == "en-GB"


def test_the_supporters_language_reaches_ens_even_through_the_queue(tmp_path):
    """A French supporter sees ENS labels in French, and her submission, queued during an outage, carries fr-CA."""
    import json

    ens = "https://ens.test/ens/service"
    raw = {"relay": {"rate_limit": ""}, "providers": {"ens": {"base_url": ens, "api_token": "tok-123456"}},
           "forms": {"mp": {"provider": "ens", "page_id": 7, "fields": {"Email Address": {"required": True}},
                            "labels": {"fr": {"Email Address": "Adresse e-mail"}}},
                     "mp-uk": {"provider": "ens", "page_id": 7, "locale": "en-GB",
                               "fields": {"Email Address": {"required": True}}}},
           "queue": {"path": str(tmp_path / "q.sqlite3"), "embedded_worker": False}}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.post(f"{ens}/authenticate", json={"ens-auth-token": "t-1", "expires": 3600000})
        rsps.get(f"{ens}/supporter/fields", json=[{"id": 1, "name": "Email Address", "property": "emailAddress"}])
        rsps.get(f"{ens}/supporter/questions", json=[])
        rsps.get(f"{ens}/page/7", json={"id": 7, "title": "Write"})
        rsps.post(f"{ens}/page/7/process", status=503)
        app = create_app(raw)
        client = app.test_client()
        described = client.get("/v1/forms/mp", headers={"Accept-Language": "fr-CA"}).get_json()
        assert described["fields"][0]["label"] == "Adresse e-mail"
        queued = client.post("/v1/forms/mp", json={"Email Address": "a@example.org"},
                             headers={"Accept-Language": "fr-CA,fr;q=0.9"})
        assert queued.status_code == 202 and queued.headers["Content-Language"] == "fr"
        rsps.replace(responses.POST, f"{ens}/page/7/process", json={"status": "SUCCESS", "supporterId": 5})
        relay = app.extensions["formrelay"]
        (job,) = relay.store.jobs()
        relay.work(job)
        forced = client.post("/v1/forms/mp-uk", json={"Email Address": "b@example.org"},
                             headers={"Accept-Language": "de"})
        assert forced.status_code == 200 and forced.headers["Content-Language"] == "en"
        bodies = [json.loads(c.request.body) for c in rsps.calls if c.request.url.endswith("/process")]
    assert [b.get("locale") for b in bodies] == ["fr-CA", "fr-CA", "en-GB"]


# -- the HTML pages -------------------------------------------------------------------------------

class _Text(HTMLParser):
    """The words a person reads on a page (text nodes, not markup or attributes)."""

    def __init__(self) -> None:
        super().__init__()
        self.words: list[str] = []
        self.lang: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "html":
            self.lang = dict(attrs).get("lang")

    def handle_data(self, data: str) -> None:
        self.words += re.findall(r"[^\W\d_]+", data.lower())


def page_text(html: str) -> _Text:
    parser = _Text()
    parser.feed(html)
    return parser


FRENCH_FORM = {"labels": {"fr": {"LastName": "Nom", "EmailAddress": "Adresse e-mail"}},
               "titles": {"fr": "Signez notre pétition"}}


def test_a_french_422_page_has_lang_fr_and_no_english_left(mocked):
    raw = base_config()
    raw["forms"]["join"].update(FRENCH_FORM)
    client = create_app(raw).test_client()
    body = {"FirstName": "Ann", "EmailAddress": "pas-une-adresse", "PostalCode": "20009"}
    french = client.post("/v1/forms/join", data=body, headers={"Accept-Language": "fr-FR,fr;q=0.9",
                                                               "Referer": "https://www.example.org/join"})
    english = client.post("/v1/forms/join", data=body, headers={"Accept-Language": "en",
                                                                "Referer": "https://www.example.org/join"})
    assert french.status_code == english.status_code == 422 and french.mimetype == "text/html"
    assert french.headers["Content-Language"] == "fr"
    page = page_text(french.get_data(as_text=True))
    assert page.lang == "fr" and page_text(english.get_data(as_text=True)).lang == "en"
    english_words = set(page_text(english.get_data(as_text=True)).words)
    assert len(english_words) > 20
    left = english_words & set(page.words)
    assert left == set(), f"English left on the French page: {sorted(left)}"
    html = french.get_data(as_text=True)
    for expected in ("Ce champ est obligatoire.", "Saisissez une adresse e-mail valide.", "Revenir au formulaire",
                     "Adresse e-mail</strong>", "Nom</strong>", "Signez notre pétition"):
        assert expected in html


@pytest.mark.parametrize("language", TRANSLATED)
def test_error_pages_are_in_the_supporters_language(mocked, language):
    client = create_app(base_config(rate_limit="1/minute")).test_client()
    headers = {"Accept-Language": language}
    client.post("/v1/forms/join", data={}, headers=headers)
    limited = client.post("/v1/forms/join", data={}, headers=headers)
    html = limited.get_data(as_text=True)
    assert limited.status_code == 429 and page_text(html).lang == language
    assert said("Too many attempts", language) in html
    with i18n.using(language):
        wait = i18n.ngettext("Please wait %(num)s second before trying again.",
                             "Please wait %(num)s seconds before trying again.", int(limited.headers["Retry-After"]))
    assert wait % {"num": limited.headers["Retry-After"]} in html


@pytest.mark.parametrize("language", SHIPPED)
def test_the_thank_you_page_in_every_language(mocked, language):
    raw = base_config()
    del raw["forms"]["join"]["success_url"]
    raw["forms"]["join"]["titles"] = {"fr": "Pétition"}
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    client = create_app(raw).test_client()
    headers = {"Accept-Language": language}
    answer = client.post("/v1/forms/join", data=VALID, headers=headers)
    assert answer.status_code == 303
    page = client.get(answer.headers["Location"], headers=headers)
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and page.headers["Content-Language"] == language
    assert page_text(html).lang == language
    assert f"<h1>{said('Thank you', language)}</h1>" in html
    assert said("Your submission has been received.", language) in html
    queued = client.get(answer.headers["Location"].replace("delivered", "queued"), headers=headers)
    assert said("We have your submission and will pass it on shortly.", language) in queued.get_data(as_text=True)
    if language == "fr":
        assert "Pétition" in html


def test_a_form_locale_without_a_catalogue_answers_in_the_default_and_says_so(mocked, caplog):
    raw = base_config(locale="es")
    raw["forms"]["join"]["locale"] = "it-IT"
    with caplog.at_level("WARNING", logger="formrelay.web.locale"):
        client = create_app(raw).test_client()
    assert "no catalogue for locale 'it-IT'" in caplog.text
    answer = client.post("/v1/forms/join", json={}, headers={"Accept-Language": "fr"})
    assert answer.headers["Content-Language"] == "es"
    assert answer.get_json()["errors"]["LastName"] == ["Este campo es obligatorio."]

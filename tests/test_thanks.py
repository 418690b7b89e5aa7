"""The thank-you ladder and per-answer redirects: links from config only, in the answer's language, JSON and HTML."""
from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from openapi_spec_validator import validate

from formrelay import create_app
from formrelay.core.config import ConfigError, parse_config
from formrelay.web.thanks import share_links, with_source
from tests.conftest import NGP_FORM_URL, NGP_SUCCESS, base_config

VALID = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009"}
JSON = {"Accept": "application/json"}
SITE = "https://www.example.org"
THANKS = {"message": {"en": "Thanks, {name}!", "fr": "Merci !"}, "channels": ["copy", "facebook", "x", "whatsapp",
          "email"], "donate_url": "https://give.example.org/clean-air?amount=10", "donate_label": "Chip in $10"}


def app_with(thanks=None, **form):
    raw = base_config()
    raw["forms"]["join"].pop("success_url")
    raw["forms"]["join"].update(form)
    if thanks is not None:
        raw["forms"]["join"]["thanks"] = thanks
    raw["queue"] = {"embedded_worker": False}
    return create_app(raw)


def source_of(url: str, param: str = "source") -> str:
    """The source code carried by the address a share link shares."""
    shared = url if url.startswith("http") and "intent" not in url and "sharer" not in url and "wa.me" not in url \
        else unquote(url.split("=", 1)[1].split("&")[0] if not url.startswith("mailto:") else url.split("body=")[1])
    return parse_qs(urlsplit(shared).query)[param][0]


# -- config ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("thanks", "words"), [
    ({"channels": ["facebook", "myspace"]}, "forms.join.thanks.channels"),
    ({"source_param": "a b"}, "forms.join.thanks.source_param"),
    ({"message": {"it": "Grazie"}}, "forms.join.thanks.message"),
    ({"share_url": "javascript:alert(1)"}, "forms.join.thanks.share_url"),
    ({"donate_url": "ftp://x.org/"}, "forms.join.thanks.donate_url"),
    ({"colour": "red"}, "forms.join.thanks.colour"),
])
def test_thanks_keys_are_checked_at_start_up(thanks, words):
    raw = base_config()
    raw["forms"]["join"]["thanks"] = thanks
    with pytest.raises(ConfigError, match=words):
        parse_config(raw, env={})


def test_queued_url_must_be_a_web_address():
    raw = base_config()
    raw["forms"]["join"]["queued_url"] = "not a url"
    with pytest.raises(ConfigError, match="forms.join.queued_url"):
        parse_config(raw, env={})


# -- links, pure ----------------------------------------------------------------------------------------

def test_each_share_link_carries_its_own_source_code():
    links = share_links(("facebook", "x", "whatsapp", "email", "copy"), f"{SITE}/sign?lang=fr&source=old#top",
                        "source", "Clean air & kids")
    assert [link["channel"] for link in links] == ["facebook", "x", "whatsapp", "email", "copy"]
    assert [source_of(link["url"]) for link in links] == [
        "share-facebook", "share-x", "share-whatsapp", "share-email", "share-copy"]
    by = {link["channel"]: link["url"] for link in links}
    assert by["facebook"].startswith("https://www.facebook.com/sharer/sharer.php?u=https%3A%2F%2Fwww.example.org")
    assert by["x"].startswith("https://x.com/intent/tweet?url=") and by["whatsapp"].startswith("https://wa.me/?text=")
    assert by["email"].startswith("mailto:?subject=Clean%20air%20%26%20kids&body=")  # RFC 6068: %20, never '+'
    assert by["copy"] == f"{SITE}/sign?lang=fr&source=share-copy#top"  # its own other parameters stay
    assert with_source(f"{SITE}/?ref=a", "ref", "x") == f"{SITE}/?ref=share-x"


# -- JSON answers ---------------------------------------------------------------------------------------

def test_a_success_carries_the_ladder_built_from_config_and_the_form_page(mocked):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    client = app_with(THANKS).test_client()
    answer = client.post("/v1/forms/join", json={**VALID, "_page_url": f"{SITE}/petition?source=em-1206&x=1#f"},
                         headers={"Accept-Language": "en"})
    body = answer.get_json()
    assert answer.status_code == 200 and body["ok"] and "redirect" not in body
    thanks = body["thanks"]
    assert thanks["message"] == "Thanks, {name}!"  # the operator's words, as written (nothing filled in)
    assert thanks["share_label"] and thanks["copy"] == "Copy" and thanks["copied"] == "Link copied."
    by = {link["channel"]: link for link in thanks["share"]}
    assert list(by) == ["facebook", "x", "whatsapp", "email", "copy"]  # the ladder's own order
    assert by["copy"]["url"] == f"{SITE}/petition?source=share-copy"  # the page, without its query or fragment
    assert by["facebook"]["label"] == "Share on Facebook"
    assert thanks["donate"] == {"url": "https://give.example.org/clean-air?amount=10", "label": "Chip in $10"}
    text = answer.get_data(as_text=True)
    assert "ann@example.org" not in text and "Ann" not in text.replace("Annonce", "")  # nothing the person typed


def test_the_ladder_speaks_the_supporter_s_language(mocked):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    answer = app_with(THANKS).test_client().post(
        "/v1/forms/join", json={**VALID, "_page_url": f"{SITE}/petition"}, headers={"Accept-Language": "fr-CA"})
    thanks = answer.get_json()["thanks"]
    assert thanks["message"] == "Merci !" and thanks["share"][0]["label"] == "Partager sur Facebook"
    assert thanks["donate"]["label"] == "Chip in $10" and thanks["copied"] == "Lien copié."
    assert answer.headers["Content-Language"] == "fr"


def test_without_a_page_or_share_url_only_the_message_and_donate_remain(mocked):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    client = app_with({"channels": ["facebook"], "donate_url": "https://give.example.org/"}).test_client()
    foreign = client.post("/v1/forms/join", json={**VALID, "_page_url": "https://evil.example/phish"}).get_json()
    assert foreign["thanks"] == {"message": "Thank you! Your submission was received.",
                                 "donate": {"url": "https://give.example.org/", "label": "Donate"}}
    none = client.post("/v1/forms/join", json=VALID).get_json()
    assert "share" not in none["thanks"]


def test_share_url_from_config_wins_and_keeps_its_own_query(mocked):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    client = app_with({"channels": ["x"], "share_url": "https://act.example.org/air?lang=en", "source_param": "ref"}
                      ).test_client()
    (link,) = client.post("/v1/forms/join", json={**VALID, "_page_url": f"{SITE}/p"}).get_json()["thanks"]["share"]
    assert unquote(link["url"].split("url=")[1]) == "https://act.example.org/air?lang=en&ref=share-x"


def test_no_ladder_on_errors_nor_for_forms_without_one(mocked):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    invalid = app_with(THANKS).test_client().post("/v1/forms/join", json={"FirstName": "Ann"}).get_json()
    assert invalid["status"] == "invalid" and "thanks" not in invalid
    assert "thanks" not in app_with().test_client().post("/v1/forms/join", json=VALID).get_json()


def test_a_caught_bot_gets_the_same_ladder_as_a_person(mocked):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    client = app_with(THANKS).test_client()
    person = client.post("/v1/forms/join", json={**VALID, "_page_url": f"{SITE}/p"}).get_json()
    bot = client.post("/v1/forms/join", json={**VALID, "_page_url": f"{SITE}/p", "_hp": "x"}).get_json()
    assert bot == person
    assert len([c for c in mocked.calls if c.request.method == "POST"]) == 1


# -- per-answer redirects -------------------------------------------------------------------------------

def test_a_queued_answer_goes_to_queued_url_and_a_delivered_one_to_success_url(mocked):
    app = app_with(THANKS, success_url=f"{SITE}/thanks", queued_url=f"{SITE}/soon")
    client = app.test_client()
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    assert client.post("/v1/forms/join", json=VALID).get_json()["redirect"] == f"{SITE}/thanks"
    plain = client.post("/v1/forms/join", data=VALID)
    assert plain.status_code == 303 and plain.headers["Location"] == f"{SITE}/thanks"
    mocked.replace("POST", NGP_FORM_URL, status=503)
    queued = client.post("/v1/forms/join", json=VALID)
    assert queued.status_code == 202 and queued.get_json()["redirect"] == f"{SITE}/soon"
    assert queued.get_json()["thanks"]["message"] == "Thanks, {name}!"  # for a snippet told not to follow it
    plain = client.post("/v1/forms/join", data=VALID)
    assert plain.status_code == 303 and plain.headers["Location"] == f"{SITE}/soon"


def test_without_queued_url_a_queued_answer_goes_to_success_url(mocked):
    mocked.post(NGP_FORM_URL, status=503)
    answer = app_with(success_url=f"{SITE}/thanks").test_client().post("/v1/forms/join", json=VALID)
    assert answer.status_code == 202 and answer.get_json()["redirect"] == f"{SITE}/thanks"


# -- the relay's own thank-you page ---------------------------------------------------------------------

def test_a_plain_post_lands_on_a_thank_you_page_with_the_same_ladder(mocked):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    client = app_with({**THANKS, "message": "Thanks <b>all</b>!"}, title="Clean air").test_client()
    posted = client.post("/v1/forms/join", data=VALID, headers={"Referer": f"{SITE}/petition?source=em-1206"})
    assert posted.status_code == 303
    location = posted.headers["Location"]
    assert parse_qs(urlsplit(location).query) == {"status": ["delivered"], "page": [f"{SITE}/petition"]}
    json_ladder = client.post("/v1/forms/join", json={**VALID, "_page_url": f"{SITE}/petition"}).get_json()["thanks"]
    page = client.get(location).get_data(as_text=True)
    assert "Thanks &lt;b&gt;all&lt;/b&gt;!" in page and "<b>all" not in page
    for link in json_ladder["share"]:
        assert link["label"] in page
        assert link["url"].replace("&", "&amp;") in page
    assert 'href="https://give.example.org/clean-air?amount=10"' in page and "Chip in $10" in page
    assert "mailto:?subject=Clean%20air&amp;body=" in page
    assert "ann@example.org" not in page


def test_the_thank_you_page_shares_no_page_of_a_site_the_form_does_not_accept(mocked):
    client = app_with({**THANKS, "message": {"fr": "Merci !"}}).test_client()
    page = client.get("/v1/forms/join/thanks?status=queued&page=https://evil.example/x").get_data(as_text=True)
    assert "evil.example" not in page and "formrelay-share" not in page and "Chip in $10" in page
    assert "We have your submission" in page  # the queued message where the config says nothing for English
    plain = app_with().test_client().get("/v1/forms/join/thanks?status=queued").get_data(as_text=True)
    assert "We have your submission and will pass it on shortly." in plain and "formrelay-thanks" not in plain


def test_the_openapi_document_describes_the_ladder_and_the_touches(mocked):
    doc = app_with(THANKS).test_client().get("/v1/openapi.json").get_json()
    validate(doc)
    assert set(doc["components"]["schemas"]["Outcome"]["properties"]["thanks"]["properties"]) >= {
        "message", "share", "donate"}
    post = doc["paths"]["/v1/forms/join"]["post"]["requestBody"]["content"]["application/x-www-form-urlencoded"]
    controls = post["schema"]["allOf"][1]["properties"]
    assert {"_first_touch", "_last_touch"} <= set(controls)


def test_the_funnel_page_s_config_examples_are_a_valid_config():
    """Every TOML block of docs/funnel.md, merged, loads: the keys the page documents are the relay's."""
    import re
    import tomllib
    from pathlib import Path

    page = (Path(__file__).resolve().parent.parent / "docs" / "funnel.md").read_text(encoding="utf-8")
    merged: dict = {}

    def merge(into: dict, new: dict) -> None:
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value

    blocks = re.findall(r"```toml\n(.*?)```", page, re.S)
    assert len(blocks) >= 4
    for block in blocks:
        merge(merged, tomllib.loads(block.replace("5d2c6e0e-...", "5d2c6e0e")))
    merged["providers"] = {"actionnetwork": {}, "ens": {"base_url": "https://ens.test/ens/service", "api_token": "t"}}
    merged["forms"]["write-your-mp"]["fields"] = {"Email Address": {"required": True}}
    config = parse_config(merged, env={})
    petition = config.forms["petition"]
    assert petition.attribution == "first" and petition.queued_url and petition.thanks.donate_url
    assert petition.thanks.channels == ("facebook", "x", "whatsapp", "email", "copy")
    assert config.forms["write-your-mp"].options.txn_from_page["txn2"] == "first.source"

"""The language of each answer: forced by the form, else negotiated from Accept-Language, and said in the headers."""
from __future__ import annotations

import logging
from collections.abc import Mapping

from flask import Flask, Response, g, request

from formrelay.core import i18n
from formrelay.core.i18n import Choice, Msg

log = logging.getLogger(__name__)

# The snippet's own words (static/formrelay.js keeps the English ones as its fallback, under the same keys).
SNIPPET_TEXTS: Mapping[str, Msg] = {
    "submit": Msg("Send"),
    "sending": Msg("Sending…"),
    "delivered": Msg("Thank you! Your submission was received."),
    "queued": Msg("Thank you! We have your submission and will pass it on shortly."),
    "invalid": Msg("Please correct the highlighted fields."),
    "rate_limited": Msg("Too many attempts. Please wait a moment and try again."),
    "unavailable": Msg("We could not send this just now. Please try again in a few minutes."),
    "rejected": Msg("Your submission could not be accepted."),
    "network": Msg("We could not reach the server. Please check your connection and try again."),
    "error": Msg("Something went wrong. Please try again."),
    "choose": Msg("Choose…"),
    # TRANSLATORS: the tooltip of the asterisk beside a field that must be filled in.
    "required": Msg("required"),
}

# The overall message of each status, for answers whose outcome carries none of its own (a success has the
# snippet's, or the page's, thank-you text).
STATUS_MESSAGES: Mapping[str, Msg] = {
    "queued": Msg("Thank you. We have your submission and will pass it on shortly."),
    "invalid": Msg("Some fields need attention."),
    "bad_request": Msg("This submission could not be read."),
    "forbidden": Msg("This form does not accept submissions from this site."),
    "not_found": Msg("Nothing here."),
    "method_not_allowed": Msg("This method is not allowed here."),
    "too_large": Msg("This submission is too large."),
    "unsupported_media_type": Msg("This type of content is not accepted."),
    "rate_limited": Msg("Too many submissions. Please wait a moment and try again."),
    "rejected": Msg("Your submission could not be accepted."),
    "unavailable": Msg("This form cannot be reached just now. Please try again in a few minutes."),
    "error": Msg("Something went wrong on our side."),
}


def snippet_texts() -> dict[str, str]:
    """The snippet's texts in the answer's language; page attributes and FormRelayOptions still override them."""
    return {key: text.translated() for key, text in SNIPPET_TEXTS.items()}


def status_message(status: str) -> str:
    return STATUS_MESSAGES.get(status, STATUS_MESSAGES["error"]).translated()


def choose(form_locale: str | None, header: str | None, default: str) -> Choice:
    """A form's own locale wins (it is passed on as given, e.g. to ENS); else the best of Accept-Language."""
    if form_locale:
        return Choice(i18n.language_of(form_locale) or default, form_locale)
    return i18n.negotiate(header, default)


def mark() -> None:
    """Say that this answer carries text in the chosen language (so it gets Content-Language)."""
    g.localized = True


def init_app(app: Flask, default: str, form_locales: Mapping[str, str | None]) -> None:
    """Choose each request's language before its view runs, and say it in the answer's headers."""
    i18n.load_all()
    for slug, tag in form_locales.items():
        if tag and i18n.language_of(tag) is None:
            log.warning("form %s: formrelay has no catalogue for locale %r; it answers in %r (ENS still gets %r)",
                        slug, tag, default, tag)
    app.jinja_env.add_extension("jinja2.ext.i18n")
    app.jinja_env.install_gettext_callables(i18n.gettext, i18n.ngettext, newstyle=True)  # type: ignore[attr-defined]

    @app.before_request
    def _choose() -> None:
        slug = (request.view_args or {}).get("slug")
        form_locale = form_locales.get(slug) if isinstance(slug, str) else None
        g.language_token = i18n.activate(choose(form_locale, request.headers.get("Accept-Language"), default))

    @app.after_request
    def _headers(response: Response) -> Response:
        if g.get("localized"):
            response.headers["Content-Language"] = i18n.current()
            # Even a form that forces a language answers 404s and errors in the negotiated one: always vary.
            response.vary.add("Accept-Language")
        return response

    @app.teardown_request
    def _reset(_: BaseException | None) -> None:
        token = g.pop("language_token", None)
        if token is not None:
            try:
                i18n.deactivate(token)
            except ValueError:  # set in another context (never expected): the next request sets its own anyway
                pass

    @app.context_processor
    def _language() -> dict[str, str]:
        return {"lang": i18n.current()}

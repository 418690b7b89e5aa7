"""Languages: the shipped message catalogues, the language of the current answer, and Accept-Language negotiation."""
from __future__ import annotations

import contextlib
import contextvars
import decimal
import gettext as _gettext
import io
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from babel import negotiate_locale
from babel.core import get_global
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from werkzeug.datastructures import LanguageAccept
from werkzeug.http import parse_accept_header


SOURCE = "en"  # the language the messages are written in: it needs no catalogue
DOMAIN = "messages"
# pybabel's layout: translations/<lang>/LC_MESSAGES/messages.po, inside the package so a wheel ships it.
CATALOGUES = Path(__file__).resolve().parent.parent / "translations"
TAG_MAX = 35  # longer than any real language tag; bounds what a header can make us look up


@dataclass(frozen=True)
class Choice:
    """The language of an answer, and the tag to pass to a CRM that takes one (ENS `locale`), if any."""

    language: str
    tag: str | None = None


_choice: contextvars.ContextVar[Choice] = contextvars.ContextVar("formrelay_language", default=Choice(SOURCE))


@cache
def available() -> tuple[str, ...]:
    """Every language the relay answers in: English, then each catalogue found, alphabetically."""
    found = sorted(p.parent.parent.name for p in CATALOGUES.glob(f"*/LC_MESSAGES/{DOMAIN}.po"))
    return (SOURCE, *(lang for lang in found if lang != SOURCE))


@cache
def translations(language: str) -> _gettext.NullTranslations:
    """The catalogue of one language, read from its .po source.

    The .po file is compiled in memory with Babel's own reader and writer, so there is no build step to forget:
    an editable install, a wheel and a source checkout all read the same text. Fuzzy entries are left out
    (a translator has not confirmed them), so they fall back to English like missing ones.
    """
    path = CATALOGUES / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    if language == SOURCE or not path.is_file():
        return _gettext.NullTranslations()
    with path.open("rb") as source:
        catalog = read_po(source, locale=language, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    compiled.seek(0)
    return _gettext.GNUTranslations(compiled)


def load_all() -> None:
    """Read every catalogue and CLDR table now (at start-up), so the first request in a language pays nothing."""
    get_global("likely_subtags")
    for language in available():
        translations(language)
        localise_number(1000, language)


def current() -> str:
    """The language of the answer being written (English outside a request)."""
    return _choice.get().language


def current_tag() -> str | None:
    """The supporter's language tag for this answer (e.g. fr-CA), when one was chosen; for CRMs that take one."""
    return _choice.get().tag


def activate(choice: Choice | str) -> contextvars.Token[Choice]:
    """Make `choice` the language of what is written from now on in this context; returns the token to undo it."""
    if isinstance(choice, str):
        choice = Choice(choice)
    if choice.language not in available():
        choice = Choice(SOURCE, choice.tag)
    return _choice.set(choice)


def deactivate(token: contextvars.Token[Choice]) -> None:
    _choice.reset(token)


@contextlib.contextmanager
def using(choice: Choice | str) -> Iterator[str]:
    """Write messages in `choice`'s language for the duration of the block."""
    token = activate(choice)
    try:
        yield current()
    finally:
        deactivate(token)


def gettext(message: str) -> str:
    """`message` (English) in the current language; English when the catalogue has no translation."""
    language = _choice.get().language
    text = str.__str__(message)
    return text if language == SOURCE else translations(language).gettext(text)


def ngettext(singular: str, plural: str, n: int) -> str:
    language = _choice.get().language
    if language == SOURCE:
        return singular if n == 1 else plural
    return translations(language).ngettext(singular, plural, n)


_ = gettext


class Msg(str):
    """An English message that is translated when it is used, not when it is defined.

    Schemas are built once and shared by every request, whatever its language; Marshmallow formats each
    error message with `.format(...)` at the moment it fails a value, so translating inside `format` gives
    each answer its own language. Everywhere else a Msg is simply its English text (logs, OpenAPI).
    """

    __slots__ = ()

    def format(self, *args: Any, **kwargs: Any) -> str:  # type: ignore[override]
        language = _choice.get().language
        values = {k: localise_number(v, language) for k, v in kwargs.items()}
        return gettext(self).format(*args, **values)

    def translated(self) -> str:
        return gettext(self)


def localise_number(value: Any, language: str) -> Any:
    """Numbers in messages as the supporter writes them (10,000 / 10 000 / 10.000); anything else unchanged."""
    if isinstance(value, bool) or not isinstance(value, int | float | decimal.Decimal):
        return value
    try:
        return format_decimal(value, locale=language)
    except Exception:  # a number is never worth a failed answer
        return value


def language_of(tag: str | None) -> str | None:
    """The shipped language a tag falls back to ('fr-CA' -> 'fr', 'pt_BR' -> 'pt'), or None."""
    if not tag:
        return None
    # No aliases: Babel's map would turn "de" into "de_DE", which no catalogue is called.
    found = negotiate_locale([tag.replace("_", "-")[:TAG_MAX]], available(), sep="-", aliases={})
    return found.lower() if found else None


def preferred(header: str | None) -> list[str]:
    """The tags of an Accept-Language header, best first (werkzeug orders by quality; q=0 means 'not this')."""
    if not header:
        return []
    accept = parse_accept_header(header[:1000], LanguageAccept)
    return [value[:TAG_MAX] for value, quality in accept if quality > 0 and value != "*"]


def negotiate(header: str | None, default: str = SOURCE) -> Choice:
    """The best shipped language for an Accept-Language header; `default` when nothing matches.

    The tag is the supporter's own ('fr-CA' stays 'fr-CA'), made regional with Unicode's likely subtags when
    the browser named only a language ('de' -> 'de-DE'); None when the header matched nothing.
    """
    for tag in preferred(header):
        language = language_of(tag)
        if language:
            return Choice(language, regional_tag(tag, language))
    return Choice(default if default in available() else SOURCE)


def regional_tag(tag: str, language: str) -> str:
    """'fr-ca' -> 'fr-CA'; 'de' -> 'de-DE' (CLDR's likely subtags); scripts and odd subtags are dropped."""
    parts = tag.replace("_", "-").split("-")
    region = next((p for p in parts[1:] if _region(p)), None)
    if region is None:
        likely = str(get_global("likely_subtags").get(language, ""))
        region = next((p for p in likely.split("_")[1:] if _region(p)), None)
    return f"{language}-{region.upper()}" if region else language


def _region(part: str) -> bool:
    """Two ASCII letters (BCP 47): str.isalpha alone takes 'ÉÉ', which would reach ENS as the locale 'fr-ÉÉ'."""
    return len(part) == 2 and part.isascii() and part.isalpha()

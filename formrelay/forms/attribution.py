"""Campaign touches: the attribution parameters a visit arrived with, as the snippet remembers them (pure).

The snippet keeps the parameters of the first and the latest page that carried any (`?source=em-1206`) and
posts them as the relay controls `_first_touch` and `_last_touch`, each a query string. The relay keeps them,
bounded and validated, in the submission's page context; the form's `attribution` says which one its CRM is
credited with: that touch's values replace the page's own `source`, `utm_*` and `referrer` (what the
providers read), and `lookup` gives the CRM's other source fields either touch by name.
"""
from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# The parameters the snippet remembers (a site may add its own, up to TOUCH_MAX_PARAMS in all): Action Network's
# `source` and `referrer`, ActBlue/NGP `refcode`, Google's `utm_*`, NGP's `ms` (marketing source), and ENS's
# `ea.tracking.id`. Keep in step with PARAMS in static/formrelay.js.
KEYS = ("source", "refcode", "referrer", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
        "ms", "ea.tracking.id")
TOUCHES = ("first", "last")
# The relay controls `_first_touch` / `_last_touch` are kept in the page context under these names.
FIRST, LAST = "first_touch", "last_touch"
CREDITED = "attribution"  # in the context: which touch the form credits, present only when that touch exists
# Mappings (ENS txn_from_page, ...) may name a parameter of the credited touch, or of either touch.
REFS = (*KEYS, *(f"{touch}.{key}" for touch in TOUCHES for key in KEYS))
TOUCH_MAX_PARAMS = 20
TOUCH_VALUE_MAX = 200
TOUCH_TEXT_MAX = 8000  # read no further into a touch: 20 parameters fit with room to spare
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
_OURS = frozenset({FIRST, LAST, CREDITED, "page_url"})


def parse(text: str | None) -> dict[str, str]:
    """A touch's query string -> {parameter: value}: names checked, values trimmed and cut, at most 20 kept.

    A value holding '@' is dropped: it looks like an email address, and a touch must hold nothing personal.
    """
    if not text:
        return {}
    out: dict[str, str] = {}
    for key, value in parse_qsl(text[:TOUCH_TEXT_MAX], errors="replace"):
        value = value.strip()[:TOUCH_VALUE_MAX]
        if NAME.match(key) and value and "@" not in value and key not in out:
            out[key] = value
            if len(out) == TOUCH_MAX_PARAMS:
                break
    return out


def clean(text: str) -> str:
    """A touch as it is kept: parsed and written again, so only checked names and bounded values remain."""
    return urlencode(parse(text))


def settle(context: Mapping[str, str], mode: str, flat: Iterable[str]) -> dict[str, str]:
    """The context a provider reads: the credited touch's values in place of the page's own `flat` keys.

    Without that touch (no snippet, storage off and no parameters on the page) the page's values stay as sent.
    """
    chosen = parse(context.get(f"{mode}_touch"))
    if not chosen:
        return dict(context)
    flat = tuple(flat)
    out = {k: v for k, v in context.items() if k not in flat}
    out.update({k: chosen[k] for k in flat if k in chosen})
    out[CREDITED] = mode
    return out


def lookup(context: Mapping[str, str], ref: str) -> str:
    """The value a mapping names: `first.<key>` / `last.<key>` from that touch; a bare key from the credited
    touch, else the page's own value (a hidden field, or the `_page_url` query), "" when there is none."""
    scope, _, key = ref.partition(".")
    if scope in TOUCHES and key:
        return parse(context.get(f"{scope}_touch")).get(key, "")
    credited = context.get(CREDITED)
    if credited in TOUCHES:
        touch = parse(context.get(f"{credited}_touch"))
        if ref in touch or ref in KEYS:  # the credited touch decides every attribution parameter
            return touch.get(ref, "")
    if ref in context and ref not in _OURS:
        return context[ref]
    page = context.get("page_url", "")
    if page.startswith(("https://", "http://")):
        for name, value in parse_qsl(urlsplit(page).query):
            if name == ref and value.strip():
                return value.strip()
    return ""


def touches(context: Mapping[str, str]) -> dict[str, object]:
    """Both touches and which one the form credited, for webhooks' events; {} when the browser sent none."""
    first, last = parse(context.get(FIRST)), parse(context.get(LAST))
    if not first and not last:
        return {}
    return {"credited": context.get(CREDITED), "first": first, "last": last}


def without_personal_data(context: Mapping[str, str]) -> dict[str, str]:
    """The part of a context that is never personal (campaign codes only): what every webhook may carry."""
    return {k: context[k] for k in (FIRST, LAST, CREDITED) if k in context}


def page_refs(options: Any, definition_extra: Mapping[str, Any]) -> frozenset[str]:
    """The `_page_url` query parameters a form's provider reads (bare names given to `lookup`).

    Read by shape, not by provider, so that forms/ knows no provider: NGP's hidden elements with a queryString
    (the definition's `from_page`), ENS's `txn_from_page` and `tracking_from_page` (the form's options).
    A `first.`/`last.` reference is read from a touch, never from the page URL.
    """
    refs: list[str] = [*dict(definition_extra.get("from_page") or {}).values(),
                       *dict(getattr(options, "txn_from_page", None) or {}).values()]
    tracking = getattr(options, "tracking_from_page", None)
    if isinstance(tracking, str) and tracking:
        refs.append(tracking)
    return frozenset(ref for ref in refs if isinstance(ref, str) and ref.partition(".")[0] not in TOUCHES)


def trim_page_url(url: str, keep: Collection[str] = ()) -> str:
    """The page URL as it is kept (queued jobs, dead letters, webhook bodies): scheme, host and path, with only the
    attribution parameters (KEYS) and those in `keep` (what the provider reads); no fragment.

    Anything else in a query (`?em=ann@example.org`, a session token, a password-reset code) is dropped before it
    could be stored or passed on. A kept value holding '@' is dropped too: it looks like an email address.
    """
    parts = urlsplit(url)
    wanted = set(KEYS) | set(keep)
    kept = [(name, value) for name, value in parse_qsl(parts.query, keep_blank_values=False, errors="replace")
            if name in wanted and "@" not in value]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(kept), ""))

"""The thank-you ladder (share, donate) and per-answer redirects: what a supporter is sent to or asked next.

Links are built from the config only: the share address is `share_url`, else the page the form was on (its
query and fragment cut off, and only on an origin the form accepts posts from); nothing a supporter typed ever
enters a link. The snippet shows the ladder from the JSON answer's `thanks`; the relay's own thank-you page
renders the same dictionary.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from formrelay.abuse import origin_allowed, origin_of
from formrelay.core import i18n
from formrelay.core.config import FormConfig
from formrelay.core.i18n import Msg
from formrelay.web.locale import SNIPPET_TEXTS

# channel -> (link text, the channel's share address with {url} in it). Documented share addresses: Facebook's
# sharer (u=), X's web intent (docs.x.com: https://x.com/intent/tweet, url=), WhatsApp's click to chat
# (https://wa.me/?text=), RFC 6068 mailto (subject=, body=). "copy" is the address itself, to copy.
SHARE: Mapping[str, tuple[Msg, str]] = {
    "facebook": (Msg("Share on Facebook"), "https://www.facebook.com/sharer/sharer.php?u={url}"),
    "x": (Msg("Share on X"), "https://x.com/intent/tweet?url={url}"),
    "whatsapp": (Msg("Share on WhatsApp"), "https://wa.me/?text={url}"),
    "email": (Msg("Share by email"), "mailto:?{subject}body={url}"),
    "copy": (Msg("Copy this link"), "{raw}"),
}
SHARE_LABEL = Msg("Ask your friends to join in:")
DONATE = Msg("Donate")
# TRANSLATORS: the button beside the link to copy, and what a screen reader hears once it is copied.
COPY, COPIED = Msg("Copy"), Msg("Link copied.")
PAGE_MAX = 2000


def redirect_for(form: FormConfig, status: str) -> str | None:
    """The page the config sends this answer to: success_url, or queued_url for a queued one (else success_url)."""
    if status == "queued":
        return form.queued_url or form.success_url
    return form.success_url if status == "delivered" else None


def form_page(body: Mapping[str, Any], referrer: str | None) -> str | None:
    """The page the form was on: the snippet's `_page_url`, else the Referer (often only the site's origin)."""
    page = body.get("_page_url")
    for candidate in (page if isinstance(page, str) else None, referrer):
        if candidate and len(candidate) <= PAGE_MAX and origin_of(candidate):
            return candidate
    return None


def share_base(form: FormConfig, page: str | None, allowed: Sequence[str], own: str) -> str | None:
    """The address to share: share_url, else the form's page without query or fragment, on an accepted origin."""
    thanks = form.thanks
    if thanks is None:
        return None
    if thanks.share_url:
        return thanks.share_url
    origin = origin_of(page)
    if page is None or origin is None or not origin_allowed(origin, None, own, allowed, True):
        return None
    parts = urlsplit(page)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))


def with_source(url: str, param: str, channel: str) -> str:
    """url with <param>=share-<channel> (replacing a value of its own for that parameter)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != param]
    query.append((param, f"share-{channel}"))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def share_links(channels: Sequence[str], base: str, param: str, title: str | None) -> list[dict[str, str]]:
    """One link per channel, each sharing base with its own source code (pure)."""
    links = []
    for channel in channels:
        label, pattern = SHARE[channel]
        shared = with_source(base, param, channel)
        subject = f"subject={quote(title, safe='')}&" if title else ""
        links.append({"channel": channel, "label": label.translated(),
                      "url": pattern.format(url=quote(shared, safe=""), raw=shared, subject=subject)})
    return links


def ladder(form: FormConfig, status: str, base: str | None, title: str | None = None) -> dict[str, Any] | None:
    """The ladder after a success, in the answer's language; None when the form has no [thanks] table."""
    thanks = form.thanks
    if thanks is None:
        return None
    language, tag = i18n.current(), i18n.current_tag()
    out: dict[str, Any] = {
        "message": thanks.text(thanks.message, language, tag)
        or SNIPPET_TEXTS["queued" if status == "queued" else "delivered"].translated(),
    }
    if base and thanks.channels:
        out["share_label"] = SHARE_LABEL.translated()
        # The email's subject is the form's title when the config gives one (never the bare slug).
        out["share"] = share_links(thanks.channels, base, thanks.source_param, title if title != form.slug else None)
        if "copy" in thanks.channels:
            out["copy"], out["copied"] = COPY.translated(), COPIED.translated()
    if thanks.donate_url:
        out["donate"] = {"url": thanks.donate_url,
                         "label": thanks.text(thanks.donate_label, language, tag) or DONATE.translated()}
    return out

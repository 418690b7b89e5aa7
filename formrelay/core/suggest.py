"""'Did you mean ...?' for near-miss names (config keys, CRM field names, aliases), with difflib's close matches."""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

_NOISE = re.compile(r"[\s_\-.]+")


def _key(name: str) -> str:
    # 'Post Code', 'post_code' and 'PostCode' are the same mistake: compare without case and separators.
    return _NOISE.sub("", name).casefold()


def close_matches(name: str, candidates: Iterable[str], n: int = 3, cutoff: float = 0.75) -> list[str]:
    """The candidates closest to name, best first; exact matches apart from case and separators come first."""
    pool = [c for c in dict.fromkeys(candidates) if c != name]
    by_key: dict[str, list[str]] = {}
    for candidate in pool:
        by_key.setdefault(_key(candidate), []).append(candidate)
    found: list[str] = list(by_key.get(_key(name), []))
    for key in difflib.get_close_matches(_key(name), list(by_key), n=n, cutoff=cutoff):
        found += [c for c in by_key[key] if c not in found]
    if len(found) < n:  # a raw comparison can still catch what normalising hid
        found += [c for c in difflib.get_close_matches(name, pool, n=n, cutoff=cutoff) if c not in found]
    return found[:n]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'Postcode'?)', or '' when nothing is close."""
    matches = close_matches(name, candidates)
    if not matches:
        return ""
    return " (did you mean " + " or ".join(repr(m) for m in matches) + "?)"

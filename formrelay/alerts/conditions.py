"""What is wrong now (pure): a snapshot of the queue, breakers and providers in, one Condition per event kind and
provider out, and each condition's message in words a data manager acts on.

Messages name forms, providers, counts, reasons and the command to run next; never a supporter's data. Reasons
come from the provider's error text, which could quote a value back, so addresses and long digit runs are blotted
out of them before they are counted.
"""
from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from formrelay.alerts.settings import (
    BREAKER_OPEN,
    CREDENTIALS,
    DEAD_LETTERS,
    NEAR_CAP,
    STORAGE,
    WAITING,
)

EMAIL = re.compile(r"[^\s@<>\"']+@[^\s@<>\"']+")
DIGITS = re.compile(r"\+?\d[\d ()./-]{5,}\d")
QUOTED = re.compile(r"(['\"]).{1,200}?\1")
CREDENTIAL_PROBLEM = re.compile(r"HTTP 40[13]\b|credentials were refused|key was refused|was refused")
REASON_MAX = 160
TOP_REASONS = 3


def clean_reason(text: str | None) -> str:
    """A reason fit for an alert: no quoted values, addresses or phone-like numbers, one short line."""
    text = (text or "unknown").splitlines()[0] if text else "unknown"
    text = QUOTED.sub("'…'", text)
    text = EMAIL.sub("…", text)
    text = DIGITS.sub(lambda m: m.group(0) if len(re.sub(r"\D", "", m.group(0))) < 7 else "…", text)
    return text[:REASON_MAX]


@dataclass(frozen=True)
class Waiting:
    """One waiting or dead job as the alerts see it: metadata only."""

    form: str
    provider: str
    reason: str
    since: float  # when it went dead (dead letters) or started waiting


@dataclass(frozen=True)
class BreakerView:
    provider: str
    down_since: float | None
    problem: str | None


@dataclass
class Snapshot:
    """What one look at the relay saw. storage_error is set when the queue storage did not answer."""

    now: float
    storage_error: str | None = None
    stats: Mapping[str, Any] = field(default_factory=dict)
    dead: list[Waiting] = field(default_factory=list)
    oldest_waiting: list[Waiting] = field(default_factory=list)
    breakers: list[BreakerView] = field(default_factory=list)
    auth_failing: dict[str, str] = field(default_factory=dict)  # provider -> problem
    storage_lost: int = 0  # jobs the storage reported lost since the last look


@dataclass(frozen=True)
class Condition:
    """An event kind for one provider ("" when it is the relay's, e.g. the queue's storage) that holds now."""

    kind: str
    provider: str
    count: int
    forms: dict[str, int]
    reasons: dict[str, int]
    detail: str
    next_step: str


def _by_provider(items: Iterable[Waiting]) -> dict[str, list[Waiting]]:
    out: dict[str, list[Waiting]] = {}
    for item in items:
        out.setdefault(item.provider, []).append(item)
    return out


def _retry_command(provider: str, forms: Mapping[str, int]) -> str:
    if len(forms) == 1:
        return f"formrelay queue retry --all --form {next(iter(forms))}"
    return f"formrelay queue retry --all --provider {provider}" if provider else "formrelay queue retry --all"


def evaluate(snap: Snapshot, alert_after: float, alert_after_open: float, warn_at: float) -> list[Condition]:
    """Every condition that holds in this snapshot."""
    found: list[Condition] = []
    if snap.storage_error or snap.storage_lost:
        detail = (f"the queue storage does not answer or refuses writes ({snap.storage_error})"
                  if snap.storage_error else f"the queue storage reported {snap.storage_lost} job(s) lost")
        found.append(Condition(STORAGE, "", snap.storage_lost or 1, {}, {}, detail,
                               "check Redis (redis_url) or the disk of [queue] path, then: formrelay check --strict"))
    for provider, jobs in sorted(_by_provider(snap.dead).items()):
        forms = dict(Counter(j.form for j in jobs).most_common())
        reasons = dict(Counter(clean_reason(j.reason) for j in jobs).most_common(TOP_REASONS))
        found.append(Condition(DEAD_LETTERS, provider, len(jobs), forms, reasons,
                               f"{len(jobs)} submission(s) to {provider} are dead letters (not delivered)",
                               f"fix the cause, then: {_retry_command(provider, forms)}  (look first: formrelay "
                               f"queue list --state dead --provider {provider})"))
    late = [j for j in snap.oldest_waiting if snap.now - j.since > alert_after]
    for provider, jobs in sorted(_by_provider(late).items()):
        forms = dict(Counter(j.form for j in jobs).most_common())
        oldest = max(snap.now - j.since for j in jobs)
        found.append(Condition(WAITING, provider, len(jobs), forms,
                               dict(Counter(clean_reason(j.reason) for j in jobs).most_common(TOP_REASONS)),
                               f"the oldest submission to {provider} has waited {_duration(oldest)} "
                               f"(over [queue] alert_after, {_duration(alert_after)})",
                               f"formrelay queue list --state pending --provider {provider}; if {provider} stays "
                               f"down, import by hand: formrelay queue export --state pending --provider {provider} "
                               f"--mark-exported --output waiting.csv"))
    used = float(snap.stats.get("capacity_used") or 0.0) if not snap.storage_error else 0.0
    if used >= warn_at:
        found.append(Condition(NEAR_CAP, "", int(snap.stats.get("depth") or 0), {}, {},
                               f"the queue is {used:.0%} full ({snap.stats.get('depth')} waiting); at 100% new "
                               "submissions that must wait are answered 503",
                               "bring the CRM back, or export and import by hand: formrelay queue export --state "
                               "pending --mark-exported --output waiting.csv; or raise [queue] max_jobs/max_bytes"))
    for view in snap.breakers:
        if view.down_since is not None and snap.now - view.down_since >= alert_after_open:
            problem = clean_reason(view.problem)
            found.append(Condition(BREAKER_OPEN, view.provider, 1, {}, {problem: 1},
                                   f"the circuit breaker for {view.provider} has been open for "
                                   f"{_duration(snap.now - view.down_since)}: submissions go straight to the queue",
                                   f"check {view.provider} (and /readyz); once it is fixed: formrelay breaker reset "
                                   f"{view.provider}"))
    refused = dict(snap.auth_failing)
    for view in snap.breakers:
        if view.down_since is not None and view.problem and CREDENTIAL_PROBLEM.search(view.problem):
            refused.setdefault(view.provider, view.problem)
    for provider, problem in sorted(refused.items()):
        found.append(Condition(CREDENTIALS, provider, 1, {}, {clean_reason(problem): 1},
                               f"{provider} refuses the relay's credentials",
                               f"put a working key for {provider} in the environment the config names, restart, "
                               "then: formrelay check"))
    return found


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


TITLES = {
    DEAD_LETTERS: "dead letters",
    BREAKER_OPEN: "circuit breaker open",
    WAITING: "submissions waiting too long",
    NEAR_CAP: "queue near its cap",
    STORAGE: "queue storage failing",
    CREDENTIALS: "credentials refused",
}


def subject(cond: Condition | None, kind: str, provider: str, resolved: bool) -> str:
    where = f" for {provider}" if provider else ""
    if resolved:
        return f"[formrelay] resolved: {TITLES[kind]}{where}"
    assert cond is not None
    if kind == DEAD_LETTERS:
        return f"[formrelay] {cond.count} dead letter{'' if cond.count == 1 else 's'}{where}"
    return f"[formrelay] {TITLES[kind]}{where}"


def text(cond: Condition, host: str, new_since: int | None = None, since: float | None = None) -> str:
    lines = [cond.detail[:1].upper() + cond.detail[1:] + "."]
    if new_since is not None and since is not None:
        lines.append(f"{new_since} new since the last message ({_clock(since)}).")
    if cond.provider:
        lines.append(f"Provider: {cond.provider}")
    if cond.forms:
        lines.append("Forms: " + ", ".join(f"{form} ({n})" for form, n in cond.forms.items()))
    if cond.reasons:
        lines.append("Reasons: " + "; ".join(f"{reason} ({n})" for reason, n in cond.reasons.items()))
    lines.append(f"Next: {cond.next_step}")
    lines.append(f"(relay on {host}; docs/alerts.md says what this alert means)")
    return "\n".join(lines)


def resolved_text(kind: str, provider: str, since: float, host: str) -> str:
    where = f" for {provider}" if provider else ""
    return (f"Resolved: {TITLES[kind]}{where}, first reported {_clock(since)}, no longer holds.\n"
            f"(relay on {host})")


def _clock(when: float) -> str:
    return dt.datetime.fromtimestamp(when, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

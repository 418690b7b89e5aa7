"""Exports of waiting or dead submissions for a CRM's bulk import: rows, CSV-safe cells, and export marks.

When a CRM has been down for a day the data manager imports what waits by hand. Each submission becomes one row
with the form's own field names as columns (the provider's API names, e.g. `EmailAddress`, `Email Address` or
`email_address`: docs/export.md names whose) plus `submitted_at`, `form`, `provider`, `reason` and `job_id`. None of the four
providers documents a bulk-import column list (/work/shared/upstreams): the API names are inferred to be what
their import tools map most easily, and docs/export.md shows the mapping step in each CRM.

An export marks every job it wrote (`export:<job id>` in the queue store, for `keep_marks`), so that
`formrelay queue drop --exported-before T` deletes exactly what was imported, and `--mark-exported` sets the
waiting ones aside at once, so the worker cannot deliver them as well once the CRM is back.
"""
from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from formrelay.delivery.admin import HELD_MARK, Filters, select
from formrelay.delivery.jobs import DEAD, PENDING, Job
from formrelay.delivery.stores import Store

META = ("submitted_at", "form", "provider", "reason", "job_id")
MARK_PREFIX = "export:"
KEEP_MARKS = 90 * 86400.0  # long enough for any import by hand; a mark holds a time, never personal data
EXPORTED = "exported for an import by hand"
# Held, so that `queue retry --all` after the CRM is back does not deliver what was imported (--include-held does).
EXPORTED_REASON = f"{EXPORTED}; {HELD_MARK}"
# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection, OWASP): such a cell gets a
# leading apostrophe, which Excel, LibreOffice and Google Sheets show as text and do not keep in the value.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Row:
    """One submission as an export row: its field values, then the metadata columns."""

    job_id: str
    values: dict[str, Any]
    meta: dict[str, Any]

    def flat(self) -> dict[str, Any]:
        # a form field called like a metadata column keeps its value under "field:<name>"
        out = {(f"field:{k}" if k in META else k): v for k, v in self.values.items()}
        out.update(self.meta)
        return out


def _iso(when: float | None) -> str:
    return "" if when is None else dt.datetime.fromtimestamp(when, dt.UTC).isoformat(timespec="seconds")


def rows(store: Store, filters: Filters, providers: Mapping[str, str], now: float | None = None) -> Iterator[Row]:
    """The submissions that match, oldest first within the store's batches: primary jobs only (one per submission;
    follow-up emails, `also` forms and webhooks are not the CRM's record), never an erased one."""
    now = time.time() if now is None else now
    for job in select(store, filters, now):
        if job.target != "primary" or job.erased:
            continue
        submission = job.submission
        yield Row(job.id, dict(submission.get("values") or {}), {
            "submitted_at": _iso(submission.get("received_at") or job.created_at),
            "form": job.form,
            "provider": providers.get(job.form, ""),
            "reason": job.last_error or "",
            "job_id": job.id,
        })


def columns(found: Iterable[Row]) -> list[str]:
    """Field names in the order they first appear, then the metadata columns."""
    names: dict[str, None] = {}
    for row in found:
        for name in row.flat():
            if name not in META:
                names.setdefault(name, None)
    return [*names, *META]


def cell(value: Any) -> str:
    """A value as one CSV cell: lists joined with '; ', booleans as true/false, formulas defused."""
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list | tuple):
        text = "; ".join(cell(v) for v in value)
    else:
        text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def mark(store: Store, job_ids: Iterable[str], at: float) -> None:
    """Remember that these jobs went out in an export at `at`."""
    for job_id in job_ids:
        store.kv_set(MARK_PREFIX + job_id, repr(at), KEEP_MARKS)


def exported_at(store: Store, job_id: str) -> float | None:
    value = store.kv_get(MARK_PREFIX + job_id)
    try:
        return float(value) if value else None
    except ValueError:
        return None


def set_aside(store: Store, job_ids: Iterable[str], at: float) -> list[str]:
    """Move exported waiting jobs to the dead letters (atomically, only if still waiting), so the worker does not
    deliver what is being imported by hand; dead ones get the same reason. The ids changed."""
    changed = []
    for job_id in job_ids:
        job = store.get(job_id)
        if job is None or job.state not in (PENDING, DEAD):
            continue
        before = f"; before: {job.last_error}" if job.last_error and EXPORTED not in job.last_error else ""
        new = replace(job, state=DEAD, lease_until=None, finished_at=at,
                      last_error=f"{EXPORTED} at {_iso(at)}; {HELD_MARK}{before}")
        if store.swap(job_id, (job.state,), new):
            changed.append(job_id)
    return changed


def exported_before(store: Store, before: float) -> list[Job]:
    """Waiting and dead jobs an export wrote out at or before `before`: what `drop --exported-before` deletes."""
    found = []
    for state in (PENDING, DEAD):
        for job in store.scan(state):
            at = exported_at(store, job.id)
            if at is not None and at <= before:
                found.append(job)
    return found


def forget_marks(store: Store, job_ids: Iterable[str]) -> None:
    for job_id in job_ids:
        value = store.kv_get(MARK_PREFIX + job_id)
        if value is not None:
            store.kv_delete(MARK_PREFIX + job_id, value)


def filters_for(state: str, forms: set[str] | None, since: float | None, now: float) -> Filters:
    return Filters(state=state, forms=forms, newer_than=(now - since) if since is not None else None)

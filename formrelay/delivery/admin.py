"""What an operator does to the queue (select, retry, drop, purge, forget), each action audited without any data."""
from __future__ import annotations

import datetime as dt
import logging
import os
import pwd
import re
import socket
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass, replace

from formrelay.core import logs
from formrelay.delivery.jobs import DEAD, PENDING, Job
from formrelay.delivery.stores import Store

log = logging.getLogger(__name__)
audit_log = logging.getLogger("formrelay.audit")

HELD_MARK = "held for an operator"
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '2h', '3d', '1w' -> seconds; ValueError otherwise."""
    match = DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 30m, 2h or 3d")
    return float(match.group(1)) * UNITS[match.group(2)]


def parse_time(text: str, now: float | None = None) -> float:
    """An ISO 8601 time (UTC unless it says otherwise) or a duration back from now ('2h' = two hours ago)."""
    now = time.time() if now is None else now
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither a time such as 2026-12-01T09:30 nor a duration such as 2h") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


@dataclass(frozen=True)
class Filters:
    """Which jobs an operator means: state, forms (a provider is its forms), age, and when they went dead."""

    state: str | None = None
    forms: Collection[str] | None = None
    older_than: float | None = None  # seconds since it was received
    newer_than: float | None = None
    dead_since: float | None = None  # a time: moved to the dead letters at or after it

    def match(self, job: Job, now: float) -> bool:
        if self.state and job.state != self.state:
            return False
        if self.forms is not None and job.form not in self.forms:
            return False
        age = now - job.created_at
        if self.older_than is not None and age < self.older_than:
            return False
        if self.newer_than is not None and age > self.newer_than:
            return False
        if self.dead_since is not None and (job.state != DEAD or (job.finished_at or job.created_at) < self.dead_since):
            return False
        return True


def select(store: Store, filters: Filters, now: float | None = None) -> Iterator[Job]:
    now = time.time() if now is None else now
    return (job for job in store.scan(filters.state) if filters.match(job, now))


def is_held(job: Job) -> bool:
    """A dead letter held because a retry could deliver it twice: each one needs an operator's own decision."""
    return job.state == DEAD and (job.uncertain or HELD_MARK in (job.last_error or ""))


def retry_all(store: Store, filters: Filters, include_held: bool = False) -> tuple[list[str], list[str]]:
    """Retry every dead letter that matches; (retried ids, held ids skipped)."""
    now = time.time()
    retried, held = [], []
    for job in list(select(store, replace(filters, state=DEAD), now)):
        if job.erased:
            continue
        if is_held(job) and not include_held:
            held.append(job.id)
        elif store.retry(job.id, now):
            retried.append(job.id)
    return retried, held


def drop(store: Store, job_id: str) -> bool:
    """Delete one waiting or dead job for good (never one being delivered: its worker would write it back).

    The submission's other jobs, if all done now, lose their personal data as they would on delivery.
    """
    job = store.get(job_id)
    if job is None or not store.swap(job_id, (PENDING, DEAD), None):
        return False
    store.erase_submission(job.submission_id)
    return True


def operator() -> str:
    """Who ran the command: the process's real user and the host, which is what an audit trail is for.

    From the user database by the effective uid, never from $LOGNAME/$USER: whoever runs the command sets those,
    to any name, or to a line feed and a forged second audit line. Escaped all the same (a host name or a user
    database entry is not ours either).
    """
    uid = os.geteuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:  # a uid with no entry (containers run as arbitrary uids)
        user = f"uid {uid}"
    return logs.clip(f"{user}@{socket.gethostname()}", 128)


def sudo_user() -> str | None:
    """$SUDO_USER, recorded apart from the operator: sudo sets it, but so can anyone, so it is a claim only."""
    claimed = os.environ.get("SUDO_USER")
    return logs.clip(claimed, 64) if claimed else None


def audit(store: Store | None, action: str, job_ids: list[str], **details: object) -> None:
    """One audit line per job (action, job id, who, filters), logged here and recorded in the store.

    The CLI is a separate process from the server: its own log goes to its stderr (in the relay's [logging]
    format). The record in the store lets every server process print the same line into the server's log
    (see `emit_recorded`), so the trail is where the operator reads the relay's logs.
    """
    who = operator()
    now = time.time()
    extra = {k: v for k, v in details.items() if v not in (None, "", [], ())}
    claimed = sudo_user()
    if claimed:
        extra["sudo_user"] = claimed
    entries = [{"at": now, "action": action, "job_id": job_id, "operator": who, "pid": os.getpid(), **extra}
               for job_id in job_ids]
    for entry in entries:
        _log_entry(entry, source="cli")
    if store is not None and entries:
        try:
            store.audit_add(entries)
        except Exception as exc:
            log.warning("audit: could not record %d action(s) in the queue store: %s", len(entries),
                        exc.__class__.__name__)


def _log_entry(entry: dict[str, object], source: str) -> None:
    shown = {k: v for k, v in entry.items() if k not in ("at", "action", "job_id", "operator", "pid")}
    more = "".join(f" {k}={v}" for k, v in sorted(shown.items()))
    when = dt.datetime.fromtimestamp(float(entry.get("at") or 0), dt.UTC).isoformat(timespec="seconds")
    audit_log.info(
        "audit: %s job %s by %s at %s%s", entry.get("action"), entry.get("job_id"), entry.get("operator"), when, more,
        extra={"event": "audit", "action": entry.get("action"), "job_id": entry.get("job_id"),
               "operator": entry.get("operator"), "audit_source": source, **shown},
    )


def emit_recorded(store: Store, limit: int = 200) -> int:
    """In the server: log the operator actions recorded by the CLI, each by exactly one server process."""
    entries = store.audit_take(limit)
    for entry in entries:
        _log_entry(entry, source="store")
    return len(entries)

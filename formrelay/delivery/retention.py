"""Data minimisation: a submission's personal data leaves the queue store as soon as every destination has it.

A submission can become several jobs: the primary delivery to its form's provider, a follow-up email, and (issue
18) one job per `also` form and per webhook. All of them carry the submission's id (`Job.submission_id`).
The personal data (the values and the page context) is erased from every one of them only when ALL of them are
done: a destination still waiting needs it. What stays is metadata: form, target, times, outcome, ids, attempts.
Jobs made after a delivery (the follow-up today, `also` and webhooks later) are built from the submission the
worker holds in memory, each with its own copy, so they never need the data of a job already erased; make them
with `new_job(form, target, submission)` so that they share the submission id.
Erasure is real: SQLite overwrites deleted content (`secure_delete`) and truncates its write-ahead log;
Redis keeps only the overwritten hash value.

Dead letters keep their data (an operator may still retry them) until retried and delivered, dropped,
purged (`formrelay queue purge --older-than DAYS`) or forgotten (`formrelay queue forget --email X`).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from formrelay.delivery.jobs import DEAD, DONE, INFLIGHT, PENDING, Job
from formrelay.delivery.settings import QueueSettings
from formrelay.delivery.stores import Store

log = logging.getLogger(__name__)


def finish(store: Store, job: Job, outcome: str, settings: QueueSettings) -> list[str]:
    """A job delivered: done, and its submission's data erased now if every job of it is done (unless keep_done).

    The ids of the jobs erased.
    """
    if settings.keep_done > 0:
        store.finish(job, outcome)
        return []  # kept for debugging, opt-in; sweep() erases it once keep_done has passed
    return store.finish_and_erase(job, outcome)


def sweep(store: Store, settings: QueueSettings, now: float | None = None) -> int:
    """Periodic: erase what keep_done allowed to stay (or a crash left), drop old metadata and expired records.

    The number of jobs whose data was erased.
    """
    now = time.time() if now is None else now
    erase_before = now - settings.keep_done
    due: set[str] = set()
    for job in store.scan(DONE):
        if not job.erased and (job.finished_at or job.created_at) <= erase_before:
            due.add(job.submission_id)
    erased = sum(len(store.erase_submission(sid)) for sid in due)
    # Metadata never outlives keep_done's personal data by less than nothing.
    store.purge_done(now - max(settings.keep_metadata, settings.keep_done))
    store.purge_audit(now - max(settings.keep_metadata, 30 * 24 * 3600.0))
    store.scrub()
    return erased


def mentions_email(job: Job, email: str) -> bool:
    """Whether any submitted value is this email address (case and surrounding space ignored)."""
    wanted = email.strip().casefold()
    values = job.submission.get("values", {}) if not job.erased else {}

    def hit(value: Any) -> bool:
        if isinstance(value, str):
            return value.strip().casefold() == wanted
        if isinstance(value, list | tuple):
            return any(hit(v) for v in value)
        if isinstance(value, dict):
            return any(hit(v) for v in value.values())
        return False

    return any(hit(v) for v in values.values())


@dataclass
class Forgotten:
    """What `forget` did: jobs deleted (never delivered), jobs erased (delivered, data kept), jobs in flight."""

    dropped: list[str] = field(default_factory=list)
    erased: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)


def forget(store: Store, email: str) -> Forgotten:
    """Erase one person's data from the queue, found by email address.

    Waiting and dead jobs are deleted: a person who asked to be forgotten must not reach the CRM afterwards.
    Delivered jobs (kept with keep_done) lose their data and keep their metadata. A job being delivered right
    now is left alone and reported: its worker holds the data in memory, so run the command again shortly.
    """
    result = Forgotten()
    found = [job for job in store.scan() if mentions_email(job, email)]
    for job in found:
        if job.state == INFLIGHT:
            result.busy.append(job.id)
        elif job.state in (PENDING, DEAD):
            if store.swap(job.id, (PENDING, DEAD), None):
                result.dropped.append(job.id)
            else:
                result.busy.append(job.id)  # claimed meanwhile
        elif job.state == DONE and store.swap(job.id, (DONE,), job.without_personal_data()):
            result.erased.append(job.id)
    settle(store, {job.submission_id for job in found})
    store.scrub(wait=5.0)
    return result


def purge_dead(store: Store, older_than: float, now: float | None = None) -> list[str]:
    """Delete dead letters that reached the dead letters more than `older_than` seconds ago; their ids."""
    now = time.time() if now is None else now
    old = [job for job in store.scan(DEAD) if (job.finished_at or job.created_at) < now - older_than]
    purged = [job.id for job in old if store.swap(job.id, (DEAD,), None)]
    settle(store, {job.submission_id for job in old})
    store.scrub(wait=5.0)
    return purged


def settle(store: Store, submission_ids: Iterable[str]) -> None:
    """After jobs were deleted: the submissions whose other jobs are now all done lose their data too."""
    for submission_id in submission_ids:
        store.erase_submission(submission_id)


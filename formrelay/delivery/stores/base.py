"""The Store interface: every operation the relay, the worker, retention and the operator's commands use."""
from __future__ import annotations

import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from formrelay.delivery.jobs import DEAD, DONE, PENDING, Job


@dataclass(frozen=True)
class Stats:
    """Counts only (never job bodies), so that readiness and the queue cap stay cheap with many jobs waiting."""

    depth: int
    oldest_age: float | None
    dead: int
    inflight: int
    bytes: int = 0  # size of the waiting (pending and in-flight) jobs as stored


class Store(ABC):
    """Where jobs and idempotency records live; every method is atomic across threads and processes."""

    # True while an erasure is final in the database but not yet on disk (see scrub()); the worker's chores look.
    scrub_pending: bool = False

    @abstractmethod
    def put(self, job: Job) -> None: ...

    @abstractmethod
    def add(self, job: Job) -> bool:
        """Store a new job unless one with its id exists (whatever its state); True when it was added.

        Destination jobs have ids derived from the submission and the destination, so a repeat of the step
        that makes them (a primary delivered again after a cut-off lease) never repeats a destination.
        """

    @abstractmethod
    def claim(self, now: float, lease: float, limit: int) -> list[Job]:
        """Due pending jobs, and inflight jobs whose lease expired (marked uncertain), now leased to the caller."""

    # A job's state changes are the same on every store: each is one put() of the whole job.
    def finish(self, job: Job, outcome: str) -> None:
        job.state, job.outcome, job.lease_until = DONE, outcome, None
        job.last_error, job.finished_at = None, time.time()
        self.put(job)

    def reschedule(self, job: Job, due_at: float, error: str) -> None:
        job.state, job.due_at, job.last_error, job.lease_until = PENDING, due_at, error, None
        self.put(job)

    def bury(self, job: Job, reason: str) -> None:
        """Move to the dead letters: kept for an operator, never discarded silently."""
        job.state, job.last_error, job.lease_until = DEAD, reason, None
        job.finished_at = time.time()
        self.put(job)

    @abstractmethod
    def get(self, job_id: str) -> Job | None: ...

    @abstractmethod
    def jobs(self, state: str | None = None, limit: int = 100) -> list[Job]: ...

    @abstractmethod
    def listing(self, states: Sequence[str], forms: Collection[str] | None, created_after: float | None,
                created_before: float | None, limit: int) -> list[Job]:
        """Up to `limit` jobs of each state in `states` (in that order), oldest first, filtered inside the store.

        `formrelay queue list` takes the first `limit` of the result: memory is bounded by the limit, never by
        the depth of the queue.
        """

    @abstractmethod
    def drop(self, job_id: str) -> bool: ...

    @abstractmethod
    def stats(self, now: float) -> Stats: ...

    @abstractmethod
    def idem_claim(self, key: str, ttl: float, marker: str = "") -> str | None:
        """Reserve key (holding `marker` while in flight); None if it was free (now ours), else the stored value."""

    @abstractmethod
    def idem_store(self, key: str, answer: str, ttl: float) -> None: ...

    @abstractmethod
    def idem_release(self, key: str, marker: str = "") -> None:
        """Free key if it still holds the in-flight `marker` (nothing was answered that must be repeated)."""

    @abstractmethod
    def idem_forget(self, key: str, suffix: str) -> None:
        """Delete key if its stored answer ends with " <suffix>" (a shared token that was refused or expired)."""

    # Small shared values with an expiry (time-trap nonces, the shared signing key, the answer bots are shown):
    # in the same store as the queue, so every worker and host that shares the queue shares them.
    @abstractmethod
    def kv_add(self, key: str, value: str, ttl: float) -> str:
        """Set key to value unless it holds an unexpired value; return the value it holds now (one atomic step)."""

    @abstractmethod
    def kv_get(self, key: str) -> str | None: ...

    @abstractmethod
    def kv_set(self, key: str, value: str, ttl: float) -> None: ...

    @abstractmethod
    def kv_delete(self, key: str, value: str) -> None:
        """Delete key if it still holds value (so a value someone else has set since is kept)."""

    def retry(self, job_id: str, now: float) -> bool:
        """A dead or pending job made due now, attempts and backoff started afresh (`formrelay queue retry`)."""
        job = self.get(job_id)
        if job is None or job.state not in (DEAD, PENDING) or job.erased:
            return False
        job.state, job.due_at, job.uncertain, job.attempts = PENDING, now, False, 0
        job.last_error, job.finished_at, job.retried_at, job.lease_until = None, None, now, None
        return self.swap(job_id, (DEAD, PENDING), job)

    # -- for operators and data minimisation (formrelay.delivery.retention and .admin build on these) -----

    @abstractmethod
    def scan(self, state: str | None = None) -> Iterator[Job]:
        """Every job (in one state), in batches, so that a large queue is never read at once."""

    @abstractmethod
    def swap(self, job_id: str, states: Collection[str], new: Job | None) -> bool:
        """Atomically replace the job (delete it when new is None) if its state is one of `states`.

        A worker claiming the job meanwhile changes its state, so an operator's change never races a delivery.
        """

    @abstractmethod
    def erase_submission(self, submission_id: str) -> list[str]:
        """If every job of the submission is done, replace each one's personal data with metadata, atomically.

        The ids of the jobs erased now; empty while any job of the submission is still to be delivered.
        """

    def finish_and_erase(self, job: Job, outcome: str) -> list[str]:
        """finish(), then erase_submission(): one step where the store can make it one transaction."""
        self.finish(job, outcome)
        return self.erase_submission(job.submission_id)

    @abstractmethod
    def purge_done(self, before: float) -> None:
        """Delete delivered jobs (their metadata) finished before `before`, and expired records the store keeps."""

    def scrub(self, wait: float = 0.1) -> None:
        """Make deletions final on disk (SQLite's write-ahead log); nothing to do where there is no such log."""

    @abstractmethod
    def rewrite_persistence(self) -> str | None:
        """After `forget`: have the store rewrite the copies it keeps beside its data; a note for the operator."""

    @abstractmethod
    def audit_add(self, entries: list[dict[str, Any]]) -> None:
        """Record operator actions, for the server to log and for `formrelay queue audit`."""

    @abstractmethod
    def audit_take(self, limit: int = 100) -> list[dict[str, Any]]:
        """Recorded actions not yet logged by any server process, each handed to exactly one caller."""

    @abstractmethod
    def audit_recent(self, limit: int = 100) -> list[dict[str, Any]]: ...

    @abstractmethod
    def purge_audit(self, before: float) -> None:
        """Delete recorded actions older than `before` that a server has already logged."""

    def close(self) -> None:
        return None


def storage_down(exc: BaseException) -> bool:
    """True when exc says the queue storage cannot be reached (Redis down or refusing, SQLite file locked/gone)."""
    try:
        import redis
    except ImportError:  # pragma: no cover - redis is a dependency
        redis = None  # type: ignore[assignment]
    if redis is not None and isinstance(exc, redis.RedisError):
        return True
    return isinstance(exc, sqlite3.OperationalError | ConnectionError | TimeoutError)

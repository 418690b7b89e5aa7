"""The durable outbox: what the relay answered `queued` is kept (SQLite or Redis) until a provider has it.

Jobs are claimed with a lease. A worker that dies mid-delivery leaves its lease to expire; the next claim hands
the job back marked `uncertain`, and the provider's rule decides whether to retry it (upstream deduplicates)
or hold it for an operator (a retry could double it). Idempotency records live in the same store.
"""
from __future__ import annotations

import datetime as dt
import decimal
import json
import logging
import random
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Any

from formrelay.delivery.settings import QueueSchema, QueueSettings  # noqa: F401  (moved; re-exported during the move)
from formrelay.forms.submission import Submission

log = logging.getLogger(__name__)

PENDING, INFLIGHT, DONE, DEAD = "pending", "inflight", "done", "dead"
STATES = (PENDING, INFLIGHT, DONE, DEAD)


@dataclass
class Job:
    """One delivery to make: a validated submission, to the form's provider ("primary") or a follow-up target.

    Every job made from one submission carries its `submission_id` (the primary, a follow-up, and later each
    `also` form or webhook): the submission's personal data is erased when ALL of them are done, not before
    (see formrelay.delivery.retention).
    """

    id: str
    form: str
    target: str
    submission: dict[str, Any]
    created_at: float
    due_at: float
    attempts: int = 0
    state: str = PENDING
    last_error: str | None = None
    lease_until: float | None = None
    outcome: str | None = None
    # True once an attempt may have reached the provider without an answer (read timeout, cut-off lease).
    uncertain: bool = False
    # What a destination job needs beyond the submission (a webhook event's outcome); never personal data.
    detail: dict[str, Any] | None = None
    finished_at: float | None = None  # when it was delivered, or moved to the dead letters
    retried_at: float | None = None  # an operator's retry restarts the clock that max_age counts
    erased: bool = False  # the personal data is gone; only metadata is left (the submission's id stays)

    @property
    def submission_id(self) -> str:
        """The submission this job delivers: shared by its primary job and every destination job made from it."""
        return str(self.submission.get("id") or self.id)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Job:
        # Bodies written by an older or newer version may lack or add keys: take what this version knows.
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in _JOB_FIELDS})

    def summary(self, show_data: bool = False) -> dict[str, Any]:
        """What `formrelay queue` prints: never secrets; personal data only when asked for."""
        out: dict[str, Any] = {k: v for k, v in asdict(self).items() if k != "submission"}
        out["created"] = _iso(self.created_at)
        out["due"] = _iso(self.due_at) if self.state == PENDING else None
        out["finished"] = _iso(self.finished_at)
        if self.state == DONE:
            out["last_error"] = None  # an error that was overcome is history, not the job's state
        if show_data and not self.erased:
            out["submission"] = self.submission
        elif not self.erased:
            out["fields"] = sorted(self.submission.get("values", {}))
        return out

    def without_personal_data(self) -> Job:
        """This job with the submission reduced to metadata: form, ids and times stay, values and context go."""
        kept = {k: self.submission[k] for k in ("form", "id", "received_at") if k in self.submission}
        return replace(self, submission=kept, erased=True)


_JOB_FIELDS = frozenset(f.name for f in dataclass_fields(Job))


def _iso(when: float | None) -> str | None:
    return None if when is None else dt.datetime.fromtimestamp(when, dt.UTC).isoformat(timespec="seconds")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def serialise_submission(submission: Submission) -> dict[str, Any]:
    return {
        "form": submission.form,
        "values": {k: _jsonable(v) for k, v in submission.values.items()},
        "context": dict(submission.context),
        "idempotency_key": submission.idempotency_key,
        "locale": submission.locale,
        "id": submission.id,
        "received_at": submission.received_at,
        "page_options": dict(submission.page_options),
    }


def restore_submission(data: Mapping[str, Any]) -> Submission:
    return Submission(
        form=data["form"], values=data["values"], context=data.get("context", {}),
        idempotency_key=data.get("idempotency_key"), locale=data.get("locale"), id=data["id"],
        received_at=data["received_at"], page_options=data.get("page_options") or {},
    )


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

    def scrub(self, wait: float = 0.1) -> None:
        """Make deletions final on disk (SQLite's write-ahead log); nothing to do where there is no such log."""

    @abstractmethod
    def audit_add(self, entries: list[dict[str, Any]]) -> None:
        """Record operator actions, for the server to log and for `formrelay queue audit`."""

    @abstractmethod
    def audit_take(self, limit: int = 100) -> list[dict[str, Any]]:
        """Recorded actions not yet logged by any server process, each handed to exactly one caller."""

    @abstractmethod
    def audit_recent(self, limit: int = 100) -> list[dict[str, Any]]: ...

    def close(self) -> None:
        return None


class SQLiteStore(Store):
    """One SQLite file (WAL), shared safely by the threads and processes of one host."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.scrub_pending = False  # an erasure whose write-ahead log is not truncated yet
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._tx() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL, due_at REAL NOT NULL,"
                " lease_until REAL, created_at REAL NOT NULL, body TEXT NOT NULL)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, due_at)")
            # The jobs of one submission are found together, so that its data goes when the last is done.
            db.execute("CREATE INDEX IF NOT EXISTS jobs_submission ON jobs (json_extract(body, '$.submission.id'))")
            db.execute("CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL,"
                       " entry TEXT NOT NULL, logged INTEGER NOT NULL DEFAULT 0)")
            db.execute("CREATE INDEX IF NOT EXISTS audit_new ON audit (seq) WHERE logged = 0")
            # Sizes kept beside the body, and an index that covers the counts, so stats never read a body.
            columns = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
            if "size" not in columns:
                db.execute("ALTER TABLE jobs ADD COLUMN size INTEGER NOT NULL DEFAULT 0")
                db.execute("UPDATE jobs SET size = length(CAST(body AS BLOB))")  # once, for jobs already kept
            db.execute("CREATE INDEX IF NOT EXISTS jobs_waiting ON jobs (state, created_at, size)")
            db.execute("CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, answer TEXT NOT NULL,"
                       " expires_at REAL NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL,"
                       " expires_at REAL NOT NULL)")

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            # Switching a new file to WAL needs a lock that SQLite does not wait for (no busy handler), so
            # workers opening the store at the same moment would fail with "database is locked": retry.
            for attempt in range(200):
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or attempt == 199:
                        raise
                    time.sleep(0.025)
            db.execute("PRAGMA synchronous=FULL")  # queued means on disk, even on power loss
            db.execute("PRAGMA busy_timeout=30000")
            # Deleted and replaced rows are overwritten with zeros, so erased personal data is not left behind
            # in free pages (see scrub() for the write-ahead log).
            db.execute("PRAGMA secure_delete=ON")
            self._local.db = db
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _write(self, db: sqlite3.Connection, job: Job) -> None:
        body = job.to_json()
        db.execute(
            "INSERT OR REPLACE INTO jobs (id, state, due_at, lease_until, created_at, body, size)"
            " VALUES (?,?,?,?,?,?,?)",
            (job.id, job.state, job.due_at, job.lease_until, job.created_at, body, len(body)),
        )

    def put(self, job: Job) -> None:
        with self._tx() as db:
            self._write(db, job)

    def add(self, job: Job) -> bool:
        with self._tx() as db:
            body = job.to_json()
            return db.execute(
                "INSERT OR IGNORE INTO jobs (id, state, due_at, lease_until, created_at, body, size)"
                " VALUES (?,?,?,?,?,?,?)",
                (job.id, job.state, job.due_at, job.lease_until, job.created_at, body, len(body)),
            ).rowcount > 0

    def claim(self, now: float, lease: float, limit: int) -> list[Job]:
        with self._tx() as db:
            rows = db.execute(
                "SELECT body, state FROM jobs WHERE (state = ? AND due_at <= ?) OR (state = ? AND lease_until <= ?)"
                " ORDER BY due_at LIMIT ?",
                (PENDING, now, INFLIGHT, now, limit),
            ).fetchall()
            jobs = []
            for body, state in rows:
                job = Job.from_json(body)
                job.uncertain = job.uncertain or state == INFLIGHT
                job.state, job.lease_until = INFLIGHT, now + lease
                job.attempts += 1
                self._write(db, job)
                jobs.append(job)
            return jobs

    def get(self, job_id: str) -> Job | None:
        row = self._db().execute("SELECT body FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_json(row[0]) if row else None

    def jobs(self, state: str | None = None, limit: int = 100) -> list[Job]:
        if state:
            rows = self._db().execute("SELECT body FROM jobs WHERE state = ? ORDER BY created_at LIMIT ?",
                                      (state, limit)).fetchall()
        else:
            rows = self._db().execute("SELECT body FROM jobs ORDER BY created_at LIMIT ?", (limit,)).fetchall()
        return [Job.from_json(r[0]) for r in rows]

    def drop(self, job_id: str) -> bool:
        with self._tx() as db:
            dropped = db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount > 0
        self.scrub_pending = self.scrub_pending or dropped
        return dropped

    def purge_done(self, before: float) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM jobs WHERE state = ? AND COALESCE(json_extract(body, '$.finished_at'), created_at) < ?",
                       (DONE, before))
            db.execute("DELETE FROM idempotency WHERE expires_at < ?", (time.time(),))
            db.execute("DELETE FROM kv WHERE expires_at < ?", (time.time(),))

    def stats(self, now: float) -> Stats:
        db = self._db()
        depth, oldest, size = db.execute(
            "SELECT COUNT(*), MIN(created_at), SUM(size) FROM jobs WHERE state IN (?, ?)", (PENDING, INFLIGHT)).fetchone()
        dead = db.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (DEAD,)).fetchone()[0]
        inflight = db.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (INFLIGHT,)).fetchone()[0]
        return Stats(depth=depth, oldest_age=(now - oldest) if oldest else None, dead=dead, inflight=inflight,
                     bytes=int(size or 0))

    def idem_claim(self, key: str, ttl: float, marker: str = "") -> str | None:
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT answer, expires_at FROM idempotency WHERE key = ?", (key,)).fetchone()
            if row and row[1] > now:
                answer: str = row[0]
                return answer
            db.execute("INSERT OR REPLACE INTO idempotency (key, answer, expires_at) VALUES (?, ?, ?)",
                       (key, marker, now + ttl))
            return None

    def idem_store(self, key: str, answer: str, ttl: float) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO idempotency (key, answer, expires_at) VALUES (?, ?, ?)",
                       (key, answer, time.time() + ttl))

    def idem_release(self, key: str, marker: str = "") -> None:
        with self._tx() as db:
            db.execute("DELETE FROM idempotency WHERE key = ? AND answer = ?", (key, marker))

    def idem_forget(self, key: str, suffix: str) -> None:
        with self._tx() as db:
            row = db.execute("SELECT answer FROM idempotency WHERE key = ?", (key,)).fetchone()
            if row and str(row[0]).endswith(" " + suffix):
                db.execute("DELETE FROM idempotency WHERE key = ?", (key,))

    def scan(self, state: str | None = None, batch: int = 500) -> Iterator[Job]:
        after: tuple[float, str] = (float("-inf"), "")
        where = "state = ? AND " if state else ""
        while True:
            args: tuple[Any, ...] = (*((state,) if state else ()), *after, batch)
            rows = self._db().execute(
                f"SELECT body, created_at, id FROM jobs WHERE {where}(created_at, id) > (?, ?)"
                " ORDER BY created_at, id LIMIT ?", args).fetchall()
            for body, _, _ in rows:
                yield Job.from_json(body)
            if len(rows) < batch:
                return
            after = (rows[-1][1], rows[-1][2])

    def swap(self, job_id: str, states: Collection[str], new: Job | None) -> bool:
        with self._tx() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row[0] not in states:
                return False
            if new is None:
                db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            else:
                self._write(db, new)
        if new is None or new.erased:
            self.scrub_pending = True  # the caller scrubs once after a batch (or the worker's chores do)
        return True

    def erase_submission(self, submission_id: str) -> list[str]:
        with self._tx() as db:
            return self._erase(db, submission_id)

    def finish_and_erase(self, job: Job, outcome: str) -> list[str]:
        job.state, job.outcome, job.lease_until = DONE, outcome, None
        job.last_error, job.finished_at = None, time.time()
        with self._tx() as db:  # one transaction, one fsync: a drain pays for erasure only in CPU
            self._write(db, job)
            return self._erase(db, job.submission_id)

    def _erase(self, db: sqlite3.Connection, submission_id: str) -> list[str]:
        rows = db.execute("SELECT body FROM jobs WHERE json_extract(body, '$.submission.id') = ? OR id = ?",
                          (submission_id, submission_id)).fetchall()
        jobs = [j for j in (Job.from_json(r[0]) for r in rows) if j.submission_id == submission_id]
        if not jobs or any(j.state != DONE for j in jobs):
            return []
        erased = [j for j in jobs if not j.erased]
        for job in erased:
            self._write(db, job.without_personal_data())
        if erased:
            # Gone from the database now; the old row images in the write-ahead log go at the next scrub(),
            # which the worker's chores run within a second (a checkpoint per delivery would halve a drain).
            self.scrub_pending = True
        return [j.id for j in erased]

    def scrub(self, wait: float = 0.1) -> None:
        """Copy the log into the file and truncate it to zero bytes: old row images live on in the WAL otherwise.

        A truncating checkpoint holds other writers back while it waits for readers, so the worker waits briefly
        (not the 30 s a write may wait) and tries again each second; the CLI, which exits after, waits longer.
        """
        db = self._db()
        try:
            db.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
            busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.OperationalError as exc:
            busy = 1
            log.debug("queue: checkpoint failed: %s", exc)
        finally:
            db.execute("PRAGMA busy_timeout=30000")
        self.scrub_pending = bool(busy)
        if busy:
            log.info("queue: the write-ahead log could not be truncated yet (another connection is busy); will retry")

    def audit_add(self, entries: list[dict[str, Any]]) -> None:
        with self._tx() as db:
            db.executemany("INSERT INTO audit (at, entry) VALUES (?, ?)",
                           [(e.get("at", time.time()), json.dumps(e, separators=(",", ":"))) for e in entries])

    def audit_take(self, limit: int = 100) -> list[dict[str, Any]]:
        # Asked every second by every server process: look before taking the write lock.
        if self._db().execute("SELECT 1 FROM audit WHERE logged = 0 LIMIT 1").fetchone() is None:
            return []
        with self._tx() as db:
            rows = db.execute("SELECT seq, entry FROM audit WHERE logged = 0 ORDER BY seq LIMIT ?",
                              (limit,)).fetchall()
            if rows:
                db.execute(f"UPDATE audit SET logged = 1 WHERE seq IN ({','.join('?' * len(rows))})",
                           [r[0] for r in rows])
        return [json.loads(r[1]) for r in rows]

    def audit_recent(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._db().execute("SELECT entry FROM audit ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [json.loads(r[0]) for r in reversed(rows)]

    def purge_audit(self, before: float) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM audit WHERE at < ? AND logged = 1", (before,))

    def kv_add(self, key: str, value: str, ttl: float) -> str:
        now = time.time()
        with self._tx() as db:
            row = db.execute("SELECT value FROM kv WHERE key = ? AND expires_at > ?", (key, now)).fetchone()
            if row:
                held: str = row[0]
                return held
            db.execute("INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES (?, ?, ?)", (key, value, now + ttl))
            return value

    def kv_get(self, key: str) -> str | None:
        row = self._db().execute("SELECT value FROM kv WHERE key = ? AND expires_at > ?", (key, time.time())).fetchone()
        return str(row[0]) if row else None

    def kv_set(self, key: str, value: str, ttl: float) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO kv (key, value, expires_at) VALUES (?, ?, ?)",
                       (key, value, time.time() + ttl))

    def kv_delete(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM kv WHERE key = ? AND value = ?", (key, value))

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


# Claim atomically across hosts: due pending jobs, then expired leases, each moved to the inflight set.
CLAIM_LUA = """
local now, lease, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
local function take(ids, uncertain)
  for _, id in ipairs(ids) do
    local body = redis.call('HGET', KEYS[3], id)
    if body then
      local job = cjson.decode(body)
      job['uncertain'] = uncertain or job['uncertain'] == true
      job['state'] = 'inflight'
      job['lease_until'] = now + lease
      job['attempts'] = job['attempts'] + 1
      body = cjson.encode(job)
      redis.call('HSET', KEYS[3], id, body)
      redis.call('ZREM', KEYS[1], id)
      redis.call('ZADD', KEYS[2], now + lease, id)
      table.insert(out, body)
    end
  end
end
take(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit), true)
local left = limit - #out
if left > 0 then take(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, left), false) end
return out
"""


class RedisStore(Store):
    """Jobs in Redis: a hash of bodies, sorted sets for due times, leases and dead letters; shared by every host."""

    def __init__(self, url: str, prefix: str = "formrelay") -> None:
        import redis

        # Bounded waits: a Redis that hangs must turn into a clear 503 or a worker backoff, not a stuck thread.
        self.redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        self.k_due, self.k_inflight, self.k_jobs = f"{prefix}:q:due", f"{prefix}:q:inflight", f"{prefix}:q:jobs"
        self.k_dead, self.k_done, self.k_idem = f"{prefix}:q:dead", f"{prefix}:q:done", f"{prefix}:idem:"
        self.k_sub, self.k_audit, self.k_audit_new = f"{prefix}:q:sub:", f"{prefix}:audit", f"{prefix}:audit:new"
        self.k_kv = f"{prefix}:kv:"
        # Waiting jobs by creation time, and their sizes: stats and the queue cap never read a job body.
        self.k_waiting, self.k_sizes = f"{prefix}:q:waiting", f"{prefix}:q:sizes"
        self._claim = self.redis.register_script(CLAIM_LUA)
        self._stats = self.redis.register_script(STATS_LUA)
        self._swap = self.redis.register_script(SWAP_LUA)
        self._erase = self.redis.register_script(ERASE_LUA)

    def _save(self, pipe: Any, job: Job) -> None:
        body = job.to_json()
        pipe.hset(self.k_jobs, job.id, body)
        pipe.sadd(self.k_sub + job.submission_id, job.id)  # the jobs of one submission, erased together
        for key in (self.k_due, self.k_inflight, self.k_dead, self.k_done):
            pipe.zrem(key, job.id)
        if job.state in (PENDING, INFLIGHT):
            pipe.zadd(self.k_waiting, {job.id: job.created_at})
            pipe.hset(self.k_sizes, job.id, len(body))
        else:
            pipe.zrem(self.k_waiting, job.id)
            pipe.hdel(self.k_sizes, job.id)
        if job.state == PENDING:
            pipe.zadd(self.k_due, {job.id: job.due_at})
        elif job.state == INFLIGHT:
            pipe.zadd(self.k_inflight, {job.id: job.lease_until or time.time()})
        elif job.state == DEAD:
            pipe.zadd(self.k_dead, {job.id: time.time()})
        elif job.state == DONE:
            pipe.zadd(self.k_done, {job.id: time.time()})

    def put(self, job: Job) -> None:
        with self.redis.pipeline(transaction=True) as pipe:
            self._save(pipe, job)
            pipe.execute()

    def add(self, job: Job) -> bool:
        # Body and its due/dead entry in one step, and only if the id is new.
        keys = {PENDING: self.k_due, DEAD: self.k_dead, DONE: self.k_done, INFLIGHT: self.k_inflight}
        score = job.due_at if job.state == PENDING else time.time()
        body = job.to_json()
        waiting = 1 if job.state in (PENDING, INFLIGHT) else 0
        return bool(self.redis.eval(ADD_LUA, 5, self.k_jobs, keys[job.state], self.k_waiting, self.k_sizes,
                                    self.k_sub + job.submission_id, job.id, body, score, job.created_at, len(body),
                                    waiting))

    def claim(self, now: float, lease: float, limit: int) -> list[Job]:
        bodies = self._claim(keys=[self.k_due, self.k_inflight, self.k_jobs], args=[now, lease, limit])
        return [Job.from_json(b) for b in bodies]

    def get(self, job_id: str) -> Job | None:
        body = self.redis.hget(self.k_jobs, job_id)
        return Job.from_json(body) if body else None

    def jobs(self, state: str | None = None, limit: int = 100) -> list[Job]:
        keys = {PENDING: [self.k_due], INFLIGHT: [self.k_inflight], DEAD: [self.k_dead], DONE: [self.k_done]}
        wanted = keys[state] if state else [self.k_due, self.k_inflight, self.k_dead, self.k_done]
        ids = [i for key in wanted for i in self.redis.zrange(key, 0, limit - 1)][:limit]
        bodies = self.redis.hmget(self.k_jobs, list(ids)) if ids else []  # type: ignore[arg-type]
        jobs = [Job.from_json(b) for b in bodies if b]
        return sorted(jobs, key=lambda j: j.created_at)

    def drop(self, job_id: str) -> bool:
        job = self.get(job_id)
        with self.redis.pipeline(transaction=True) as pipe:
            for key in (self.k_due, self.k_inflight, self.k_dead, self.k_done, self.k_waiting):
                pipe.zrem(key, job_id)
            if job is not None:
                pipe.srem(self.k_sub + job.submission_id, job_id)
            pipe.hdel(self.k_sizes, job_id)
            pipe.hdel(self.k_jobs, job_id)
            return bool(pipe.execute()[-1])

    def purge_done(self, before: float) -> None:
        old = self.redis.zrangebyscore(self.k_done, "-inf", before)
        if old:
            jobs = [Job.from_json(b) for b in self.redis.hmget(self.k_jobs, old) if b]  # type: ignore[arg-type]
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self.k_done, *old)
                pipe.hdel(self.k_jobs, *old)
                for job in jobs:
                    pipe.srem(self.k_sub + job.submission_id, job.id)
                pipe.execute()

    def stats(self, now: float) -> Stats:
        due, inflight, dead, oldest, size = self._stats(keys=[self.k_due, self.k_inflight, self.k_dead,
                                                               self.k_waiting, self.k_sizes])
        oldest_at = float(oldest) if oldest else None
        return Stats(depth=int(due) + int(inflight), oldest_age=(now - oldest_at) if oldest_at else None,
                     dead=int(dead), inflight=int(inflight), bytes=int(size))

    def idem_claim(self, key: str, ttl: float, marker: str = "") -> str | None:
        if self.redis.set(self.k_idem + key, marker, nx=True, px=int(ttl * 1000)):
            return None
        answer = self.redis.get(self.k_idem + key)
        return answer.decode() if isinstance(answer, bytes) else (answer or "")

    def idem_store(self, key: str, answer: str, ttl: float) -> None:
        self.redis.set(self.k_idem + key, answer, px=int(ttl * 1000))

    def idem_release(self, key: str, marker: str = "") -> None:
        self.redis.eval(RELEASE_LUA, 1, self.k_idem + key, marker)

    def idem_forget(self, key: str, suffix: str) -> None:
        # Compare and delete in one step, so a token a peer has just stored is not dropped.
        self.redis.eval(FORGET_LUA, 1, self.k_idem + key, " " + suffix)

    def scan(self, state: str | None = None, batch: int = 500) -> Iterator[Job]:
        keys = {PENDING: self.k_due, INFLIGHT: self.k_inflight, DEAD: self.k_dead, DONE: self.k_done}
        for key in [keys[state]] if state else list(keys.values()):
            start = 0
            while True:
                ids = self.redis.zrange(key, start, start + batch - 1)
                if not ids:
                    break
                for body in self.redis.hmget(self.k_jobs, ids):  # type: ignore[arg-type]
                    if body:
                        job = Job.from_json(body)
                        if state is None or job.state == state:
                            yield job
                start += batch

    def swap(self, job_id: str, states: Collection[str], new: Job | None) -> bool:
        current = self.get(job_id)
        if current is None:
            return False
        body, index, score = "", 0, 0.0
        if new is not None:
            body = new.to_json()
            index = {PENDING: 2, INFLIGHT: 3, DEAD: 4, DONE: 5}[new.state]  # its sorted set among KEYS
            score = new.due_at if new.state == PENDING else (new.lease_until or time.time())
        keys = [self.k_jobs, self.k_due, self.k_inflight, self.k_dead, self.k_done, self.k_sub + current.submission_id,
                self.k_waiting, self.k_sizes]
        waiting = 1 if new is not None and new.state in (PENDING, INFLIGHT) else 0
        created = new.created_at if new is not None else 0.0
        return bool(self._swap(keys=keys, args=[job_id, ",".join(states), body, index, score, created, waiting]))

    def erase_submission(self, submission_id: str) -> list[str]:
        members = [i.decode() for i in self.redis.smembers(self.k_sub + submission_id)]
        ids = members or [submission_id]  # a job stored before submissions had a set of their own
        bodies = self.redis.hmget(self.k_jobs, ids)  # type: ignore[arg-type]
        jobs = [Job.from_json(b) for b in bodies if b]
        if not jobs or any(j.state != DONE for j in jobs):
            return []
        erased = [j for j in jobs if not j.erased]
        if not erased:
            return []
        # The script writes the stubs only if the submission still has exactly these jobs, all done.
        args: list[Any] = [len(members)]
        for job in erased:
            args += [job.id, job.without_personal_data().to_json()]
        done = self._erase(keys=[self.k_jobs, self.k_sub + submission_id], args=args)
        return [j.id for j in erased] if done else []

    def rewrite_persistence(self) -> str | None:
        """After `forget`: Redis's append-only file still holds the old commands until it is rewritten."""
        try:
            info = self.redis.info("persistence")
        except Exception:
            return "could not read Redis's persistence settings: check its AOF and RDB files yourself"
        notes = []
        if info.get("aof_enabled"):
            try:
                self.redis.bgrewriteaof()
                notes.append("the append-only file is being rewritten without the erased data")
            except Exception:
                notes.append("the append-only file could not be rewritten (BGREWRITEAOF refused): run it yourself")
        try:
            snapshots = bool(self.redis.config_get("save").get("save"))
        except Exception:  # CONFIG is often disabled on managed Redis
            snapshots = True
        if snapshots:
            notes.append("RDB snapshots keep the old data until Redis next saves one")
        return "; ".join(notes) or None

    def audit_add(self, entries: list[dict[str, Any]]) -> None:
        lines = [json.dumps(e, separators=(",", ":")) for e in entries]
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(self.k_audit_new, *lines)
            pipe.rpush(self.k_audit, *lines)
            pipe.ltrim(self.k_audit, -10_000, -1)  # the history an operator can list; the server's log keeps all
            pipe.execute()

    def audit_take(self, limit: int = 100) -> list[dict[str, Any]]:
        taken = self.redis.lpop(self.k_audit_new, limit) or []
        return [json.loads(t) for t in taken]  # type: ignore[union-attr]

    def audit_recent(self, limit: int = 100) -> list[dict[str, Any]]:
        return [json.loads(t) for t in self.redis.lrange(self.k_audit, -limit, -1)]  # type: ignore[union-attr]

    def kv_add(self, key: str, value: str, ttl: float) -> str:
        held = self.redis.eval(KV_ADD_LUA, 1, self.k_kv + key, value, max(1, int(ttl * 1000)))
        return held.decode() if isinstance(held, bytes) else str(held)

    def kv_get(self, key: str) -> str | None:
        held = self.redis.get(self.k_kv + key)
        return held.decode() if isinstance(held, bytes) else held

    def kv_set(self, key: str, value: str, ttl: float) -> None:
        self.redis.set(self.k_kv + key, value, px=max(1, int(ttl * 1000)))

    def kv_delete(self, key: str, value: str) -> None:
        self.redis.eval(KV_DELETE_LUA, 1, self.k_kv + key, value)

    def close(self) -> None:
        self.redis.close()


# Replace or delete one job if its state is one of ARGV[2] (comma-separated), keeping every index in step.
# KEYS: jobs, due, inflight, dead, done, the submission's set, waiting, sizes.
# ARGV: id, states, new body ('' deletes), its state's index among KEYS, its score, created_at, waiting (1/0).
SWAP_LUA = """
local body = redis.call('HGET', KEYS[1], ARGV[1])
if not body then return 0 end
local state = cjson.decode(body)['state']
if not string.find(',' .. ARGV[2] .. ',', ',' .. state .. ',', 1, true) then return 0 end
for i = 2, 5 do redis.call('ZREM', KEYS[i], ARGV[1]) end
redis.call('ZREM', KEYS[7], ARGV[1])
redis.call('HDEL', KEYS[8], ARGV[1])
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[6], ARGV[1])
  return 1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[tonumber(ARGV[4])], ARGV[5], ARGV[1])
if ARGV[7] == '1' then
  redis.call('ZADD', KEYS[7], ARGV[6], ARGV[1])
  redis.call('HSET', KEYS[8], ARGV[1], string.len(ARGV[3]))
end
return 1
"""

# Erase a submission's jobs (ARGV: count of jobs, then id, stub pairs) only if it still has that many, all done.
ERASE_LUA = """
local ids = redis.call('SMEMBERS', KEYS[2])
if #ids ~= tonumber(ARGV[1]) then return 0 end
for i = 2, #ARGV, 2 do
  local body = redis.call('HGET', KEYS[1], ARGV[i])
  if not body or cjson.decode(body)['state'] ~= 'done' then return 0 end
end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""

# Counts and sizes in one round trip, computed inside Redis: no job body crosses the wire.
STATS_LUA = """
local oldest = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
local size = 0
for _, v in ipairs(redis.call('HVALS', KEYS[5])) do size = size + tonumber(v) end
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[2]), redis.call('ZCARD', KEYS[3]),
        oldest[2] or false, size}
"""

RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Add a job only if its id is new: its body, its due/dead entry, its waiting entry and size, and its place
# among its submission's jobs (KEYS[5]).
ADD_LUA = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('SADD', KEYS[5], ARGV[1])
if ARGV[6] == '1' then
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[5])
end
return 1
"""


KV_ADD_LUA = """
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"""
KV_DELETE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


FORGET_LUA = """
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, -string.len(ARGV[1])) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def open_store(settings: QueueSettings, redis_url: str | None, config_source: str) -> Store:
    """Redis when the relay is scaled out; else a SQLite file next to the config (or a temp one for a mapping)."""
    if redis_url:
        return RedisStore(redis_url)
    if settings.path:
        return SQLiteStore(settings.path)
    if config_source and config_source != "<mapping>":
        return SQLiteStore(str(Path(config_source).resolve().parent / "formrelay-queue.sqlite3"))
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="formrelay-")) / "queue.sqlite3"
    log.warning("queue: no [queue] path and no config file; using %s, which is not kept across restarts", path)
    return SQLiteStore(str(path))


def backoff(settings: QueueSettings, attempts: int, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter, never sooner than the provider's Retry-After."""
    ceiling = min(settings.backoff_cap, settings.backoff_base * (2 ** max(0, attempts - 1)))
    delay = random.uniform(ceiling / 2, ceiling)
    return max(delay, retry_after or 0.0)


def new_job(form: str, target: str, submission: Any, due_at: float | None = None,
            detail: dict[str, Any] | None = None) -> Job:
    """A job for one target; its id is the submission's id, plus the target for any but the primary (stable)."""
    now = time.time()
    job_id = submission.id if target == "primary" else f"{submission.id}-{target}"
    return Job(id=job_id or uuid.uuid4().hex, form=form, target=target, submission=serialise_submission(submission),
               created_at=now, due_at=due_at if due_at is not None else now, detail=detail)


def storage_down(exc: BaseException) -> bool:
    """True when exc says the queue storage cannot be reached (Redis down or refusing, SQLite file locked/gone)."""
    try:
        import redis
    except ImportError:  # pragma: no cover - redis is a dependency
        redis = None  # type: ignore[assignment]
    if redis is not None and isinstance(exc, redis.RedisError):
        return True
    return isinstance(exc, sqlite3.OperationalError | ConnectionError | TimeoutError)


class Worker:
    """Claims due jobs and delivers them; runs in threads inside `serve`/`demo`, or alone as `formrelay worker`."""

    def __init__(self, relay: Any, threads: int | None = None) -> None:
        self.relay = relay
        self.settings: QueueSettings = relay.queue_settings
        self.threads = threads or self.settings.workers
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # Leases this process holds, by thread: handed back at stop() so no job waits for its lease to expire.
        self._untried: dict[int, list[Job]] = {}
        self._current: dict[int, Job] = {}
        self._held_lock = threading.Lock()
        self._outage_since: float | None = None
        self._outage_lock = threading.Lock()
        # Jobs whose result (done, rescheduled, dead) could not be written because the storage went away: written
        # as soon as it answers again, so a job does not sit on a stale lease for `lease` seconds.
        self._unsaved: list[Job] = []
        self._chores = threading.Lock()
        self._last_audit = 0.0
        self._last_sweep = time.monotonic() - 270  # the first sweep 30 s after start, not with every worker's boot

    def start(self) -> Worker:
        for i in range(self.threads):
            thread = threading.Thread(target=self.run, name=f"formrelay-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; let deliveries in flight finish (up to timeout), then hand back every lease still held.

        A job not yet tried goes back as it was, due now. A job whose delivery is still running when time is up
        is handed back as an expired lease, so the next claim (here or on a peer) treats it at once as
        uncertain and the provider's rule decides, instead of waiting `lease` seconds after a deploy.
        """
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        try:
            self._save_unsaved()
        except Exception as exc:
            log.warning("queue: %d job result(s) could not be written (%s); their leases expire on their own",
                        len(self._unsaved), exc.__class__.__name__)
        with self._held_lock:
            untried = [job for jobs in self._untried.values() for job in jobs]
            cut_off = list(self._current.values())
            self._untried.clear()
            self._current.clear()
        now = time.time()
        for job in untried + cut_off:
            try:
                if job in untried:  # never attempted: as it was before the claim, due now
                    job.state, job.due_at, job.lease_until = PENDING, now, None
                    job.attempts = max(0, job.attempts - 1)
                else:  # cut off mid-delivery: an expired lease, picked up at once as uncertain
                    job.state, job.lease_until = INFLIGHT, now
                self.relay.store.put(job)
                log.info("queue: handed back the lease of job %s", job.id)
            except Exception as exc:
                log.warning("queue: could not hand back job %s (%s); its lease expires on its own",
                            job.id, exc.__class__.__name__)

    def run(self) -> None:
        pause = self.settings.poll_interval
        while not self._stop.is_set():
            try:
                worked = self.run_once()
                self._storage_back()
                pause = self.settings.poll_interval
                self.chores()
            except Exception as exc:
                worked = 0
                if storage_down(exc):
                    # One line per outage, not a traceback per poll; poll less often while it lasts.
                    self._storage_lost(exc)
                    pause = min(max(pause * 2, self.settings.poll_interval), 10.0)
                else:
                    log.exception("queue worker: unexpected error; carrying on")
            if not worked:
                self._stop.wait(pause)

    def _save_unsaved(self) -> None:
        with self._held_lock:
            pending, self._unsaved = self._unsaved, []
        for index, job in enumerate(pending):
            try:
                self.relay.store.put(job)
                if job.state == DONE and self.settings.keep_done <= 0:
                    self.relay.store.erase_submission(job.submission_id)  # as the delivery itself would have
            except Exception:
                with self._held_lock:
                    self._unsaved.extend(pending[index:])
                raise

    def _storage_lost(self, exc: BaseException) -> None:
        with self._outage_lock:
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                log.error("queue worker: the queue storage is unavailable (%s); retrying with backoff",
                          exc.__class__.__name__)

    def _storage_back(self) -> None:
        if self._outage_since is None:
            return
        with self._outage_lock:
            if self._outage_since is not None:
                log.warning("queue worker: the queue storage is back after %.0f s",
                            time.monotonic() - self._outage_since)
                self._outage_since = None

    def chores(self) -> None:
        """One thread at a time: log operators' recorded actions (each second), sweep old data (every 5 minutes)."""
        if not self._chores.acquire(blocking=False):
            return
        try:
            # The relay gives these (delivery floor); a relay without them (a test's) simply has no chores.
            log_actions = getattr(self.relay, "log_operator_actions", None)
            sweep = getattr(self.relay, "sweep", None)
            if time.monotonic() - self._last_audit >= 1.0:
                self._last_audit = time.monotonic()
                if log_actions is not None:
                    log_actions()
                if getattr(self.relay.store, "scrub_pending", False):
                    self.relay.store.scrub()
            if sweep is not None and time.monotonic() - self._last_sweep >= 300:
                self._last_sweep = time.monotonic()
                sweep()
        finally:
            self._chores.release()

    def run_once(self, limit: int = 1) -> int:
        """Claim and deliver up to `limit` jobs; the number handled."""
        if self._stop.is_set():
            return 0
        self._save_unsaved()
        jobs = self.relay.store.claim(time.time(), self.settings.lease, limit)
        me = threading.get_ident()
        with self._held_lock:
            self._untried[me] = list(jobs)
        for job in jobs:
            with self._held_lock:
                if self._stop.is_set():
                    break  # the rest are handed back by stop(), untried
                self._untried[me].remove(job)
                self._current[me] = job
            try:
                self.relay.work(job)
            except Exception as exc:
                if storage_down(exc):
                    with self._held_lock:
                        self._unsaved.append(job)  # its new state is set on the object; the write failed
                raise
            finally:
                with self._held_lock:
                    self._current.pop(me, None)
        with self._held_lock:
            if not self._stop.is_set():
                self._untried.pop(me, None)
        return len(jobs)


_embedded: list[Worker] = []
_embedded_lock = threading.Lock()


def start_embedded_worker(app: Any) -> Worker | None:
    """The worker threads inside `serve`/`demo`/`wsgi:app`, unless [queue] embedded_worker = false.

    They are stopped when the process exits (atexit, and multiprocessing's exit for forked server workers),
    so a server's graceful shutdown also hands the queue's leases back.
    """
    relay = app.extensions["formrelay"]
    if not relay.queue_settings.embedded_worker:
        return None
    worker = Worker(relay).start()
    with _embedded_lock:
        first = not _embedded
        _embedded.append(worker)
    if first:
        import atexit
        import multiprocessing.util

        atexit.register(stop_embedded_workers)
        # A forked server worker (granian) leaves through os._exit after multiprocessing's finalizers: no atexit.
        multiprocessing.util.Finalize(None, stop_embedded_workers, exitpriority=100)
    return worker


def stop_embedded_workers(timeout: float = 10.0) -> None:
    """Stop every embedded worker of this process and hand back its leases (idempotent)."""
    with _embedded_lock:
        workers = list(_embedded)
        _embedded.clear()
    for worker in workers:
        worker.stop(timeout)

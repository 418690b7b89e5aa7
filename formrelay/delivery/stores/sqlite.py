"""The SQLite store: one file in WAL mode, shared safely by the threads and processes of one host."""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from formrelay.delivery.jobs import DEAD, DONE, INFLIGHT, PENDING, STATES, Job
from formrelay.delivery.stores.base import Stats, Store

log = logging.getLogger(__name__)


class _Change:
    """One thread's change waiting for a group commit, and what came of it."""

    __slots__ = ("change", "done", "error", "result")

    def __init__(self, change: Callable[[sqlite3.Connection], Any]) -> None:
        self.change, self.done, self.error, self.result = change, False, None, None


class _Connection:
    """The connection per thread, transactions, and the group commit that every SQLite write goes through."""

    path: str
    _local: threading.local
    _pending: list[_Change]
    _pending_lock: threading.Lock
    _commit_lock: threading.Lock

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

    def _grouped(self, change: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run `change` in a transaction shared with the changes other threads of this process make meanwhile.

        Group commit: every commit waits for the disk (synchronous=FULL), and one thread at a time commits.
        The threads that arrive while a commit is under way are committed together by the next of them, each in
        a savepoint of its own (one change failing undoes only itself), and each returns only once its change
        is on disk. Under a burst of submissions (and a worker rescheduling a backlog) that is one fsync for
        many jobs instead of one each.
        """
        op = _Change(change)
        with self._pending_lock:
            self._pending.append(op)
        with self._commit_lock:
            if not op.done:
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                self._commit(batch)
        if op.error is not None:
            raise op.error
        return op.result

    def _commit(self, batch: list[_Change]) -> None:
        try:
            with self._tx() as db:
                for op in batch:
                    db.execute("SAVEPOINT change")
                    try:
                        op.result = op.change(db)
                    except Exception as exc:
                        db.execute("ROLLBACK TO change")
                        op.error = exc
                    db.execute("RELEASE change")
        except BaseException as exc:
            for op in batch:
                op.result, op.error = None, op.error or (exc if isinstance(exc, Exception) else RuntimeError(exc))
            if not isinstance(exc, Exception):
                raise
        finally:
            for op in batch:
                op.done = True

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None


class _Records(_Connection):
    """The small tables beside the jobs: idempotency records, shared values with an expiry, operator actions."""

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


class SQLiteStore(_Records, Store):
    """One SQLite file (WAL), shared safely by the threads and processes of one host."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.scrub_pending = False  # an erasure whose write-ahead log is not truncated yet
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._pending: list[_Change] = []  # changes waiting for the next group commit (see _grouped)
        self._pending_lock = threading.Lock()
        self._commit_lock = threading.Lock()
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
            # Expired leases are claimed by their own ordered, limited query (see claim()).
            db.execute("CREATE INDEX IF NOT EXISTS jobs_lease ON jobs (state, lease_until)")
            _create_totals(db)
            db.execute("CREATE TABLE IF NOT EXISTS idempotency (key TEXT PRIMARY KEY, answer TEXT NOT NULL,"
                       " expires_at REAL NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL,"
                       " expires_at REAL NOT NULL)")

    # The created_at column holds Job.waiting_since (created_at, or an operator's retry): what "oldest waiting" means.
    def _write(self, db: sqlite3.Connection, job: Job) -> None:
        # An upsert, not INSERT OR REPLACE: a replace deletes the row without running the delete trigger, and
        # the running totals (see _create_totals) would drift.
        body = job.to_json()
        db.execute(
            "INSERT INTO jobs (id, state, due_at, lease_until, created_at, body, size) VALUES (?,?,?,?,?,?,?)"
            " ON CONFLICT(id) DO UPDATE SET state = excluded.state, due_at = excluded.due_at,"
            " lease_until = excluded.lease_until, created_at = excluded.created_at, body = excluded.body,"
            " size = excluded.size",
            (job.id, job.state, job.due_at, job.lease_until, job.waiting_since, body, len(body)),
        )

    def put(self, job: Job) -> None:
        self._grouped(lambda db: self._write(db, job))

    def add(self, job: Job) -> bool:
        body = job.to_json()
        return bool(self._grouped(lambda db: db.execute(
            "INSERT OR IGNORE INTO jobs (id, state, due_at, lease_until, created_at, body, size)"
            " VALUES (?,?,?,?,?,?,?)",
            (job.id, job.state, job.due_at, job.lease_until, job.waiting_since, body, len(body)),
        ).rowcount > 0))

    def claim(self, now: float, lease: float, limit: int) -> list[Job]:
        # Two ordered, limited queries, each walking one index in order (expired leases first, as the Redis
        # script does): O(log N) in the depth, where one query with OR merged both indexes and sorted every due
        # row inside the write lock that enqueues wait for.
        if not self._anything_due(now):
            return []  # nothing due: no write lock taken, enqueues are not held up by an idle worker's poll
        with self._tx() as db:
            rows = [(body, True) for (body,) in db.execute(
                "SELECT body FROM jobs WHERE state = ? AND lease_until <= ? ORDER BY lease_until LIMIT ?",
                (INFLIGHT, now, limit))]
            if len(rows) < limit:
                rows += [(body, False) for (body,) in db.execute(
                    "SELECT body FROM jobs WHERE state = ? AND due_at <= ? ORDER BY due_at LIMIT ?",
                    (PENDING, now, limit - len(rows)))]
            jobs = []
            for body, expired in rows:
                job = Job.from_json(body)
                job.uncertain = job.uncertain or expired
                job.state, job.lease_until = INFLIGHT, now + lease
                job.attempts += 1
                self._write(db, job)
                jobs.append(job)
            return jobs

    def _anything_due(self, now: float) -> bool:
        db = self._db()
        return any(db.execute(f"SELECT 1 FROM jobs WHERE state = ? AND {column} <= ? LIMIT 1", (state, now)).fetchone()
                   for state, column in ((INFLIGHT, "lease_until"), (PENDING, "due_at")))

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
        """Running totals (kept by triggers) and the oldest waiting job (one index seek per state): O(log N)."""
        db = self._db()
        db.execute("BEGIN")  # one snapshot for the totals and the oldest
        try:
            totals = {state: (jobs, size) for state, jobs, size in db.execute("SELECT state, jobs, bytes FROM totals")}
            oldest = [row[0] for state in (PENDING, INFLIGHT)
                      for row in db.execute("SELECT MIN(created_at) FROM jobs WHERE state = ?", (state,))
                      if row[0] is not None]
        finally:
            db.execute("COMMIT")
        count = {state: totals.get(state, (0, 0))[0] for state in (PENDING, INFLIGHT, DEAD)}
        size = sum(totals.get(state, (0, 0))[1] for state in (PENDING, INFLIGHT))
        first = min(oldest) if oldest else None
        return Stats(depth=count[PENDING] + count[INFLIGHT], oldest_age=(now - first) if first else None,
                     dead=count[DEAD], inflight=count[INFLIGHT], bytes=int(size))

    def listing(self, states: Sequence[str], forms: Collection[str] | None, created_after: float | None,
                created_before: float | None, limit: int) -> list[Job]:
        where, args = ["state = ?"], []
        if created_after is not None:
            where.append("created_at >= ?")
            args.append(created_after)
        if created_before is not None:
            where.append("created_at <= ?")
            args.append(created_before)
        if forms is not None:
            where.append(f"json_extract(body, '$.form') IN ({','.join('?' * len(forms))})")
            args.extend(forms)
        sql = f"SELECT body FROM jobs WHERE {' AND '.join(where)} ORDER BY created_at, id LIMIT ?"
        db = self._db()
        return [Job.from_json(body) for state in states for (body,) in db.execute(sql, (state, *args, limit))]

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

    def rewrite_persistence(self) -> None:
        """Nothing to rewrite: deleted rows are overwritten (secure_delete) and scrub() truncates the log."""
        return None


def _create_totals(db: sqlite3.Connection) -> None:
    """Jobs and bytes per state, kept by triggers in the same transaction as every change: stats() reads four
    rows instead of counting and summing the whole queue. Counted once from the jobs when the table is new."""
    new = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'totals'").fetchone() is None
    db.execute("CREATE TABLE IF NOT EXISTS totals (state TEXT PRIMARY KEY, jobs INTEGER NOT NULL,"
               " bytes INTEGER NOT NULL)")
    if new:
        db.executemany("INSERT OR IGNORE INTO totals (state, jobs, bytes) VALUES (?, 0, 0)",
                       [(state,) for state in STATES])
        db.execute("UPDATE totals SET (jobs, bytes) = (SELECT COUNT(*), COALESCE(SUM(size), 0) FROM jobs"
                   " WHERE jobs.state = totals.state)")
    db.execute("CREATE TRIGGER IF NOT EXISTS jobs_added AFTER INSERT ON jobs BEGIN"
               " UPDATE totals SET jobs = jobs + 1, bytes = bytes + NEW.size WHERE state = NEW.state; END")
    db.execute("CREATE TRIGGER IF NOT EXISTS jobs_deleted AFTER DELETE ON jobs BEGIN"
               " UPDATE totals SET jobs = jobs - 1, bytes = bytes - OLD.size WHERE state = OLD.state; END")
    db.execute("CREATE TRIGGER IF NOT EXISTS jobs_changed AFTER UPDATE OF state, size ON jobs BEGIN"
               " UPDATE totals SET jobs = jobs - 1, bytes = bytes - OLD.size WHERE state = OLD.state;"
               " UPDATE totals SET jobs = jobs + 1, bytes = bytes + NEW.size WHERE state = NEW.state; END")

"""The queue worker: claims due jobs from a Store and hands each to a handler, in threads it starts and stops.

It knows jobs and stores, never the application: what delivering a job means (and which state the job ends in)
is the handler's business. Stopping hands every lease it holds back to the store, so a deploy leaves no job
waiting for its lease to expire.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from formrelay.delivery.jobs import DONE, INFLIGHT, PENDING, Job
from formrelay.delivery.settings import QueueSettings
from formrelay.delivery.storage_check import watch_for
from formrelay.delivery.stores import Store, storage_down

log = logging.getLogger(__name__)

# Delivers one claimed job and records its new state in the store (finish, reschedule, bury).
Handler = Callable[[Job], object]

# Jobs this process is delivering right now, by id, across every Worker in it: a job whose lease ran out while
# its attempt still runs here is not claimed and sent a second time by another thread of the same process.
# The value is the attempt's own Job: its state stays INFLIGHT until the handler sets the result it writes.
_running: dict[str, Job] = {}
_running_lock = threading.Lock()
# A fan-out job (an `also` form, a webhook) handed back because its share of the threads is in use is due again
# this much later, so that the next claim finds the primary submissions due before it.
FANOUT_RETRY = 1.0


def fanout(job: Job) -> bool:
    """Jobs for a form's other destinations (`also:<form>`, `webhook:<name>/<event>`), not its own provider's."""
    return job.target not in ("primary", "followup")


def fanout_threads(threads: int) -> int:
    """How many of a worker's threads fan-out jobs may hold at once: half, and never all of them when there are
    two or more, so that a slow webhook receiver or second CRM cannot stop primary submissions."""
    return max(1, threads // 2) if threads > 1 else 1
# Periodic housekeeping the application hands in (log operators' actions, sweep old data).
Chore = Callable[[], object]


class Worker:
    """Claims due jobs and hands each to `handle`; threads inside `serve`/`demo`, or alone as `formrelay worker`.

    Its chores: `log_actions` each second (the operator actions the queue CLI recorded), `sweep` every 5 minutes,
    and the store's scrub() when an erasure is not yet final on disk.
    """

    def __init__(self, store: Store, handle: Handler, settings: QueueSettings, threads: int | None = None, *,
                 log_actions: Chore | None = None, sweep: Chore | None = None) -> None:
        self.store = store
        self.handle = handle
        self.settings = settings
        self.threads = threads or self.settings.workers
        self._log_actions = log_actions
        self._sweep = sweep
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
        self._fanout_cap = fanout_threads(self.threads)
        self._fanout_busy = 0
        self._warned: set[str] = set()  # jobs already said to be still running here (once each, not every lease)
        self._chores = threading.Lock()
        self._last_audit = 0.0
        self._last_sweep = time.monotonic() - 270  # the first sweep 30 s after start, not with every worker's boot

    def start(self) -> Worker:
        # Storage health (persistence, eviction, refused writes, a wiped store) now and every few seconds.
        watch_for(self.store).start()
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
                self.store.put(job)
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
                    # One line per outage, not a traceback per poll; poll less often while it lasts: doubling,
                    # up to every 10 s, or backoff_cap when that is shorter (a job waits no longer either).
                    self._storage_lost(exc)
                    pause = max(self.settings.poll_interval, min(pause * 2, 10.0, self.settings.backoff_cap))
                else:
                    log.exception("queue worker: unexpected error; carrying on")
            if not worked:
                self._stop.wait(pause)

    def _save_unsaved(self) -> None:
        with self._held_lock:
            pending, self._unsaved = self._unsaved, []
        for index, job in enumerate(pending):
            try:
                self.store.put(job)
                if job.state == DONE and self.settings.keep_done <= 0:
                    self.store.erase_submission(job.submission_id)  # as the delivery itself would have
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
            if time.monotonic() - self._last_audit >= 1.0:
                self._last_audit = time.monotonic()
                if self._log_actions is not None:
                    self._log_actions()
                if self.store.scrub_pending:
                    self.store.scrub()
            if self._sweep is not None and time.monotonic() - self._last_sweep >= 300:
                self._last_sweep = time.monotonic()
                self._sweep()
        finally:
            self._chores.release()

    def _admit(self, job: Job) -> str:
        """'run', 'running here' (an attempt of it runs in this process), or 'later' (fan-out threads all busy).

        Called with _held_lock held.
        """
        with _running_lock:
            attempt = _running.get(job.id)
            # Still INFLIGHT: the attempt here has not set its result, so it will write it over this claim. Once
            # it has (rescheduled, say, and its thread not yet out of the handler), this is a new claim to deliver.
            if attempt is not None and attempt.state == INFLIGHT:
                return "running here"
            if fanout(job) and self._fanout_busy >= self._fanout_cap:
                return "later"
            _running[job.id] = job
        if fanout(job):
            self._fanout_busy += 1
        return "run"

    def _hand_back(self, job: Job, due_at: float) -> None:
        """Untried: back as it was before the claim, due at `due_at` (the claim's attempt is not counted)."""
        job.state, job.due_at, job.lease_until = PENDING, due_at, None
        job.attempts = max(0, job.attempts - 1)
        self.store.put(job)

    def run_once(self, limit: int = 1) -> int:
        """Claim and deliver up to `limit` jobs; the number handled."""
        if self._stop.is_set():
            return 0
        self._save_unsaved()
        jobs = self.store.claim(time.time(), self.settings.lease, limit)
        me = threading.get_ident()
        with self._held_lock:
            self._untried[me] = list(jobs)
        for job in jobs:
            with self._held_lock:
                if self._stop.is_set():
                    break  # the rest are handed back by stop(), untried
                self._untried[me].remove(job)
                verdict = self._admit(job)
                if verdict == "run":
                    self._current[me] = job
            if verdict == "running here":
                # Its lease ran out while its attempt still runs in this process: the claim renewed the lease,
                # and the attempt in flight writes the job's state when it ends. Sending it again would double it.
                first = job.id not in self._warned
                if first and len(self._warned) < 1000:
                    self._warned.add(job.id)
                log.log(logging.WARNING if first else logging.DEBUG,
                        "queue: job %s is still being delivered by this process (its lease of %.0f s ran out); "
                        "not sent a second time", job.id, self.settings.lease)
                continue
            if verdict == "later":
                self._hand_back(job, time.time() + FANOUT_RETRY)
                continue
            try:
                self.handle(job)
            except Exception as exc:
                if storage_down(exc):
                    with self._held_lock:
                        self._unsaved.append(job)  # its new state is set on the object; the write failed
                raise
            finally:
                with self._held_lock:
                    self._current.pop(me, None)
                    if fanout(job):
                        self._fanout_busy -= 1
                with _running_lock:
                    if _running.get(job.id) is job:
                        del _running[job.id]
        with self._held_lock:
            if not self._stop.is_set():
                self._untried.pop(me, None)
        return len(jobs)


_embedded: list[Worker] = []
_embedded_lock = threading.Lock()


def start_embedded(worker: Worker) -> Worker:
    """Start a worker's threads inside a server process (`serve`, `demo`, `wsgi:app`).

    They are stopped when the process exits (atexit, and multiprocessing's exit for forked server workers),
    so a server's graceful shutdown also hands the queue's leases back.
    """
    worker.start()
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

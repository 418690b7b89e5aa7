"""What `formrelay check` asks Redis: does it answer, and would it keep what the relay answered `queued`?

The queue promises that a `202 queued` submission reaches the provider, even across a restart. In Redis that
holds only with persistence that covers every write (AOF; RDB snapshots lose what came after the last one) and
an eviction policy that never drops keys (`noeviction`: a full Redis refuses writes, which the relay answers
with 503, rather than silently deleting queued jobs or idempotency records).
"""
from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


@dataclass
class RedisReport:
    where: str
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


def where(url: str) -> str:
    """host:port/db of a redis URL, without the password."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = parts.port or 6379
    return f"{parts.scheme}://{host}:{port}{parts.path or ''}"


def _config(client: Any, name: str) -> str | None:
    """CONFIG GET, or None where it is not allowed (managed Redis services often forbid CONFIG)."""
    try:
        value = client.config_get(name).get(name)
    except Exception:
        return None
    return value if isinstance(value, str) else None


def inspect_redis(url: str, timeout: float = 3.0) -> RedisReport:
    """Connect to url; report an error when it does not answer, warnings when queued jobs could be lost."""
    import redis

    report = RedisReport(where(url))
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        _inspect(client, report)
    except redis.AuthenticationError:
        report.error = "Redis refused the credentials in redis_url"
    except redis.RedisError as exc:
        report.error = f"no answer from Redis ({exc.__class__.__name__}): is redis-server running, and is redis_url right?"
    finally:
        client.close()
    return report


def _inspect(client: Any, report: RedisReport) -> None:
    client.ping()
    persistence = client.info("persistence")
    memory = client.info("memory")
    aof = bool(persistence.get("aof_enabled"))
    save = _config(client, "save")
    fsync = _config(client, "appendfsync")
    policy = memory.get("maxmemory_policy") or _config(client, "maxmemory-policy") or "unknown"
    report.facts = {"appendonly": aof, "save": save, "appendfsync": fsync, "maxmemory_policy": policy,
                    "maxmemory": memory.get("maxmemory")}
    if not aof:
        if save:
            report.warnings.append(
                f"Redis persists only by RDB snapshots (save {save!r}): submissions answered 'queued' after the "
                "last snapshot are lost if Redis restarts. Set 'appendonly yes' (with 'appendfsync everysec' "
                "or 'always').")
        elif save == "":
            report.warnings.append(
                "Redis keeps nothing on disk (appendonly no, no RDB save): every submission answered 'queued' "
                "is lost when Redis restarts. Set 'appendonly yes' (with 'appendfsync everysec' or 'always').")
        else:
            report.warnings.append(
                "Redis has no append-only file (appendonly no) and its RDB settings cannot be read: submissions "
                "answered 'queued' may be lost when Redis restarts. Set 'appendonly yes'.")
    elif fsync == "no":
        report.warnings.append("Redis writes its append-only file with 'appendfsync no': the OS decides when "
                               "queued submissions reach the disk. Use 'everysec' or 'always'.")
    refused = redis_problems(client).get(WRITES_REFUSED)
    if refused:
        report.warnings.append(f"{refused}. Raise maxmemory or free memory; after a failed save, fix the disk.")
    if policy != "noeviction":
        report.warnings.append(
            f"Redis maxmemory-policy is {policy!r}: when memory fills up it may delete queued submissions and "
            "idempotency records. Set 'maxmemory-policy noeviction' (a full Redis is then answered 503, "
            "nothing is dropped).")


# -- problems found from Redis's own facts (check, and the storage watch) -------------------------------------

# Reason codes (the label of formrelay_queue_storage_problem, and the key in /readyz `queue.storage_health`).
PERSISTENCE_OFF, EVICTION, WRITES_REFUSED, LOST_JOBS = "persistence_off", "eviction", "writes_refused", "lost_jobs"
REASONS = (PERSISTENCE_OFF, EVICTION, WRITES_REFUSED, LOST_JOBS)


def redis_problems(client: Any, probe_key: str | None = None) -> dict[str, str]:
    """What makes Redis unfit to keep queued submissions now: reason code -> words for an operator.

    Persistence off (no AOF, no RDB save) and an eviction policy that may delete keys are read from INFO/CONFIG;
    refused writes from INFO (a full Redis with noeviction, a failed background save with
    stop-writes-on-bgsave-error, a read-only replica) and, when `probe_key` is given, from one small write.
    """
    import redis

    found: dict[str, str] = {}
    persistence = client.info("persistence")
    memory = client.info("memory")
    if not persistence.get("aof_enabled") and _config(client, "save") == "":
        found[PERSISTENCE_OFF] = ("Redis keeps nothing on disk (no append-only file, no RDB save): a restart loses "
                                  "every queued submission")
    policy = memory.get("maxmemory_policy") or _config(client, "maxmemory-policy")
    if policy and policy != "noeviction":
        found[EVICTION] = f"Redis maxmemory-policy is {policy}: a full Redis deletes keys, queued submissions too"
    used, cap = int(memory.get("used_memory") or 0), int(memory.get("maxmemory") or 0)
    if cap and used >= cap and policy == "noeviction":
        found[WRITES_REFUSED] = "Redis is at its maxmemory and refuses writes: new deferrals are answered 503"
    elif persistence.get("rdb_last_bgsave_status") == "err" and _config(client, "stop-writes-on-bgsave-error") == "yes":
        found[WRITES_REFUSED] = "Redis refuses writes (MISCONF: its last background save failed)"
    if probe_key and WRITES_REFUSED not in found:
        try:
            client.set(probe_key, "1", px=60_000)
        except redis.ResponseError as exc:  # OOM, MISCONF, READONLY, NOPERM: Redis answers but will not keep it
            word = str(exc).split(" ", 1)[0][:20]
            found[WRITES_REFUSED] = f"Redis refuses writes ({word}): new deferrals are answered 503"
    return found


# -- the storage watch: at start-up and every few seconds, in every server process ---------------------------

@dataclass(frozen=True)
class StorageEvent:
    """What subscribers (the alerts package) are told: `problem` (reason, text), `cleared` (reason), `lost` (count)."""

    kind: str
    reason: str
    text: str
    count: int = 0
    at: float = 0.0


Subscriber = Callable[[StorageEvent], object]
_subscribers: list[Subscriber] = []


def subscribe(callback: Subscriber) -> Callable[[], None]:
    """Be told of every storage problem, its end, and every loss the watch finds (in the process that found it).

    The callback runs on the watch's thread and must return quickly; an exception in it is logged and ignored.
    Returns a function that unsubscribes.
    """
    _subscribers.append(callback)
    return lambda: _subscribers.remove(callback) if callback in _subscribers else None


def _publish(event: StorageEvent) -> None:
    for callback in list(_subscribers):
        try:
            callback(event)
        except Exception:
            log.exception("queue storage: a subscriber failed on %s", event.kind)


class StorageWatch:
    """Checks the queue storage at start() and every `interval` seconds, on a daemon thread of its own.

    A problem found is logged once (a warning) when it appears and once when it clears; /readyz and /metrics
    read the last result, never the storage itself. A wiped store is found by its sentinel: gone (or new) means
    the data went, and the jobs not yet delivered at the previous check (waiting and dead letters, from the
    store's running totals) are reported as lost. A rollback (Redis restarted from an older snapshot) shows as
    the count of jobs ever accepted going down.
    """

    LOST_SHOWN = 3600.0  # /readyz lists a loss this long (the log line and the alert stay)

    def __init__(self, store: Any, interval: float = 2.0) -> None:
        self.store = store
        self.interval = interval
        self.problems: dict[str, str] = {}
        self.lost: StorageEvent | None = None
        self.lost_total = 0
        self.checked_at: float | None = None
        self.unfinished_seen: int | None = None
        self._sentinel: str | None = None
        self._accepted = 0
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._stop = threading.Event()
        self._probe_key = f"{getattr(store, '_prefix', 'formrelay')}:q:probe"

    def start(self) -> StorageWatch:
        """Check once now (so a server warns as it starts), then every `interval` seconds; once per process."""
        with self._lock:
            if self._pid == os.getpid():
                return self
            self._pid = os.getpid()
        if not hasattr(self.store, "totals"):
            return self  # SQLite: one file on this host, nothing a setting on another server can take away
        self.check()
        threading.Thread(target=self._run, name="formrelay-storage-watch", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self._pid != os.getpid() or getattr(self.store, "closed", False):
                return  # a forked copy of the thread's owner: the child starts its own
            self.check()

    def check(self) -> None:
        try:
            found = redis_problems(self.store.redis, self._probe_key)
            self._compare()
        except Exception as exc:  # storage down: readiness says unavailable on its own; nothing to compare
            log.debug("queue storage watch: no answer (%s)", exc.__class__.__name__)
            return
        now = time.time()
        for reason, text in found.items():
            if reason not in self.problems:
                log.warning("queue storage: %s", text)
                _publish(StorageEvent("problem", reason, text, at=now))
        for reason in set(self.problems) - set(found) - {LOST_JOBS}:
            log.warning("queue storage: no longer %s", reason.replace("_", " "))
            _publish(StorageEvent("cleared", reason, "", at=now))
        if self.lost is not None and now - self.lost.at < self.LOST_SHOWN:
            found[LOST_JOBS] = self.lost.text
        self.problems, self.checked_at = found, now

    def _compare(self) -> None:
        sentinel, totals = self.store.totals()
        unfinished = sum(max(0, totals.get(k, 0)) for k in ("pending", "inflight", "dead"))
        accepted = totals.get("accepted", 0)
        if self._sentinel is None:  # first look of this process: what there is now is the baseline
            self._sentinel = sentinel or self.store.sentinel()
        elif sentinel != self._sentinel:
            self._sentinel = self.store.renew_sentinel() if sentinel is None else sentinel
            self._lose(self.unfinished_seen or 0, "the queue storage was wiped (its sentinel key is gone)")
        elif accepted < self._accepted:
            self._lose(max(0, (self.unfinished_seen or 0) - unfinished),
                       "the queue storage went back to an older copy (restored snapshot)")
        self.unfinished_seen, self._accepted = unfinished, accepted

    def _lose(self, count: int, how: str) -> None:
        if count == 0:
            log.warning("queue storage: %s; no job was waiting at the previous check", how)
            return
        text = f"the queue storage lost {count} jobs"
        log.error("queue storage: %s: %s; those submissions were answered 'queued' and will not be delivered. Find "
                  "them in the web server's logs or the CRM, and make the storage durable (docs/queue-at-scale.md)",
                  text, how)
        self.lost = StorageEvent("lost", LOST_JOBS, text, count=count, at=time.time())
        self.lost_total += count
        _publish(self.lost)

    def view(self) -> dict[str, Any]:
        """For /readyz: the reasons (code -> words) found by the last check, and when it ran."""
        return {"problems": dict(self.problems), "checked_at": self.checked_at, "unfinished_seen": self.unfinished_seen,
                "lost_total": self.lost_total}

    def collector(self) -> Any:
        """Prometheus gauges: formrelay_queue_storage_problem{reason} (1 while found) and the jobs lost so far."""
        from prometheus_client.core import GaugeMetricFamily
        from prometheus_client.registry import Collector

        watch = self

        class _Storage(Collector):
            def collect(self) -> Any:
                problem = GaugeMetricFamily("formrelay_queue_storage_problem",
                                            "1 while the queue storage has this problem (see /readyz), else 0.",
                                            labels=["reason"])
                for reason in REASONS:
                    problem.add_metric([reason], 1.0 if reason in watch.problems else 0.0)
                yield problem
                lost = GaugeMetricFamily("formrelay_queue_storage_lost_jobs",
                                         "Jobs this process saw vanish with a wiped or rolled-back queue storage.")
                lost.add_metric([], float(watch.lost_total))
                yield lost

        return _Storage()


_watches: weakref.WeakKeyDictionary[Any, StorageWatch] = weakref.WeakKeyDictionary()
_watches_lock = threading.Lock()


def watch_for(store: Any) -> StorageWatch:
    """The one watch of this store object (the worker, /readyz and /metrics of a process share it)."""
    with _watches_lock:
        watch = _watches.get(store)
        if watch is None:
            watch = _watches[store] = StorageWatch(store)
        return watch

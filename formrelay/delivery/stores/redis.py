"""The Redis store: jobs shared by every host, each change one atomic step (a transaction or a Lua script)."""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import redis

from formrelay.delivery.jobs import DEAD, DONE, INFLIGHT, PENDING, Job
from formrelay.delivery.stores.base import Stats, Store
from formrelay.delivery.stores.scripts import Scripts


TOTALS = (PENDING, INFLIGHT, DEAD, DONE, "bytes", "accepted")  # the fields of the running totals hash


class RedisStore(Store):
    """Jobs in Redis: a hash of bodies, sorted sets for due times, leases and dead letters; shared by every host."""

    def __init__(self, url: str, prefix: str = "formrelay") -> None:
        # Bounded waits: a Redis that hangs must turn into a clear 503 or a worker backoff, not a stuck thread.
        self.redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        self.k_due, self.k_inflight, self.k_jobs = f"{prefix}:q:due", f"{prefix}:q:inflight", f"{prefix}:q:jobs"
        self.k_dead, self.k_done, self.k_idem = f"{prefix}:q:dead", f"{prefix}:q:done", f"{prefix}:idem:"
        self.k_sub, self.k_audit, self.k_audit_new = f"{prefix}:q:sub:", f"{prefix}:audit", f"{prefix}:audit:new"
        self.k_kv = f"{prefix}:kv:"
        self._prefix = prefix
        # Waiting jobs by creation time; running totals (jobs per state, bytes waiting, jobs ever accepted) kept
        # by the scripts in the same step as each change: stats and the queue cap never read or sum the jobs.
        self.k_waiting, self.k_totals = f"{prefix}:q:waiting", f"{prefix}:q:totals"
        self.k_sentinel = f"{prefix}:q:sentinel"  # made once per store: its absence means the data was wiped
        self.scripts = Scripts(self.redis)
        self._std = [self.k_jobs, self.k_due, self.k_inflight, self.k_dead, self.k_done, self.k_waiting, self.k_totals]
        self._sentinel: str | None = None
        self.closed = False

    def sentinel(self) -> str:
        """The store's sentinel, made on first use (and the totals counted once for a queue from before them)."""
        if self._sentinel is None:
            held = self.scripts.init(keys=[*self._std, f"{self._prefix}:q:sizes", self.k_sentinel],
                                     args=[uuid.uuid4().hex])
            self._sentinel = held.decode() if isinstance(held, bytes) else str(held)
        return self._sentinel

    @staticmethod
    def _score(job: Job) -> float:
        if job.state == PENDING:
            return job.due_at
        if job.state == INFLIGHT:
            return job.lease_until or time.time()
        return time.time()

    def put(self, job: Job) -> None:
        self.sentinel()
        self.scripts.put(keys=[*self._std, self.k_sub + job.submission_id],
                         args=[job.id, job.to_json(), job.state, self._score(job), job.waiting_since])

    def add(self, job: Job) -> bool:
        # Body, its state's entry and the totals in one step, and only if the id is new.
        self.sentinel()
        return bool(self.scripts.add(keys=[*self._std, self.k_sub + job.submission_id],
                                     args=[job.id, job.to_json(), job.state, self._score(job), job.waiting_since]))

    def claim(self, now: float, lease: float, limit: int) -> list[Job]:
        bodies = self.scripts.claim(keys=self._std, args=[now, lease, limit])
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

    def listing(self, states: Sequence[str], forms: Collection[str] | None, created_after: float | None,
                created_before: float | None, limit: int, batch: int = 500) -> list[Job]:
        """Pending jobs walk the creation-time index within the age bounds; the others their own sets (in flight,
        dead, delivered: few, or ordered by when). Bodies are read a batch at a time and filtered here."""
        out: list[Job] = []
        for state in states:
            found: list[Job] = []
            # Pending jobs by creation time (the waiting index, nearly all of them); the others from their own set.
            waiting = state == PENDING
            key = self.k_waiting if waiting else {INFLIGHT: self.k_inflight, DEAD: self.k_dead, DONE: self.k_done}[state]
            low = created_after if created_after is not None and waiting else "-inf"
            high = created_before if created_before is not None and waiting else "+inf"
            offset = 0
            while len(found) < limit:
                ids = self.redis.zrangebyscore(key, low, high, start=offset, num=batch)
                if not ids:
                    break
                offset += len(ids)
                for body in self.redis.hmget(self.k_jobs, ids):  # type: ignore[arg-type]
                    if not body:
                        continue
                    job = Job.from_json(body)
                    if job.state != state or (forms is not None and job.form not in forms):
                        continue
                    if (created_after is not None and job.created_at < created_after) or \
                            (created_before is not None and job.created_at > created_before):
                        continue
                    found.append(job)
            found.sort(key=lambda j: (j.created_at, j.id))
            out += found[:limit]
        return out

    def drop(self, job_id: str) -> bool:
        return self.swap(job_id, (PENDING, INFLIGHT, DEAD, DONE), None)

    def purge_done(self, before: float, batch: int = 500) -> None:
        while True:
            old = self.redis.zrangebyscore(self.k_done, "-inf", before, start=0, num=batch)
            if not old:
                return
            args: list[Any] = []
            for job_id, body in zip(old, self.redis.hmget(self.k_jobs, old), strict=True):  # type: ignore[arg-type]
                submission = Job.from_json(body).submission_id if body else job_id.decode()
                args += [job_id, self.k_sub + submission]
            self.scripts.purge(keys=self._std, args=args)
            if len(old) < batch:
                return

    def stats(self, now: float) -> Stats:
        # Not a transaction: Redis refuses MULTI when it is out of memory, and readiness must still read the counts.
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(self.k_totals, [PENDING, INFLIGHT, DEAD, "bytes"])
            pipe.zrange(self.k_waiting, 0, 0, withscores=True)
            totals, oldest = pipe.execute()
        due, inflight, dead, size = (int(v or 0) for v in totals)
        oldest_at = float(oldest[0][1]) if oldest else None
        return Stats(depth=due + inflight, oldest_age=(now - oldest_at) if oldest_at else None,
                     dead=dead, inflight=inflight, bytes=size)

    def totals(self) -> tuple[str | None, dict[str, int]]:
        """The sentinel as stored now (None: gone) and the running totals: what the storage watch compares."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.get(self.k_sentinel)
            pipe.hmget(self.k_totals, TOTALS)
            sentinel, totals = pipe.execute()
        return (sentinel.decode() if sentinel else None), {k: int(v or 0) for k, v in zip(TOTALS, totals, strict=True)}

    def renew_sentinel(self) -> str:
        """After a wipe: a new sentinel (one process makes it; every other one reads the same value)."""
        self._sentinel = None
        return self.sentinel()

    def idem_claim(self, key: str, ttl: float, marker: str = "") -> str | None:
        if self.redis.set(self.k_idem + key, marker, nx=True, px=int(ttl * 1000)):
            return None
        answer = self.redis.get(self.k_idem + key)
        return answer.decode() if isinstance(answer, bytes) else (answer or "")

    def idem_store(self, key: str, answer: str, ttl: float) -> None:
        self.redis.set(self.k_idem + key, answer, px=int(ttl * 1000))

    def idem_release(self, key: str, marker: str = "") -> None:
        self.scripts.delete_if_equal(keys=[self.k_idem + key], args=[marker])

    def idem_forget(self, key: str, suffix: str) -> None:
        # Compare and delete in one step, so a token a peer has just stored is not dropped.
        self.scripts.delete_if_ends_with(keys=[self.k_idem + key], args=[" " + suffix])

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
        body, state, score, created = "", "", 0.0, 0.0
        if new is not None:
            body, state, score, created = new.to_json(), new.state, self._score(new), new.waiting_since
        keys = [*self._std, self.k_sub + current.submission_id]
        return bool(self.scripts.swap(keys=keys, args=[job_id, ",".join(states), body, state, score, created]))

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
        done = self.scripts.erase(keys=[self.k_jobs, self.k_sub + submission_id], args=args)
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

    def purge_audit(self, before: float) -> None:
        """Nothing to do: audit_add() trims the history to its last 10,000 actions as it writes."""

    def kv_add(self, key: str, value: str, ttl: float) -> str:
        held = self.scripts.set_unless_held(keys=[self.k_kv + key], args=[value, max(1, int(ttl * 1000))])
        return held.decode() if isinstance(held, bytes) else str(held)

    def kv_get(self, key: str) -> str | None:
        held = self.redis.get(self.k_kv + key)
        return held.decode() if isinstance(held, bytes) else held

    def kv_set(self, key: str, value: str, ttl: float) -> None:
        self.redis.set(self.k_kv + key, value, px=max(1, int(ttl * 1000)))

    def kv_delete(self, key: str, value: str) -> None:
        self.scripts.delete_if_equal(keys=[self.k_kv + key], args=[value])

    def close(self) -> None:
        self.closed = True  # the storage watch's thread ends with the store
        self.redis.close()

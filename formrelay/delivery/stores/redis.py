"""The Redis store: jobs shared by every host, each change one atomic step (a transaction or a Lua script)."""
from __future__ import annotations

import json
import time
from collections.abc import Collection, Iterator
from typing import Any

import redis

from formrelay.delivery.jobs import DEAD, DONE, INFLIGHT, PENDING, Job
from formrelay.delivery.stores.base import Stats, Store
from formrelay.delivery.stores.scripts import Scripts


class RedisStore(Store):
    """Jobs in Redis: a hash of bodies, sorted sets for due times, leases and dead letters; shared by every host."""

    def __init__(self, url: str, prefix: str = "formrelay") -> None:
        # Bounded waits: a Redis that hangs must turn into a clear 503 or a worker backoff, not a stuck thread.
        self.redis = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        self.k_due, self.k_inflight, self.k_jobs = f"{prefix}:q:due", f"{prefix}:q:inflight", f"{prefix}:q:jobs"
        self.k_dead, self.k_done, self.k_idem = f"{prefix}:q:dead", f"{prefix}:q:done", f"{prefix}:idem:"
        self.k_sub, self.k_audit, self.k_audit_new = f"{prefix}:q:sub:", f"{prefix}:audit", f"{prefix}:audit:new"
        self.k_kv = f"{prefix}:kv:"
        # Waiting jobs by creation time, and their sizes: stats and the queue cap never read a job body.
        self.k_waiting, self.k_sizes = f"{prefix}:q:waiting", f"{prefix}:q:sizes"
        self.scripts = Scripts(self.redis)

    def _save(self, pipe: Any, job: Job) -> None:
        body = job.to_json()
        pipe.hset(self.k_jobs, job.id, body)
        pipe.sadd(self.k_sub + job.submission_id, job.id)  # the jobs of one submission, erased together
        for key in (self.k_due, self.k_inflight, self.k_dead, self.k_done):
            pipe.zrem(key, job.id)
        if job.state in (PENDING, INFLIGHT):
            pipe.zadd(self.k_waiting, {job.id: job.waiting_since})
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
        return bool(self.scripts.add(keys=[self.k_jobs, keys[job.state], self.k_waiting, self.k_sizes,
                                           self.k_sub + job.submission_id],
                                     args=[job.id, body, score, job.waiting_since, len(body), waiting]))

    def claim(self, now: float, lease: float, limit: int) -> list[Job]:
        bodies = self.scripts.claim(keys=[self.k_due, self.k_inflight, self.k_jobs], args=[now, lease, limit])
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
        due, inflight, dead, oldest, size = self.scripts.stats(keys=[self.k_due, self.k_inflight, self.k_dead,
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
        body, index, score = "", 0, 0.0
        if new is not None:
            body = new.to_json()
            index = {PENDING: 2, INFLIGHT: 3, DEAD: 4, DONE: 5}[new.state]  # its sorted set among KEYS
            score = new.due_at if new.state == PENDING else (new.lease_until or time.time())
        keys = [self.k_jobs, self.k_due, self.k_inflight, self.k_dead, self.k_done, self.k_sub + current.submission_id,
                self.k_waiting, self.k_sizes]
        waiting = 1 if new is not None and new.state in (PENDING, INFLIGHT) else 0
        created = new.waiting_since if new is not None else 0.0
        return bool(self.scripts.swap(keys=keys, args=[job_id, ",".join(states), body, index, score, created, waiting]))

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
        self.redis.close()


# Replace or delete one job if its state is one of ARGV[2] (comma-separated), keeping every index in step.

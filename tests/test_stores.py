"""The stores (SQLite and Redis) behind one interface: claims and leases, state changes, idempotency records,
housekeeping, and the Redis Lua run by SHA."""
from __future__ import annotations

import threading
import time

import pytest

from formrelay.delivery.jobs import DEAD, DONE, INFLIGHT, PENDING, Job
from formrelay.delivery.stores import SQLiteStore
from formrelay.delivery.stores.redis import RedisStore


def job(job_id: str = "j1", due: float = 0.0) -> Job:
    return Job(id=job_id, form="join", target="primary", submission={"values": {}}, created_at=1.0, due_at=due)


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        yield SQLiteStore(str(tmp_path / "q.sqlite3"))
    else:
        url = request.getfixturevalue("redis_url")
        yield RedisStore(url)


# -- stores --------------------------------------------------------------------------------------------

def test_claim_takes_only_due_jobs_and_leases_them(store):
    store.put(job("due", due=10))
    store.put(job("later", due=100))
    (claimed,) = store.claim(now=50, lease=30, limit=10)
    assert claimed.id == "due" and claimed.state == INFLIGHT and claimed.attempts == 1 and not claimed.uncertain
    assert store.claim(now=60, lease=30, limit=10) == []  # leased: nobody else gets it


def test_an_expired_lease_comes_back_marked_uncertain(store):
    store.put(job("cut", due=0))
    store.claim(now=10, lease=5, limit=1)
    (again,) = store.claim(now=16, lease=5, limit=1)
    assert again.id == "cut" and again.uncertain and again.attempts == 2


def test_finish_reschedule_bury_retry_drop_and_stats(store):
    for i in range(3):
        store.put(job(f"j{i}", due=0))
    a, b, c = store.claim(now=10, lease=60, limit=3)
    store.finish(a, "delivered")
    store.reschedule(b, due_at=500, error="ngp: HTTP 503")
    store.bury(c, "refused")
    assert {j.id: j.state for j in store.jobs()} == {"j0": DONE, "j1": PENDING, "j2": DEAD}
    assert store.get("j1").last_error == "ngp: HTTP 503"
    stats = store.stats(now=100)
    assert (stats.depth, stats.dead) == (1, 1) and stats.oldest_age == pytest.approx(99)
    assert store.retry("j2", now=20) and store.get("j2").state == PENDING
    assert [j.id for j in store.claim(now=21, lease=5, limit=5)] == ["j2"]
    assert store.drop("j1") and store.get("j1") is None and not store.drop("j1")


def test_claims_from_many_threads_never_hand_out_a_job_twice(store):
    for i in range(60):
        store.put(job(f"j{i}", due=0))
    taken: list[str] = []
    lock = threading.Lock()

    def claim_all():
        while batch := store.claim(now=time.time(), lease=60, limit=3):
            with lock:
                taken.extend(j.id for j in batch)

    threads = [threading.Thread(target=claim_all) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted(f"j{i}" for i in range(60))


def test_idempotency_records(store):
    assert store.idem_claim("k", ttl=60) is None
    assert store.idem_claim("k", ttl=60) == ""  # in flight
    store.idem_store("k", '{"status": "delivered"}', ttl=60)
    assert store.idem_claim("k", ttl=60) == '{"status": "delivered"}'
    assert store.idem_claim("other", ttl=60) is None
    store.idem_release("other")
    assert store.idem_claim("other", ttl=60) is None


def test_workers_opening_a_new_store_at_once_all_succeed(tmp_path):
    """gunicorn starts its workers together: each opens the same new SQLite file; none may fail."""
    failures = []
    for trial in range(20):
        path = str(tmp_path / f"q{trial}.sqlite3")

        def open_and_use(path=path):
            try:
                SQLiteStore(path).idem_claim("k", 10)
            except Exception as exc:
                failures.append(repr(exc))

        threads = [threading.Thread(target=open_and_use) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []


# -- housekeeping, part of every store's interface ------------------------------------------------------

def test_purge_done_drops_only_delivered_jobs_finished_before_the_cut(store):
    for name in ("old", "new", "waiting"):
        store.put(job(name))
    claimed = {j.id: j for j in store.claim(now=10, lease=60, limit=3)}
    store.finish(claimed["old"], "delivered")
    cut = time.time()
    time.sleep(0.01)
    store.finish(claimed["new"], "delivered")
    store.purge_done(cut)
    assert store.get("old") is None
    assert store.get("new").state == DONE and store.get("waiting").state == INFLIGHT


def test_purge_audit_never_drops_an_action_no_server_has_logged(store):
    store.audit_add([{"action": "drop", "job_id": "j1", "at": 1.0}])
    store.purge_audit(time.time())
    assert [e["job_id"] for e in store.audit_take()] == ["j1"]  # still handed to a server to log, once
    store.purge_audit(time.time())
    recent = [e["job_id"] for e in store.audit_recent()]
    # SQLite deletes what was logged and is old; Redis keeps its trimmed history (the last 10,000 actions).
    assert recent == ([] if isinstance(store, SQLiteStore) else ["j1"])


def test_sqlite_has_nothing_to_rewrite_after_forget(tmp_path):
    assert SQLiteStore(str(tmp_path / "q.sqlite3")).rewrite_persistence() is None


def test_redis_rewrites_its_append_only_file_after_forget(redis_url):
    store = RedisStore(redis_url)
    assert store.rewrite_persistence() is None  # the test server keeps nothing on disk
    store.redis.config_set("appendonly", "yes")  # Redis writes its first append-only file now, in the background
    deadline = time.monotonic() + 10
    while (info := store.redis.info("persistence"))["aof_rewrite_in_progress"] or not info["aof_enabled"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    note = store.rewrite_persistence()
    assert note is not None and "append-only file is being rewritten" in note


# -- Redis: every script registered once, called by SHA --------------------------------------------------

def test_redis_runs_its_scripts_by_sha_and_reloads_them_after_a_flush(redis_url):
    store = RedisStore(redis_url)

    def exercise(tag: str) -> None:
        """Every operation that runs a script, each of the eight scripts at least once: 12 script calls."""
        assert store.add(job(tag)) and not store.add(job(tag))
        (claimed,) = store.claim(now=10, lease=60, limit=5)
        assert store.swap(tag, (INFLIGHT,), claimed) and store.stats(now=20).depth == 1
        store.finish(claimed, "delivered")
        assert store.erase_submission(tag) == [tag] and store.swap(tag, (DONE,), None)
        assert store.idem_claim(f"k{tag}", ttl=60) is None
        store.idem_release(f"k{tag}")
        store.idem_store(f"t{tag}", "answer token", ttl=60)
        store.idem_forget(f"t{tag}", "token")
        assert store.kv_add(tag, "first", ttl=60) == "first" and store.kv_add(tag, "second", ttl=60) == "first"
        store.kv_delete(tag, "first")
        assert store.kv_get(tag) is None
        assert store.idem_claim(f"k{tag}", ttl=60) is None and store.idem_claim(f"t{tag}", ttl=60) is None

    exercise("a")
    store.redis.script_flush()  # as after a restart: the server has forgotten every script
    store.redis.config_resetstat()
    exercise("b")
    calls = store.redis.info("commandstats")
    assert "cmdstat_eval" not in calls, "a script's text was sent with EVAL"
    # After the flush each script answered NOSCRIPT once and was loaded again, once: its text never per call.
    assert calls["cmdstat_script|load"]["calls"] == 8
    evalsha = calls["cmdstat_evalsha"]
    assert evalsha["calls"] - evalsha.get("failed_calls", 0) == 12


# -- running totals, ordered claims, listing inside the store (issue 32) --------------------------------------

def _counted(store, now):
    """What stats() says, against a count of every job (the slow way the totals replace)."""
    jobs = list(store.scan())
    waiting = [j for j in jobs if j.state in (PENDING, INFLIGHT)]
    stats = store.stats(now)
    return (stats.depth, stats.inflight, stats.dead), (len(waiting), sum(j.state == INFLIGHT for j in jobs),
                                                       sum(j.state == DEAD for j in jobs))


def test_running_totals_follow_every_kind_of_change(store):
    for i in range(12):
        store.put(Job(id=f"t{i}", form="f", target="primary", submission={"id": f"t{i}", "values": {"x": "y" * i}},
                      created_at=i, due_at=i))
    assert store.add(Job(id="t0-extra", form="f", target="x", submission={"id": "t0"}, created_at=0.5, due_at=0))
    assert not store.add(Job(id="t0-extra", form="f", target="x", submission={"id": "t0"}, created_at=0.5, due_at=0))
    claimed = store.claim(now=100, lease=10, limit=5)
    store.finish(claimed[0], "delivered")
    store.reschedule(claimed[1], 200, "later")
    store.bury(claimed[2], "no")
    assert store.drop("t11") and not store.drop("t11")
    store.put(claimed[3])  # a job written again as it is
    store.claim(now=500, lease=10, limit=3)  # expired leases come back (their size changes with the body)
    store.retry(claimed[2].id, 600)
    store.purge_done(before=time.time() + 1)
    shown, counted = _counted(store, 1000)
    assert shown == counted and counted[0] == 11
    stats = store.stats(1000)
    sizes = sum(len(j.to_json()) for j in store.scan() if j.state in (PENDING, INFLIGHT))
    assert abs(stats.bytes - sizes) <= 40 * stats.depth  # Redis's Lua re-encodes claimed bodies (float digits)
    oldest = min(j.created_at for j in store.scan() if j.state in (PENDING, INFLIGHT))
    assert stats.bytes > 0 and stats.oldest_age == pytest.approx(1000 - oldest)


def test_claims_take_expired_leases_first_then_due_jobs_in_due_order(store):
    for i, due in enumerate([30, 10, 20, 999]):
        store.put(Job(id=f"d{i}", form="f", target="primary", submission={}, created_at=0, due_at=due))
    (leased,) = store.claim(now=15, lease=5, limit=1)
    assert leased.id == "d1"
    taken = store.claim(now=40, lease=5, limit=3)
    assert [j.id for j in taken] == ["d1", "d2", "d0"] and taken[0].uncertain and not taken[1].uncertain


def test_listing_filters_and_limits_inside_the_store(store):
    for i in range(30):
        job = Job(id=f"l{i:02}", form="a" if i % 3 else "b", target="primary", submission={"id": f"l{i:02}"},
                  created_at=1000 + i, due_at=10**10)
        if i % 10 == 0:
            job.state = DEAD
        store.put(job)
    listed = store.listing([PENDING, DEAD], {"b"}, None, None, 4)
    assert [j.id for j in listed] == ["l03", "l06", "l09", "l12", "l00"]
    aged = store.listing([PENDING], None, 1010, 1015, 100)
    assert [j.id for j in aged] == ["l11", "l12", "l13", "l14", "l15"]
    assert store.listing([DONE], None, None, None, 5) == []


def test_sqlite_group_commit_keeps_every_change_and_isolates_a_failing_one(tmp_path):
    import sqlite3

    store = SQLiteStore(str(tmp_path / "q.sqlite3"))
    errors: list[BaseException] = []

    def adder(n: int) -> None:
        try:
            for i in range(40):
                assert store.add(job(f"g{n}-{i}", due=10**10))
                if i % 10 == 0:
                    with pytest.raises(sqlite3.OperationalError):
                        store._grouped(lambda db: db.execute("INSERT INTO no_such_table VALUES (1)"))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=adder, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert store.stats(now=0).depth == 12 * 40 == len(list(store.scan()))
    reopened = SQLiteStore(str(tmp_path / "q.sqlite3"))  # on disk, seen by another connection
    assert reopened.stats(now=0).depth == 480


def test_listing_finds_jobs_in_flight(store):
    for i in range(5):
        store.put(Job(id=f"f{i}", form="a", target="primary", submission={"id": f"f{i}"}, created_at=i, due_at=i))
    (taken,) = store.claim(now=100, lease=5, limit=1)
    assert [j.id for j in store.listing([INFLIGHT], None, None, None, 5)] == [taken.id] == ["f0"]
    assert [j.id for j in store.listing([PENDING], {"a"}, None, None, 2)] == ["f1", "f2"]

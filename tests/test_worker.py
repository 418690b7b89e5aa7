"""The worker alone: a store and a handler (no relay), its chores, and a handler's bug that must not stop it.

Stopping, lease hand-back and storage outages: tests/test_worker_lifecycle.py.
"""
from __future__ import annotations

import logging
import time

from formrelay.delivery.jobs import DONE, INFLIGHT, Job, new_job
from formrelay.delivery.settings import QueueSettings
from formrelay.delivery.stores import SQLiteStore
from formrelay.delivery.worker import Worker
from formrelay.forms.submission import Submission

SETTINGS = QueueSettings(poll_interval=0.01, workers=2)


def put(store: SQLiteStore, n: int) -> list[str]:
    jobs = [new_job("join", "primary", Submission(form="join", values={"n": i})) for i in range(n)]
    for job in jobs:
        store.put(job)
    return [job.id for job in jobs]


def test_the_handler_is_given_each_due_job_once_leased(tmp_path):
    store = SQLiteStore(str(tmp_path / "q.sqlite3"))
    ids = put(store, 3)
    handled: list[Job] = []
    worker = Worker(store, handled.append, SETTINGS)
    assert worker.threads == 2  # [queue] workers, unless told
    assert worker.run_once(limit=10) == 3 and worker.run_once(limit=10) == 0
    assert sorted(j.id for j in handled) == sorted(ids)
    # What a delivery means is the handler's: this one recorded nothing, so the jobs stay leased.
    assert all(j.state == INFLIGHT and j.lease_until and j.attempts == 1 for j in handled)
    assert {store.get(i).state for i in ids} == {INFLIGHT}  # type: ignore[union-attr]


def test_threads_deliver_through_the_handler(tmp_path):
    store = SQLiteStore(str(tmp_path / "q.sqlite3"))
    ids = put(store, 20)
    worker = Worker(store, lambda job: store.finish(job, "delivered"), SETTINGS, threads=3).start()
    deadline = time.monotonic() + 10
    while any(store.get(i).state != DONE for i in ids):  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "not delivered"
        time.sleep(0.02)
    worker.stop()


def test_chores_log_operator_actions_each_second_scrub_and_leave_the_first_sweep_for_later(tmp_path):
    store = SQLiteStore(str(tmp_path / "q.sqlite3"))
    (only,) = put(store, 1)
    assert store.drop(only) and store.scrub_pending  # a deletion not yet final in the write-ahead log
    logged, swept = [], []
    worker = Worker(store, lambda job: None, SETTINGS, log_actions=lambda: logged.append(1),
                    sweep=lambda: swept.append(1))
    worker.chores()
    worker.chores()  # within the same second: nothing again
    assert logged == [1] and not store.scrub_pending
    assert swept == []  # the first sweep comes 30 s after start, not with every worker's boot


def test_a_bug_in_the_handler_is_logged_and_the_worker_carries_on(tmp_path, caplog):
    store = SQLiteStore(str(tmp_path / "q.sqlite3"))
    first, second = put(store, 2)

    def handle(job: Job) -> None:
        if job.id == first:
            raise ValueError("a bug")
        store.finish(job, "delivered")

    worker = Worker(store, handle, SETTINGS, threads=1)
    with caplog.at_level(logging.ERROR, logger="formrelay"):
        worker.start()
        deadline = time.monotonic() + 10
        while store.get(second).state != DONE or "carrying on" not in caplog.text:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the worker stopped at the bug"
            time.sleep(0.02)
        worker.stop()
    assert "unexpected error; carrying on" in caplog.text
    assert store.get(first).state == INFLIGHT  # type: ignore[union-attr]  # its lease expires; a later claim decides

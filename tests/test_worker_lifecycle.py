"""The queue worker's lifecycle: leases handed back at stop, results kept through a storage outage, one log line."""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from typing import Any

from formrelay.delivery.jobs import DONE, INFLIGHT, PENDING, new_job
from formrelay.delivery.settings import QueueSettings
from formrelay.delivery.stores import SQLiteStore
from formrelay.delivery.worker import Worker
from formrelay.forms.submission import Submission


SETTINGS = QueueSettings(poll_interval=0.01, workers=1)


class Delivery:
    """A worker's handler: work(job) waits to be released, then finishes the job in the store."""

    def __init__(self, store: Any, block: threading.Event | None = None) -> None:
        self.store = store
        self.block = block
        self.started = threading.Event()

    def work(self, job: Any) -> None:
        self.started.set()
        if self.block is not None:
            self.block.wait(10)
        self.store.finish(job, "delivered")


def put(store: Any, n: int) -> list[str]:
    ids = []
    for i in range(n):
        job = new_job("join", "primary", Submission(form="join", values={"n": i}, context={}))
        store.put(job)
        ids.append(job.id)
    return ids


def test_stop_hands_back_a_delivery_cut_off_and_the_jobs_not_yet_tried(tmp_path):
    store = SQLiteStore(str(tmp_path / "q.sqlite3"))
    first, second, third = put(store, 3)
    block = threading.Event()
    delivery = Delivery(store, block)
    worker = Worker(store, delivery.work, SETTINGS, threads=1)
    # One batch of three: the first blocks mid-delivery, the other two wait their turn.
    thread = threading.Thread(target=worker.run_once, kwargs={"limit": 3}, daemon=True)
    thread.start()
    assert delivery.started.wait(5)
    worker.stop(timeout=0.3)
    now = time.time()
    cut_off = store.get(first)
    assert cut_off is not None and cut_off.state == INFLIGHT and cut_off.lease_until <= now  # type: ignore[operator]
    for job_id in (second, third):
        untried = store.get(job_id)
        assert untried is not None and untried.state == PENDING and untried.due_at <= now and untried.attempts == 0
    # The next claim takes all three at once, the cut-off one marked uncertain, none waiting for its lease.
    claimed = {job.id: job for job in store.claim(time.time(), 120, 10)}
    assert set(claimed) == {first, second, third}
    assert claimed[first].uncertain and not claimed[second].uncertain
    block.set()
    thread.join(5)


def test_stop_waits_for_a_delivery_that_finishes_in_time(tmp_path):
    store = SQLiteStore(str(tmp_path / "q.sqlite3"))
    (only,) = put(store, 1)
    block = threading.Event()
    delivery = Delivery(store, block)
    worker = Worker(store, delivery.work, SETTINGS, threads=1).start()
    assert delivery.started.wait(5)
    threading.Timer(0.2, block.set).start()
    worker.stop(timeout=5)
    done = store.get(only)
    assert done is not None and done.state == DONE


class FlakyStore(SQLiteStore):
    """A store whose every statement fails while `down` is set, like Redis stopped (after a method's own work)."""

    down = False

    def _db(self) -> Any:
        if self.down:
            raise sqlite3.OperationalError("unable to open database file")
        return super()._db()


def test_a_result_written_while_the_storage_is_away_is_written_when_it_returns(tmp_path, caplog):
    store = FlakyStore(str(tmp_path / "q.sqlite3"))
    inner = SQLiteStore(str(tmp_path / "q.sqlite3"))  # the test's own view of the file
    (only,) = put(inner, 1)

    class GoesDownMidDelivery(Delivery):
        def work(self, job: Any) -> None:
            store.down = True  # the delivery worked, but the storage went away before its result was written
            self.store.finish(job, "delivered")

    worker = Worker(store, GoesDownMidDelivery(store).work, SETTINGS, threads=1)
    with caplog.at_level(logging.INFO, logger="formrelay"):
        worker.start()
        time.sleep(0.5)  # many polls while it is down
        assert inner.get(only).state == INFLIGHT  # type: ignore[union-attr]
        store.down = False
        deadline = time.monotonic() + 10
        while inner.get(only).state != DONE:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the result was never written"
            time.sleep(0.05)
        worker.stop()
    lost = [r for r in caplog.records if "queue storage is unavailable" in r.getMessage()]
    back = [r for r in caplog.records if "queue storage is back" in r.getMessage()]
    assert len(lost) == 1 and len(back) == 1
    assert not any(r.exc_info for r in caplog.records), "no traceback per poll"


def test_during_a_storage_outage_the_polls_slow_down_to_backoff_cap_at_most(tmp_path):
    """The worker polls an unavailable storage less and less often: doubling up to 10 s, or up to backoff_cap when
    that is shorter, so that it finds the storage back no later than a job would be retried."""
    polls: list[float] = []

    class DownStore(SQLiteStore):
        def claim(self, *args: Any, **kwargs: Any) -> Any:
            polls.append(time.monotonic())
            raise sqlite3.OperationalError("unable to open database file")

    def gaps(settings: QueueSettings) -> list[float]:
        polls.clear()
        worker = Worker(DownStore(str(tmp_path / f"q{settings.backoff_cap}.sqlite3")), Delivery(None).work,
                        settings, threads=1).start()
        time.sleep(1.6)
        worker.stop()
        return [b - a for a, b in zip(polls, polls[1:])]

    capped = gaps(QueueSettings(poll_interval=0.05, workers=1, backoff_cap=0.2))
    assert len(capped) >= 5 and max(capped) < 0.45, capped  # 0.1, 0.2, 0.2, ... (a loaded machine adds a little)
    doubling = gaps(QueueSettings(poll_interval=0.05, workers=1))  # backoff_cap 3600: the 10 s ceiling applies
    assert max(doubling) >= 0.75, doubling  # 0.1, 0.2, 0.4, 0.8: slower and slower

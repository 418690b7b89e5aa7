"""delivery/idempotency.py on a real SQLite store: first answers repeated, another body 422, in flight 409."""
from __future__ import annotations

import json
import threading

import pytest

from formrelay.core.errors import TryLater
from formrelay.core.outcome import Outcome
from formrelay.delivery.capacity import Outbox
from formrelay.delivery.idempotency import Idempotency, fingerprint, read_record, record_key
from formrelay.delivery.settings import QueueSettings
from formrelay.forms.submission import Submission


@pytest.fixture
def outbox(tmp_path):
    box = Outbox(QueueSettings(path=str(tmp_path / "q.sqlite3")), None, "<mapping>")
    yield box
    box.close()


def sub(key: str | None = "k-1", **values: str) -> Submission:
    return Submission(form="join", values=values or {"email": "ann@example.org"}, idempotency_key=key)


class Deliveries:
    """Counts how often the delivery really ran, answering `answer` (or raising it)."""

    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.calls = 0

    def __call__(self) -> Outcome:
        self.calls += 1
        if isinstance(self.answer, BaseException):
            raise self.answer
        assert isinstance(self.answer, Outcome)
        return self.answer


def test_a_repeat_gets_the_first_answer_without_a_second_delivery(outbox):
    idem = Idempotency(outbox, 60, answer_within=0.1)
    deliver = Deliveries(Outcome("delivered", message="Thanks"))
    first = idem.submit("join", sub(), deliver)
    again = idem.submit("join", sub(), deliver)
    assert deliver.calls == 1 and first.detail == {}
    assert (again.status, again.message, again.detail) == ("delivered", "Thanks", {"repeat": "first answer"})


def test_the_same_key_with_another_body_is_a_422_and_nothing_is_sent(outbox):
    idem = Idempotency(outbox, 60, answer_within=0.1)
    deliver = Deliveries(Outcome("queued"))
    idem.submit("join", sub(), deliver)
    other = idem.submit("join", sub(email="bea@example.org"), deliver)
    assert deliver.calls == 1
    assert other.status == "invalid" and "_idempotency_key" in (other.errors or {})
    assert other.detail == {"repeat": "another body"}


def test_a_repeat_while_the_first_is_in_flight_gets_a_409_after_the_deadline(outbox):
    idem = Idempotency(outbox, 60, answer_within=0.05)
    started, release = threading.Event(), threading.Event()

    def slow() -> Outcome:
        started.set()
        release.wait(5)
        return Outcome("delivered")

    first = threading.Thread(target=idem.submit, args=("join", sub(), slow))
    first.start()
    started.wait(5)
    repeat = idem.submit("join", sub(), Deliveries(Outcome("delivered")))
    release.set()
    first.join(5)
    assert repeat.status == "conflict" and repeat.retry_after == 1 and repeat.detail == {"repeat": "in progress"}


@pytest.mark.parametrize("answer", [Outcome("unavailable", retry_after=30), Outcome("invalid"), TryLater("boom")])
def test_an_answer_the_supporter_may_fix_or_a_failure_frees_the_key(outbox, answer):
    idem = Idempotency(outbox, 60, answer_within=0.1)
    failing = Deliveries(answer)
    if isinstance(answer, BaseException):
        with pytest.raises(TryLater):
            idem.submit("join", sub(), failing)
    else:
        idem.submit("join", sub(), failing)
    working = Deliveries(Outcome("delivered"))
    assert idem.submit("join", sub(), working).status == "delivered" and working.calls == 1


def test_without_a_key_every_submission_is_delivered(outbox):
    idem = Idempotency(outbox, 60, answer_within=0.1)
    deliver = Deliveries(Outcome("delivered"))
    idem.submit("join", sub(None), deliver)
    idem.submit("join", sub(None), deliver)
    assert deliver.calls == 2 and record_key("join", sub(None)) is None


def test_the_store_holds_neither_the_key_nor_a_plain_fingerprint(outbox):
    idem = Idempotency(outbox, 60, answer_within=0.1)
    idem.submit("join", sub("secret-key-1"), Deliveries(Outcome("delivered")))
    key = record_key("join", sub("secret-key-1"))
    assert key is not None and "secret-key-1" not in key and key.startswith("join:")
    # the fingerprint is keyed with the idempotency key: the same values under another key look different
    assert fingerprint(sub("secret-key-1")) != fingerprint(sub("secret-key-2"))
    assert fingerprint(sub("k", email="a@x.org")) == fingerprint(sub("k", email="a@x.org"))


def test_older_and_broken_records_are_read_safely():
    assert read_record("") == {} and read_record("not json") == {} and read_record("[1]") == {}
    assert read_record(json.dumps({"status": "delivered"})) == {"answer": {"status": "delivered"}}
    assert read_record(json.dumps({"fp": "x"})) == {"fp": "x"}

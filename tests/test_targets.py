"""delivery/targets.py: the registry of job target kinds, and the worker-side handler that asks it."""
from __future__ import annotations

import time

import pytest

from formrelay import create_app
from formrelay.core.errors import TryLater
from formrelay.core.outcome import Outcome
from formrelay.delivery import targets
from formrelay.delivery.jobs import DEAD, DONE, PENDING, new_job
from formrelay.delivery.targets import DeadLetter, Kind, register
from formrelay.forms.submission import Submission
from tests.conftest import NGP_FORM_URL, NGP_SUCCESS, base_config

VALID = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009"}


@pytest.fixture
def registry(monkeypatch):
    """The registry as shipped; kinds a test registers are gone afterwards."""
    monkeypatch.setattr(targets, "_KINDS", targets.registered())


def make_app(tmp_path):
    raw = base_config(breaker_failures=1, breaker_reset=60)
    raw["queue"] = {"path": str(tmp_path / "q.sqlite3"), "backoff_base": 0.01, "backoff_cap": 0.02}
    return create_app(raw)


def run_worker(relay, rounds: int = 5) -> None:
    worker = relay.worker()
    for _ in range(rounds):
        time.sleep(0.03)
        worker.run_once(limit=20)


class Ledger(Kind):
    """A kind a test adds: once the submission's own provider has it, one `ledger:` job writes it down."""

    order = 50
    seen: list[dict] = []
    answer: object = Outcome("delivered")
    hold = False
    guarded = False

    def owns(self, target: str) -> bool:
        return target.startswith("ledger:")

    def delivered(self, form, submission: Submission) -> None:
        self.site.outbox.store.add(new_job(form.slug, "ledger:main", submission))

    def attempt(self, form, job, submission: Submission) -> Outcome:
        if isinstance(self.answer, BaseException):
            raise self.answer
        type(self).seen.append(dict(submission.values))
        return self.answer  # type: ignore[return-value]

    def rule(self, form, target: str) -> str:
        return "hold" if self.hold else "retry"

    def guard(self, form, target: str):
        return self.site.guards.get(form.config.provider) if self.guarded else None


@pytest.fixture
def ledger(registry):
    Ledger.seen, Ledger.answer, Ledger.hold, Ledger.guarded = [], Outcome("delivered"), False, False
    register(Ledger)
    return Ledger


def test_the_shipped_kinds_register_in_the_order_their_jobs_are_made():
    names = [kind.__name__ for kind in targets.registered()]
    assert names[:4] == ["Primary", "Followup", "Also", "Webhook"]
    assert [kind.own for kind in targets.registered()].count(True) == 1


def test_a_registered_kind_gets_its_jobs_made_and_delivered_without_touching_the_relay(tmp_path, mocked, ledger):
    mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    app = make_app(tmp_path)
    relay = app.extensions["formrelay"]
    try:
        assert app.test_client().post("/v1/forms/join", json=VALID).status_code == 200
        jobs = {job.target: job for job in relay.store.jobs()}
        assert "ledger:main" in jobs
        run_worker(relay)
        assert relay.store.get(jobs["ledger:main"].id).state == DONE
        assert [values["EmailAddress"] for values in ledger.seen] == ["ann@example.org"]
        assert relay.rule(relay.form("join"), "ledger:main") == "retry"
    finally:
        relay.close()


def test_a_job_no_kind_owns_is_kept_and_backed_off_like_any_failure(tmp_path, mocked, registry):
    app = make_app(tmp_path)
    relay = app.extensions["formrelay"]
    try:
        job = new_job("join", "carrier-pigeon", Submission(form="join", values={"EmailAddress": "a@b.org"}))
        relay.store.put(job)
        run_worker(relay, rounds=1)
        kept = relay.store.get(job.id)
        assert kept.state == PENDING and kept.attempts == 1 and "ValueError" in (kept.last_error or "")
    finally:
        relay.close()


def test_the_handler_follows_the_kinds_breaker_rule_and_dead_letters(tmp_path, mocked, ledger):
    app = make_app(tmp_path)
    relay = app.extensions["formrelay"]
    submission = Submission(form="join", values={"EmailAddress": "a@b.org"})
    try:
        # the kind's breaker is open: not tried, not counted
        ledger.guarded = True
        relay.guards["ngp"].breaker.failed("down")
        relay.store.put(first := new_job("join", "ledger:one", submission))
        run_worker(relay, rounds=1)
        waiting = relay.store.get(first.id)
        assert waiting.state == PENDING and waiting.attempts == 0 and "circuit breaker open" in waiting.last_error
        assert ledger.seen == []
        # an attempt that may have arrived, for a kind that holds such: set aside, never tried again
        ledger.guarded, ledger.hold = False, True
        relay.store.drop(first.id)
        second = new_job("join", "ledger:two", submission)
        second.uncertain = True
        relay.store.put(second)
        run_worker(relay, rounds=1)
        assert relay.store.get(second.id).state == DEAD and ledger.seen == []
        # a kind that says "never as it stands": a dead letter with its reason
        ledger.hold, ledger.answer = False, DeadLetter("the ledger is closed")
        relay.store.put(third := new_job("join", "ledger:three", submission))
        run_worker(relay, rounds=1)
        dead = relay.store.get(third.id)
        assert dead.state == DEAD and "the ledger is closed" in (dead.last_error or "")
        # "not now": backed off, tried again later
        ledger.answer = TryLater("busy")
        relay.store.put(fourth := new_job("join", "ledger:four", submission))
        run_worker(relay, rounds=1)
        assert relay.store.get(fourth.id).state == PENDING and relay.store.get(fourth.id).last_error == "busy"
    finally:
        relay.close()

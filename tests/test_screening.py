"""delivery/screening.py: origin, traps and the answers a caught bot gets, on a real SQLite store."""
from __future__ import annotations

import time

import pytest

from formrelay import create_app
from formrelay.core.errors import Forbidden
from formrelay.core.outcome import Outcome
from formrelay.delivery.attempts import guards_for
from formrelay.delivery.screening import Screening
from formrelay.forms.submission import Submission
from tests.conftest import base_config


@pytest.fixture
def relay(tmp_path, mocked):
    raw = base_config()
    raw["queue"] = {"path": str(tmp_path / "q.sqlite3")}
    app = create_app(raw)
    relay = app.extensions["formrelay"]
    yield relay
    relay.close()


def sub(key: str) -> Submission:
    return Submission(form="join", values={"email": "ann@example.org"}, idempotency_key=key)


def token(relay) -> str:
    return relay.time_trap.issue("join", now=time.time() - 30)  # opened half a minute ago


def test_a_post_from_a_site_the_form_does_not_allow_is_a_403(relay):
    form = relay.form("join")
    with pytest.raises(Forbidden):
        relay.screening.check_origin(form, "https://elsewhere.example", None, "https://relay.example/")
    relay.screening.check_origin(form, "https://www.example.org", None, "https://relay.example/")


def test_a_filled_honeypot_gets_the_answer_a_person_got_last_and_nothing_is_sent(relay):
    form = relay.form("join")
    relay.screening.remember_answer(form, Outcome("delivered", message="Thank you!", redirect="https://x.example/t"))
    answer = relay.screening.screen(form, {"_hp": "I am a bot"}, "203.0.113.5")
    assert answer is not None and answer.detail == {"caught": True}
    assert (answer.status, answer.message, answer.redirect) == ("delivered", "Thank you!", "https://x.example/t")


def test_another_worker_sharing_the_store_gives_the_same_answer(relay):
    form = relay.form("join")
    relay.screening.remember_answer(form, Outcome("delivered", redirect="https://x.example/shared"))
    form.last_answer = None  # the other process has not seen a person yet
    other = Screening(relay.config, relay.outbox, {})
    assert other.bot_answer(form).redirect == "https://x.example/shared"


def test_while_the_crms_breaker_is_open_a_bot_is_told_queued_as_a_person_would_be(relay):
    form = relay.form("join")
    guards = guards_for(["ngp"], relay.config.relay, 1.0)
    for _ in range(relay.config.relay.breaker_failures):
        guards["ngp"].breaker.failed("down")
    answer = Screening(relay.config, relay.outbox, guards).bot_answer(form)
    assert answer.status == "queued" and answer.detail == {"caught": True} and answer.message


def test_a_time_trap_token_serves_one_submission_and_its_retries_only(relay):
    form = relay.form("join")
    started = token(relay)
    assert relay.screening.screen(form, {"_started": started}, None, sub("first")) is None
    assert relay.screening.screen(form, {"_started": started}, None, sub("first")) is None  # the same, again
    replay = relay.screening.screen(form, {"_started": started}, None, sub("second"))
    assert replay is not None and replay.detail == {"caught": True}


def test_a_submission_sent_too_fast_is_asked_to_wait(relay):
    form = relay.form("join")
    fast = relay.screening.screen(form, {"_started": relay.time_trap.issue("join")}, None, sub("a"))
    assert fast is not None and fast.status == "rate_limited" and fast.retry_after >= 1
    assert "caught" not in fast.detail  # a person the traps cannot vouch for is told, never dropped


def test_a_submission_that_does_not_go_through_frees_its_token_for_the_next_try(relay):
    form = relay.form("join")
    started = token(relay)
    body = {"_started": started}
    assert relay.screening.screen(form, body, None, sub("one")) is None
    answer = relay.screening.accept(form, body, sub("one"), lambda f, s: Outcome("unavailable", retry_after=30))
    assert answer.status == "unavailable"
    assert relay.screening.screen(form, body, None, sub("two")) is None  # freed: the person sends again
    relay.screening.accept(form, body, sub("two"), lambda f, s: Outcome("delivered"))
    assert relay.screening.screen(form, body, None, sub("three")) is not None  # used for good now

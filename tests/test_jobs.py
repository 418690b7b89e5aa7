"""Jobs without a store: their ids, how a submission is kept in them and read back, what is shown, backoff."""
from __future__ import annotations

import datetime as dt
import decimal

from formrelay.delivery.jobs import DONE, PENDING, Job, backoff, new_job, restore_submission, serialise_submission
from formrelay.delivery.settings import QueueSettings
from formrelay.forms.submission import Submission


def submission() -> Submission:
    return Submission(form="join", values={"EmailAddress": "ann@example.org", "Born": dt.date(1990, 5, 1),
                                           "Amount": decimal.Decimal("12.50"), "Topics": ("a", "b")},
                      context={"referrer": "https://example.org/"}, idempotency_key="k1", locale="fr",
                      page_options={"add_tags": ["x"]})


def test_a_submission_survives_the_trip_through_a_stored_job():
    original = submission()
    job = Job.from_json(new_job("join", "primary", original).to_json())
    back = restore_submission(job.submission)
    assert back.values == {"EmailAddress": "ann@example.org", "Born": "1990-05-01", "Amount": "12.50",
                           "Topics": ["a", "b"]}  # JSON's own types: dates and decimals as text
    assert (back.id, back.form, back.received_at, back.locale) == (original.id, "join", original.received_at, "fr")
    assert back.context == original.context and back.page_options == {"add_tags": ["x"]}
    assert back.idempotency_key == "k1" and serialise_submission(back) == job.submission


def test_ids_are_stable_per_submission_and_target():
    original = submission()
    primary, followup = new_job("join", "primary", original), new_job("join", "followup", original)
    assert primary.id == original.id and followup.id == f"{original.id}-followup"
    assert primary.submission_id == followup.submission_id == original.id
    assert primary.state == PENDING and primary.due_at == primary.created_at and primary.attempts == 0
    later = new_job("join", "webhook:crm", original, due_at=primary.created_at + 60, detail={"event": "queued"})
    assert later.due_at == primary.created_at + 60 and later.detail == {"event": "queued"}


def test_the_summary_shows_field_names_and_values_only_when_asked():
    job = new_job("join", "primary", submission())
    assert "submission" not in job.summary() and job.summary()["fields"] == ["Amount", "Born", "EmailAddress",
                                                                              "Topics"]
    assert job.summary(show_data=True)["submission"]["values"]["EmailAddress"] == "ann@example.org"
    job.state, job.last_error = DONE, "ngp: HTTP 503"
    assert job.summary()["last_error"] is None and job.summary()["due"] is None  # overcome, not its state


def test_without_personal_data_keeps_the_metadata_only():
    job = new_job("join", "primary", submission())
    erased = job.without_personal_data()
    assert erased.erased and set(erased.submission) == {"form", "id", "received_at"}
    assert erased.submission_id == job.submission_id and "ann@example.org" not in erased.to_json()
    assert "submission" not in erased.summary(show_data=True) and "fields" not in erased.summary()
    assert not job.erased  # the original is left as it was


def test_backoff_grows_exponentially_with_jitter_and_honours_retry_after():
    settings = QueueSettings(backoff_base=2, backoff_cap=100)
    assert 1 <= backoff(settings, 1) <= 2
    assert 8 <= backoff(settings, 4) <= 16
    assert 50 <= backoff(settings, 30) <= 100
    assert backoff(settings, 1, retry_after=30) == 30

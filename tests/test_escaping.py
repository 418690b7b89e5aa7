"""The pure parts of issue 31's fixes: log escaping, page URL trimming, ASCII regions, fan-out thread shares."""
from __future__ import annotations

import json
import logging
import time

from formrelay.core import i18n, logs
from formrelay.delivery.worker import fanout_threads
from formrelay.forms import attribution


def test_printable_escapes_every_control_and_bidi_character_and_nothing_else():
    text = "a\nb\rc\td\x1b[2J\x07\x7f\x85\x9b\u061c\u200e\u200f\u2028\u2029\u202a\u202e\u2066\u2069\ufeff"
    escaped = logs.printable(text)
    assert escaped == ("a\\nb\\rc\\td\\x1b[2J\\x07\\x7f\\x85\\x9b\\u061c\\u200e\\u200f\\u2028\\u2029\\u202a"
                       "\\u202e\\u2066\\u2069\\ufeff")
    assert logs.printable("Müller, 名前, ü€") == "Müller, 名前, ü€"
    assert logs.printable("one\ntwo", newlines=True) == "one\ntwo"
    assert logs.clip("x" * 500, 10) == "x" * 10 + "...(490 more characters)"


def test_both_formatters_write_one_line_a_record():
    record = logging.LogRecord("formrelay.x", logging.INFO, __file__, 1, "field %s", ("a\nb\u202e\x1b",), None)
    text = logs.TextFormatter().format(record)
    assert "\n" not in text and "\x1b" not in text and "a\\nb\\u202e\\x1b" in text
    record = logging.LogRecord("formrelay.x", logging.INFO, __file__, 1, "m\u009b", None, None)
    record.error_fields = ["cvv\n\u009b"]
    line = logs.JSONFormatter().format(record)
    entry = json.loads(line)
    assert entry["message"] == "m\\x9b" and entry["error_fields"] == ["cvv\\n\\x9b"]
    assert "\u009b" not in line


def test_a_traceback_in_the_text_log_cannot_start_a_line_of_its_own():
    try:
        raise ValueError("boom\n2026-12-06 18:00:00,000 INFO formrelay.audit: forged")
    except ValueError:
        import sys

        record = logging.LogRecord("formrelay.x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    lines = logs.TextFormatter().format(record).splitlines()
    assert all(line.startswith("  ") for line in lines[1:])


def test_the_page_url_keeps_attribution_and_what_the_provider_reads():
    url = "https://example.org/p/a?utm_source=x&em=a%40b.org&tok=1&custom=k&ms=m&source=a%40b#frag"
    assert attribution.trim_page_url(url) == "https://example.org/p/a?utm_source=x&ms=m"
    assert attribution.trim_page_url(url, {"custom"}) == "https://example.org/p/a?utm_source=x&custom=k&ms=m"

    class ENS:
        txn_from_page = {"txn1": "custom", "txn2": "first.utm_source"}
        tracking_from_page = "ea.tracking.id"

    assert attribution.page_refs(ENS(), {"from_page": {"Hidden": "sc"}}) == {"custom", "ea.tracking.id", "sc"}


def test_a_region_is_two_ascii_letters():
    i18n.load_all()
    assert i18n.regional_tag("fr-ÉÉ", "fr") == "fr-FR"
    assert i18n.regional_tag("fr-ca", "fr") == "fr-CA"
    assert i18n.regional_tag("de-ßs", "de") == "de-DE"


def test_fan_out_jobs_never_hold_every_thread():
    assert [fanout_threads(n) for n in (1, 2, 3, 4, 8)] == [1, 1, 1, 2, 4]


def test_a_job_is_not_sent_again_while_its_attempt_here_runs_but_is_once_it_has_its_result(tmp_path):
    """Thread A's attempt outlives its lease: thread B's claim of the job is skipped while A has set no result,
    and delivered once A rescheduled it (A's thread may not be out of the handler yet)."""
    import threading

    from formrelay.delivery.jobs import PENDING, new_job
    from formrelay.delivery.settings import QueueSettings
    from formrelay.delivery.stores import SQLiteStore
    from formrelay.delivery.worker import Worker
    from formrelay.forms.submission import Submission

    store = SQLiteStore(str(tmp_path / "q.sqlite3"))
    job = new_job("join", "primary", Submission(form="join", values={"n": 1}))
    store.put(job)
    in_attempt, reschedule, release = threading.Event(), threading.Event(), threading.Event()
    calls: list[str] = []

    def handle(claimed) -> None:
        calls.append(threading.current_thread().name)
        if len(calls) == 1:  # thread A: a slow attempt, rescheduled at the end, then slow to leave the handler
            in_attempt.set()
            reschedule.wait(10)
            store.reschedule(claimed, time.time() - 1, "try later")
            release.wait(10)

    worker = Worker(store, handle, QueueSettings(lease=0.5, poll_interval=0.01), threads=2)
    first = threading.Thread(target=worker.run_once, name="A")
    first.start()
    assert in_attempt.wait(10)
    time.sleep(0.6)  # A's lease runs out
    assert worker.run_once() == 1 and calls == ["A"]  # claimed again, but not sent a second time
    reschedule.set()
    deadline = time.monotonic() + 5
    while store.get(job.id).state != PENDING:  # type: ignore[union-attr]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert worker.run_once() == 1 and len(calls) == 2  # A set its result: a new claim, delivered
    release.set()
    first.join(10)

"""The operator's side of the queue: erasure once delivered, retry/drop/purge/forget, filters, audit, honest flags."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
import requests
import responses
from click.testing import CliRunner

from formrelay import create_app
from formrelay.cli import main
from formrelay.delivery import admin, retention
from formrelay.delivery.jobs import DEAD, DONE, PENDING, Job
from formrelay.delivery.settings import QueueSettings
from formrelay.delivery.stores import SQLiteStore
from formrelay.delivery.stores.redis import RedisStore
from tests.conftest import NGP_FORM_URL, NGP_SUCCESS, base_config

EMAIL = "zelda.quartermaine@example.org"


def job(job_id: str, submission_id: str | None = None, state: str = PENDING, form: str = "join",
        email: str = EMAIL, created: float | None = None) -> Job:
    sid = submission_id or job_id
    return Job(id=job_id, form=form, target="primary" if job_id == sid else "followup",
               submission={"form": form, "id": sid, "received_at": 1.0,
                           "values": {"EmailAddress": email, "FirstName": "Zelda", "Comments": "x" * 3000},
                           "context": {"referrer": f"https://example.org/?em={email}"}},
               created_at=created if created is not None else time.time(), due_at=0.0, state=state)


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = SQLiteStore(str(tmp_path / "q.sqlite3"))
    else:
        s = RedisStore(request.getfixturevalue("redis_url"))
    yield s
    s.close()


def claim_one(store, job_id):
    """Claim as a worker would, taking only this job (the others go back as they were)."""
    claimed = store.claim(time.time() + 1, 60, 50)
    for other in claimed:
        if other.id != job_id:
            other.state, other.lease_until, other.attempts = PENDING, None, other.attempts - 1
            store.put(other)
    (wanted,) = [j for j in claimed if j.id == job_id]
    return wanted


# -- erasure --------------------------------------------------------------------------------------------

def test_data_is_erased_only_when_every_job_of_the_submission_is_done(store):
    store.put(job("s1"))
    store.put(job("s1-followup", "s1"))
    store.finish(claim_one(store, "s1"), "delivered")
    assert store.erase_submission("s1") == []  # the follow-up still needs the data
    assert store.get("s1").submission["values"]["EmailAddress"] == EMAIL
    store.finish(claim_one(store, "s1-followup"), "delivered")
    assert sorted(store.erase_submission("s1")) == ["s1", "s1-followup"]
    for job_id in ("s1", "s1-followup"):
        kept = store.get(job_id)
        assert kept.erased and kept.state == DONE and kept.outcome == "delivered"
        assert kept.submission == {"form": "join", "id": "s1", "received_at": 1.0}  # metadata only
        assert EMAIL not in kept.to_json() and "referrer" not in kept.to_json()
        assert kept.summary(show_data=True).get("submission") is None
    assert store.erase_submission("s1") == []  # nothing left to erase


def test_destination_jobs_added_after_delivery_hold_the_erasure_back(store):
    """Issue 18's jobs (also forms, webhooks) are made with Store.add before the primary is finished."""
    store.put(job("s3"))
    primary = claim_one(store, "s3")
    assert store.add(job("s3-also:other", "s3")) and store.add(job("s3-webhook:crm/delivered", "s3"))
    assert store.finish_and_erase(primary, "delivered") == []
    store.finish(claim_one(store, "s3-webhook:crm/delivered"), "delivered")
    assert store.erase_submission("s3") == []
    last = claim_one(store, "s3-also:other")
    assert sorted(store.finish_and_erase(last, "delivered")) == ["s3", "s3-also:other", "s3-webhook:crm/delivered"]
    assert all(j.erased for j in store.jobs())


def test_a_dead_sibling_keeps_the_data(store):
    store.put(job("s2"))
    store.put(job("s2-followup", "s2"))
    store.finish(claim_one(store, "s2"), "delivered")
    store.bury(claim_one(store, "s2-followup"), "refused")
    assert store.erase_submission("s2") == []
    assert store.get("s2").submission["values"]["EmailAddress"] == EMAIL


def test_sqlite_erasure_leaves_nothing_in_the_file_or_the_log(tmp_path):
    path = tmp_path / "q.sqlite3"
    store = SQLiteStore(str(path))
    # Debian's SQLite is built with secure_delete on; other builds are not, hence the pragma, checked here.
    assert store._db().execute("PRAGMA secure_delete").fetchone() == (1,)
    for i in range(20):
        store.put(job(f"j{i}", email=f"person{i}@example.org"))
    files = [path, Path(f"{path}-wal")]
    assert b"person7@example.org" in b"".join(p.read_bytes() for p in files if p.exists())
    for claimed in store.claim(time.time() + 1, 60, 50):
        store.finish(claimed, "delivered")
        store.erase_submission(claimed.submission_id)
    assert store.scrub_pending
    store.scrub()  # what the worker's chores do within a second
    assert not store.scrub_pending
    raw = b"".join(p.read_bytes() for p in files if p.exists())
    assert b"@example.org" not in raw and b"Zelda" not in raw
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
    store.close()


def test_redis_erasure_leaves_nothing_in_any_key(redis_url):
    import redis

    store = RedisStore(redis_url)
    store.put(job("r1"))
    store.finish(claim_one(store, "r1"), "delivered")
    client = redis.Redis.from_url(redis_url)
    assert EMAIL.encode() in dump_redis(client)
    assert store.erase_submission("r1") == ["r1"]
    assert EMAIL.encode() not in dump_redis(client) and b"Zelda" not in dump_redis(client)
    store.close()


def dump_redis(client) -> bytes:
    """Every value of every key, whatever its type."""
    out = []
    for key in client.keys("*"):
        kind = client.type(key)
        if kind == b"string":
            out.append(client.get(key))
        elif kind == b"hash":
            out += [k + b"=" + v for k, v in client.hgetall(key).items()]
        elif kind == b"zset":
            out += client.zrange(key, 0, -1)
        elif kind == b"set":
            out += list(client.smembers(key))
        elif kind == b"list":
            out += client.lrange(key, 0, -1)
        out.append(key)
    return b"\n".join(out)


def test_keep_done_defers_erasure_to_the_sweep(store):
    settings = QueueSettings(keep_done=3600)
    store.put(job("k1"))
    assert retention.finish(store, claim_one(store, "k1"), "delivered", settings) == []
    assert retention.sweep(store, settings) == 0  # not yet an hour
    assert retention.sweep(store, settings, now=time.time() + 3601) == 1
    assert store.get("k1").erased


def test_the_sweep_catches_an_erasure_a_crash_missed_and_drops_old_metadata(store):
    settings = QueueSettings(keep_done=0, keep_metadata=60)
    store.put(job("c1"))
    store.finish(claim_one(store, "c1"), "delivered")  # the worker died before erasing
    assert retention.sweep(store, settings) == 1 and store.get("c1").erased
    store.put(job("c2", created=time.time() - 3600))  # received long ago, delivered just now
    store.finish(claim_one(store, "c2"), "delivered")
    retention.sweep(store, settings)
    assert store.get("c2") is not None  # metadata is kept keep_metadata from the delivery
    retention.sweep(store, settings, now=time.time() + 61)
    assert store.get("c1") is None and store.get("c2") is None


# -- operator actions ---------------------------------------------------------------------------------

def test_retry_resets_attempts_and_never_takes_a_job_being_delivered(store):
    store.put(job("d1"))
    claimed = claim_one(store, "d1")
    assert not store.retry("d1", time.time())  # inflight: a retry could deliver it twice
    claimed.attempts = 7
    store.bury(claimed, "gave up after 7 attempt(s): ngp: HTTP 503")
    assert store.retry("d1", time.time())
    again = store.get("d1")
    assert (again.state, again.attempts, again.last_error, again.uncertain) == (PENDING, 0, None, False)
    assert again.retried_at is not None


def test_retry_all_takes_dead_letters_of_a_form_since_a_time_and_leaves_held_ones(store):
    now = time.time()
    for job_id, form in (("a", "join"), ("b", "join"), ("c", "other"), ("held", "join")):
        store.put(job(job_id, form=form))
        store.bury(claim_one(store, job_id), "gave up" if job_id != "held" else "x; held for an operator: ...")
    early = store.get("b")
    early.finished_at = now - 7200
    store.put(early)
    retried, held = admin.retry_all(store, admin.Filters(forms={"join"}, dead_since=now - 3600))
    assert retried == ["a"] and held == ["held"]
    assert {j.id for j in store.scan(DEAD)} == {"b", "c", "held"}
    stats = store.stats(time.time())  # the counts the queue cap and readiness read stay in step
    assert (stats.depth, stats.dead) == (1, 3) and stats.bytes > 0
    assert admin.drop(store, "a") and store.stats(time.time()).depth == 0 and store.stats(time.time()).bytes == 0
    retried, _ = admin.retry_all(store, admin.Filters(), include_held=True)
    assert sorted(retried) == ["b", "c", "held"] and store.stats(time.time()).depth == 3


def test_drop_purge_and_forget(store):
    store.put(job("p1", created=time.time() - 10 * 86400))
    old = claim_one(store, "p1")
    store.bury(old, "gave up")
    aged = store.get("p1")
    aged.finished_at = time.time() - 9 * 86400
    store.put(aged)
    store.put(job("p2"))
    store.bury(claim_one(store, "p2"), "gave up")
    assert retention.purge_dead(store, 8 * 86400) == ["p1"]
    assert store.get("p1") is None and store.get("p2") is not None

    store.put(job("f1", email="Other@Example.org"))
    store.put(job("f2", email="other@example.org "))
    store.put(job("f3"))
    flying = claim_one(store, "f2")
    result = retention.forget(store, "other@example.org")
    assert result.dropped == ["f1"] and result.busy == ["f2"]
    store.finish(flying, "delivered")
    result = retention.forget(store, "OTHER@example.org")
    assert result.erased == ["f2"] and store.get("f2").erased
    assert store.get("f3").submission["values"]["EmailAddress"] == EMAIL
    assert admin.drop(store, "f3") and store.get("f3") is None and not admin.drop(store, "f3")


def test_audit_records_are_handed_to_one_server_process_once(store, caplog):
    admin.audit(store, "retry", ["j1", "j2"], form="join")
    assert [e["job_id"] for e in store.audit_take()] == ["j1", "j2"]
    assert store.audit_take() == []
    assert [e["action"] for e in store.audit_recent()] == ["retry", "retry"]
    admin.audit(store, "drop", ["j3"])
    with caplog.at_level(logging.INFO, logger="formrelay.audit"):
        assert admin.emit_recorded(store) == 1
    assert "audit: drop job j3 by " in caplog.text


def test_old_job_bodies_still_load():
    body = json.dumps({"id": "x", "form": "join", "target": "primary", "submission": {"id": "x", "values": {}},
                       "created_at": 1.0, "due_at": 1.0, "attempts": 2, "state": "dead", "last_error": None,
                       "lease_until": None, "outcome": None, "uncertain": False, "a_key_from_later": 1})
    loaded = Job.from_json(body)
    assert loaded.submission_id == "x" and loaded.finished_at is None and not loaded.erased


def test_durations_and_times():
    assert admin.parse_duration("90") == 90 and admin.parse_duration("2h") == 7200
    assert admin.parse_time("2026-12-01T09:30") == admin.parse_time("2026-12-01T09:30:00Z")
    assert admin.parse_time("1d", now=100_000) == 100_000 - 86400
    with pytest.raises(ValueError):
        admin.parse_time("yesterday")


# -- through the relay --------------------------------------------------------------------------------

@pytest.fixture
def queue_app(tmp_path, mocked):
    raw = base_config()
    raw["queue"] = {"path": str(tmp_path / "q.sqlite3"), "backoff_base": 0.001, "backoff_cap": 0.002,
                    "max_attempts": 3}
    return create_app(raw)


VALID = {"FirstName": "Zelda", "LastName": "Lee", "EmailAddress": EMAIL, "PostalCode": "20009"}


def test_a_failed_synchronous_attempt_counts_and_a_read_timeout_is_uncertain(queue_app, mocked):
    relay = queue_app.extensions["formrelay"]
    mocked.post(NGP_FORM_URL, body=requests.ReadTimeout("slow"))
    assert queue_app.test_client().post("/v1/forms/join", json=VALID).status_code == 202
    (queued,) = relay.store.jobs()
    assert queued.attempts == 1 and queued.uncertain and queued.state == PENDING


def test_delivered_from_the_queue_means_erased_at_once(queue_app, mocked):
    relay = queue_app.extensions["formrelay"]
    mocked.post(NGP_FORM_URL, status=503)
    assert queue_app.test_client().post("/v1/forms/join", json=VALID).status_code == 202
    mocked.replace(responses.POST, NGP_FORM_URL, json=NGP_SUCCESS)
    time.sleep(0.01)
    relay.worker().run_once(limit=5)
    (done,) = relay.store.jobs()
    assert done.state == DONE and done.erased and done.last_error is None and done.attempts == 2
    assert EMAIL not in done.to_json()


# -- the command line ---------------------------------------------------------------------------------

def write_config(tmp_path, extra: str = "") -> Path:
    path = tmp_path / "formrelay.toml"
    path.write_text(f"""
[providers.ngp]
base_url = "https://ngp.test/v2"
api_key = "ngp-test-key"

[forms.join]
provider = "ngp"
form_id = "demo-petition"

[forms.other]
provider = "ngp"
form_id = "demo-petition"

[queue]
path = "{tmp_path / 'q.sqlite3'}"
{extra}""")
    return path


def seeded(tmp_path) -> tuple[Path, SQLiteStore]:
    path = write_config(tmp_path)
    store = SQLiteStore(str(tmp_path / "q.sqlite3"))
    for job_id, form in (("dead-1", "join"), ("dead-2", "other"), ("wait-1", "join")):
        store.put(job(job_id, form=form))
    for job_id in ("dead-1", "dead-2"):
        claimed = claim_one(store, job_id)
        store.bury(claimed, f"gave up after {claimed.attempts} attempt(s)")
    return path, store


def test_queue_list_filters_and_prints_json_without_personal_data(tmp_path):
    path, store = seeded(tmp_path)
    run = CliRunner().invoke(main, ["queue", "list", "--config", str(path), "--state", "dead", "--form", "join",
                                    "--json"])
    assert run.exit_code == 0, run.output
    listed = json.loads(run.stdout)
    assert [j["id"] for j in listed["jobs"]] == ["dead-1"] and listed["dead"] == 2
    assert listed["jobs"][0]["provider"] == "ngp" and listed["jobs"][0]["attempts"] == 1
    assert EMAIL not in run.output
    run = CliRunner().invoke(main, ["queue", "list", "--config", str(path), "--provider", "ngp",
                                    "--older-than", "1h"])
    assert run.exit_code == 0 and "0 job(s) match" in run.stdout
    run = CliRunner().invoke(main, ["queue", "list", "--config", str(path), "--form", "jion"])
    assert "did you mean 'join'?" in run.output


def test_drop_without_a_terminal_needs_yes_and_says_so(tmp_path):
    path, store = seeded(tmp_path)
    run = CliRunner().invoke(main, ["queue", "drop", "dead-1", "--config", str(path)], input="")
    assert run.exit_code == 1 and "--yes" in run.output and "Aborted" not in run.output
    assert store.get("dead-1") is not None
    run = CliRunner().invoke(main, ["queue", "drop", "dead-1", "--yes", "--config", str(path)])
    assert run.exit_code == 0 and store.get("dead-1") is None
    assert [e["action"] for e in store.audit_recent()] == ["drop"]


def test_retry_all_of_a_form_from_the_command_line(tmp_path):
    path, store = seeded(tmp_path)
    run = CliRunner().invoke(main, ["queue", "retry", "--all", "--form", "join", "--json", "--config", str(path)])
    assert run.exit_code == 0, run.output
    assert json.loads(run.stdout)["jobs"] == ["dead-1"]
    assert store.get("dead-1").state == PENDING and store.get("dead-2").state == DEAD
    entries = store.audit_recent()
    assert [(e["action"], e["job_id"], e["form"]) for e in entries] == [("retry", "dead-1", "join")]
    assert EMAIL not in json.dumps(entries)
    run = CliRunner().invoke(main, ["queue", "retry", "--config", str(path)])
    assert run.exit_code == 2 and "--all" in run.output
    run = CliRunner().invoke(main, ["queue", "show", "dead-2", "--show-data", "--config", str(path)])
    assert run.exit_code == 0 and json.loads(run.stdout)["submission"]["values"]["EmailAddress"] == EMAIL
    assert store.audit_recent()[-1]["action"] == "show-data" and EMAIL not in json.dumps(store.audit_recent())


def test_forget_and_purge_from_the_command_line(tmp_path):
    path, store = seeded(tmp_path)
    run = CliRunner().invoke(main, ["queue", "forget", "--email", EMAIL.upper(), "--config", str(path)])
    assert run.exit_code == 0, run.output
    assert store.jobs() == [] and EMAIL not in run.output
    assert {e["action"] for e in store.audit_recent()} == {"forget-drop"}
    run = CliRunner().invoke(main, ["queue", "purge", "--older-than", "30", "--config", str(path)])
    assert run.exit_code == 0 and "0 dead letter(s)" in run.stdout


# -- check ------------------------------------------------------------------------------------------------

def test_check_leaves_no_queue_file_behind(tmp_path, sandbox):
    from tests.test_cli import check_demo

    result = check_demo(tmp_path, sandbox)  # ENS and EngageOne authenticate: their tokens once used the store
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["formrelay.toml"]


def test_check_suggests_the_account_s_ens_field(tmp_path, sandbox):
    from tests.test_cli import check_demo

    def misspell(config):
        fields = config["forms"]["write-your-mp"]["fields"]
        fields["Post Code"] = fields.pop("Postcode")

    result = check_demo(tmp_path, sandbox, misspell)
    assert result.exit_code != 0
    assert "no supporter field or question named 'Post Code' (did you mean 'Postcode'?)" in result.output


def test_check_suggests_the_element_an_alias_meant(tmp_path, sandbox):
    path = tmp_path / "formrelay.toml"
    path.write_text(f"""
[providers.ngp]
base_url = "{sandbox.url}/ngp/v2"
api_key = "sandbox-ngp-api-key"

[forms.join]
provider = "ngp"
form_id = "demo-petition"
aliases = {{ email = "EmailAdress" }}
""")
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert result.exit_code != 0
    assert "'email' points to 'EmailAdress'" in result.output and "did you mean 'EmailAddress'?" in result.output


def test_config_keys_get_close_matches(tmp_path):
    path = write_config(tmp_path, "keep_dne = 5\n")
    result = CliRunner().invoke(main, ["queue", "list", "--config", str(path)])
    assert result.exit_code != 0 and "queue.keep_dne: unknown key (did you mean 'keep_done'?)" in result.output


def test_a_store_that_does_not_answer_is_a_clear_error_not_a_traceback(tmp_path):
    from tests.conftest import free_port

    path = write_config(tmp_path)
    path.write_text(f'[relay]\nredis_url = "redis://127.0.0.1:{free_port()}/0"\n' + path.read_text())
    run = CliRunner().invoke(main, ["queue", "retry", "--all", "--config", str(path)])
    assert run.exit_code == 1 and "the queue storage does not answer (ConnectionError)" in run.output
    assert "Traceback" not in run.output

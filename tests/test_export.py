"""`formrelay queue export` and `drop --exported-before`, run as the real command over a real queue file."""
from __future__ import annotations

import csv
import io
import json
import os
import pty
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from formrelay.cli import main
from formrelay.delivery.jobs import DEAD, PENDING, Job
from formrelay.delivery.stores import SQLiteStore
from tests.servers import BIN, ROOT, toml

EMAIL = "zelda.quartermaine@example.org"


def job(job_id: str, state: str, first: str = "Zelda", email: str = EMAIL, target: str = "primary") -> Job:
    sid = job_id.split("-")[0]
    return Job(id=job_id, form="join", target=target, state=state, last_error="gave up after 2 attempt(s): HTTP 503",
               submission={"form": "join", "id": sid, "received_at": time.time() - 60,
                           "values": {"EmailAddress": email, "FirstName": first, "Tags": ["a", "b"]}},
               created_at=time.time() - 60, due_at=time.time() + 3600, finished_at=time.time() - 30)


@pytest.fixture
def queue(tmp_path):
    config = tmp_path / "formrelay.toml"
    config.write_text(toml(sandbox_url="http://127.0.0.1:9", queue_path=tmp_path / "queue.sqlite3"))
    store = SQLiteStore(str(tmp_path / "queue.sqlite3"))
    store.put(job("d1", DEAD))
    store.put(job("d2", DEAD, first="=HYPERLINK(\"http://evil.example\",\"x\")", email="yan@example.org"))
    store.put(job("d3", DEAD, first="-2+3", email="xu@example.org"))
    store.put(job("d3-followup", DEAD, target="followup"))  # the follow-up email is not the CRM's record
    store.put(job("p1", PENDING, email="pending.person@example.org"))
    yield config, store
    store.close()


def formrelay(config: Path, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    """The real command, in its own process, as an operator or cron runs it."""
    return subprocess.run([str(BIN / "formrelay"), "queue", *args, "--config", str(config)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, **kwargs)


def invoke(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The same command in this process (click's runner: no terminal), for the steps that follow the first."""
    result = CliRunner().invoke(main, ["queue", *args, "--config", str(config)])
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def test_export_writes_one_row_per_dead_submission_escapes_formulas_and_audits_once(queue, tmp_path):
    config, store = queue
    out = tmp_path / "dead.csv"
    done = formrelay(config, "export", "--state", "dead", "--format", "csv", "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert "3 submission(s) exported" in done.stderr and "drop --exported-before" in done.stderr
    assert EMAIL not in done.stdout + done.stderr  # the data goes to the file only
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert sorted(r["job_id"] for r in rows) == ["d1", "d2", "d3"]
    by_id = {r["job_id"]: r for r in rows}
    assert by_id["d1"]["EmailAddress"] == EMAIL
    assert by_id["d2"]["FirstName"].startswith("'=HYPERLINK")
    assert by_id["d3"]["FirstName"] == "'-2+3"
    assert by_id["d1"]["Tags"] == "a; b"
    assert by_id["d1"]["form"] == "join" and by_id["d1"]["provider"] == "ngp"
    assert "HTTP 503" in by_id["d1"]["reason"] and by_id["d1"]["submitted_at"].endswith("+00:00")
    assert list(rows[0])[-5:] == ["submitted_at", "form", "provider", "reason", "job_id"]
    exports = [e for e in store.audit_recent(50) if e["action"] == "export"]
    assert len(exports) == 1
    assert exports[0]["count"] == 3 and exports[0]["state"] == "dead" and exports[0]["format"] == "csv"
    assert EMAIL not in json.dumps(exports[0])
    assert store.get("p1").state == PENDING  # an export alone changes nothing


def test_jsonl_keeps_values_and_bom_is_for_spreadsheets(queue, tmp_path):
    config, _ = queue
    out = tmp_path / "pending.jsonl"
    assert invoke(config, "export", "--state", "pending", "--format", "jsonl", "-o", str(out)).returncode == 0
    (line,) = out.read_text().splitlines()
    assert json.loads(line)["EmailAddress"] == "pending.person@example.org"
    assert json.loads(line)["Tags"] == ["a", "b"]
    bom = tmp_path / "bom.csv"
    assert invoke(config, "export", "--bom", "-o", str(bom), "--form", "join").returncode == 0
    assert bom.read_bytes().startswith(b"\xef\xbb\xbf")


def read_all(fd: int) -> bytes:
    printed = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return printed
        if not chunk:
            return printed
        printed += chunk


def on_a_terminal(config: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], bytes]:
    leader, follower = pty.openpty()
    try:
        done = subprocess.run([str(BIN / "formrelay"), "queue", "export", *args, "--config", str(config)], cwd=ROOT,
                              stdout=follower, stderr=subprocess.PIPE, text=True, timeout=60)
        os.close(follower)
        return done, read_all(leader)
    finally:
        os.close(leader)


def test_personal_data_is_not_printed_to_a_terminal_without_yes(queue):
    config, store = queue
    done, printed = on_a_terminal(config)
    assert done.returncode == 1 and "--output" in done.stderr
    assert EMAIL.encode() not in printed
    piped = formrelay(config, "export", "--format", "jsonl")  # a pipe is not a terminal: a script may read it
    assert piped.returncode == 0 and EMAIL in piped.stdout
    store.put(job("d5", DEAD, first="\x1b[2J\x1b]0;owned\x07Eve"))
    done, printed = on_a_terminal(config, "--yes")
    assert done.returncode == 0 and EMAIL.encode() in printed
    assert b"\x1b" not in printed and b"\\x1b[2J\\x1b]0;owned\\x07Eve" in printed  # shown, not run


def test_mark_exported_sets_waiting_jobs_aside_and_drop_exported_before_deletes_them(queue, tmp_path):
    config, store = queue
    done = invoke(config, "export", "--state", "pending", "--mark-exported", "-o", str(tmp_path / "p.csv"))
    assert done.returncode == 0, done.stderr
    aside = store.get("p1")
    assert aside.state == DEAD and "exported for an import by hand" in aside.last_error  # the worker leaves it
    retried = invoke(config, "retry", "--all", "--json")  # the CRM back: what was imported is not sent again
    assert retried.returncode == 0 and "p1" in json.loads(retried.stdout)["skipped_held"]
    assert store.get("p1").state == DEAD
    later = invoke(config, "drop", "--exported-before", "2000-01-01T00:00", "--yes")
    assert later.returncode == 0 and store.get("p1") is not None  # exported after that time: kept
    dropped = invoke(config, "drop", "--exported-before", "0s", "--yes", "--json")
    assert dropped.returncode == 0, dropped.stderr
    assert json.loads(dropped.stdout)["jobs"] == ["p1"]
    assert store.get("p1") is None and store.get("d1") is not None  # never exported: kept
    assert invoke(config, "drop", "--yes").returncode == 2  # neither ids nor --exported-before

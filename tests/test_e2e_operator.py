"""An operator's outage, end to end: `formrelay serve`, the sandbox CRM failing, and the queue CLI with no terminal."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import received, wait_until_serving
from tests.test_e2e_queue import fail, heal, wait_for
from tests.test_queue_operator import dump_redis

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent
PEOPLE = [(f"Wilhelmina{c}", f"Ottoline{c}", f"wilhelmina.{c}@example.org") for c in "abcd"]


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`formrelay queue ...` as cron or a script would run it: its own process, stdin closed, no terminal."""
    return subprocess.run([sys.executable, "-m", "formrelay.cli", "queue", *args, "--config", str(config)],
                          cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                          env={**os.environ})


def listed(config: Path, *args: str) -> dict:
    run = cli(config, "list", "--json", *args)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def stored_bytes(tmp_path: Path, redis_url: str | None) -> bytes:
    """Everything the store holds, read directly: the SQLite file and its log, or every Redis key and value."""
    if redis_url:
        import redis

        client = redis.Redis.from_url(redis_url)
        try:
            return dump_redis(client)
        finally:
            client.close()
    return b"".join(p.read_bytes() for p in tmp_path.glob("q.sqlite3*"))


@pytest.mark.parametrize("storage", ["sqlite", "redis"])
def test_an_outage_handled_by_an_operator_from_the_command_line(storage, tmp_path, sandbox, request):
    redis_url = request.getfixturevalue("redis_url") if storage == "redis" else None
    config = tmp_path / "relay.toml"
    config.write_text(f"""
[relay]
rate_limit = ""
breaker_failures = 1000  # this test is about the queue's own limits, not the circuit breaker's pause
{f'redis_url = "{redis_url}"' if redis_url else ''}

[providers.ngp]
base_url = "{sandbox.url}/ngp/v2"
api_key = "sandbox-ngp-api-key"

[forms.join]
provider = "ngp"
form_id = "demo-petition"

[logging]
format = "json"

[queue]
path = "{tmp_path / 'q.sqlite3'}"
max_attempts = 3
backoff_base = 0.05
backoff_cap = 0.1
poll_interval = 0.05
""")
    log_path = tmp_path / "server.log"
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "formrelay.cli", "serve", "--config", str(config), "--port", str(port)],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(log_path, "w"),
        env={**os.environ})
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(url, server, 20)

        # The CRM goes down; supporters keep signing, and are told "queued".
        fail(sandbox, 100_000)
        for first, last, email in PEOPLE:
            answer = requests.post(f"{url}/v1/forms/join", timeout=10, json={
                "FirstName": first[:20], "LastName": last, "EmailAddress": email, "PostalCode": "20009"})
            assert answer.status_code == 202, answer.text

        # The worker gives up after max_attempts (the synchronous attempt counts): all are dead letters. Waited for
        # through /readyz (cheap), then read with the CLI: polling `queue list`, each a new Python process, would
        # take a CPU from every other test running meanwhile.
        def dead_letters() -> int:
            return requests.get(f"{url}/readyz", timeout=10).json()["queue"].get("dead", 0)

        assert wait_for(lambda: dead_letters() == len(PEOPLE), 30)
        assert listed(config, "--state", "dead")["matched"] == len(PEOPLE)
        dead = listed(config, "--state", "dead", "--form", "join")["jobs"]
        assert {j["attempts"] for j in dead} == {3} and all("gave up after 3" in j["last_error"] for j in dead)
        assert EMAIL_BYTES[0] in stored_bytes(tmp_path, redis_url)  # dead letters keep their data, for now

        # Without a terminal, drop refuses to guess: it asks for --yes (and deletes nothing).
        refused = cli(config, "drop", dead[0]["id"])
        assert refused.returncode == 1 and "--yes" in refused.stderr and "Aborted" not in refused.stderr

        # The CRM is back; the operator retries every dead letter of the form.
        heal(sandbox)
        retry = cli(config, "retry", "--all", "--form", "join", "--json")
        assert retry.returncode == 0, retry.stderr
        ids = json.loads(retry.stdout)["jobs"]
        assert sorted(ids) == sorted(j["id"] for j in dead)

        # Each delivered exactly once.
        assert wait_for(lambda: len(received(sandbox, "ngp")) >= len(PEOPLE), 30)
        time.sleep(0.5)  # would a duplicate follow?
        emails = [r["fields"]["EmailAddress"][0] for r in received(sandbox, "ngp")]
        assert sorted(emails) == sorted(p[2] for p in PEOPLE)

        # Right after delivery the personal data is gone from the store, read byte by byte.
        def erased() -> bool:
            raw = stored_bytes(tmp_path, redis_url)
            return not any(b in raw for b in EMAIL_BYTES + NAME_BYTES)

        assert wait_for(erased, 5), "personal data still in the store after delivery"
        done = listed(config, "--state", "done")["jobs"]
        assert len(done) == len(PEOPLE)
        assert all(j["erased"] and j["last_error"] is None and j["attempts"] == 1 for j in done)

        # Audit: one line per job in the CLI's log and, through the store, in the server's log; never the data.
        audit_cli = [json.loads(line) for line in retry.stderr.splitlines() if '"event": "audit"' in line]
        assert sorted(e["job_id"] for e in audit_cli) == sorted(ids)
        assert all(e["action"] == "retry" and e["form"] == "join" for e in audit_cli)

        def server_audit() -> list[dict]:
            lines = log_path.read_text().splitlines()
            return [json.loads(line) for line in lines if '"event": "audit"' in line]

        assert wait_for(lambda: len(server_audit()) == len(ids), 10)
        assert sorted(e["job_id"] for e in server_audit()) == sorted(ids)
        text = log_path.read_text() + retry.stderr
        assert not any(b.decode() in text for b in EMAIL_BYTES + NAME_BYTES)
    finally:
        server.terminate()
        server.wait(timeout=10)


EMAIL_BYTES = [p[2].encode() for p in PEOPLE]
NAME_BYTES = [p[1].encode() for p in PEOPLE]


def _free_port() -> int:
    from tests.conftest import free_port

    return free_port()

"""Nothing accepted is lost, over real HTTP: outage, kill -9 and restart, and two relays sharing Redis."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port, received, wait_until_serving

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent


def person(i: int) -> dict[str, str]:
    return {"FirstName": f"P{'abcdefghij'[i % 10]}{i}"[:20].replace(str(i), "x" * len(str(i))),
            "LastName": f"L{i}", "EmailAddress": f"p{i}@example.org", "PostalCode": "20009"}


def write_config(path: Path, sandbox_url: str, queue_path: Path | None = None, extra: str = "") -> Path:
    queue = f'path = "{queue_path}"\n' if queue_path else ""
    path.write_text(f"""
[relay]
rate_limit = ""
breaker_reset = 0.1
{extra}
[providers.ngp]
base_url = "{sandbox_url}/ngp/v2"
api_key = "sandbox-ngp-api-key"

[forms.join]
provider = "ngp"
form_id = "demo-petition"

[queue]
{queue}backoff_base = 0.05
backoff_cap = 0.2
poll_interval = 0.05
lease = 2
""")
    return path


class Relay:
    """`formrelay serve` in a child process."""

    def __init__(self, config: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "formrelay.cli", "serve", "--config", str(config), "--port", str(self.port)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(config.with_suffix(".log"), "w"), env={**os.environ},
        )
        wait_until_serving(self.url, self.proc, 20)

    def post(self, body: dict, **kw) -> requests.Response:
        return requests.post(f"{self.url}/v1/forms/join", json=body, timeout=10, **kw)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def relays():
    started: list[Relay] = []

    def start(config: Path) -> Relay:
        relay = Relay(config)
        started.append(relay)
        return relay

    yield start
    for relay in started:
        relay.stop()


def fail(sandbox, count: int) -> None:
    requests.post(f"{sandbox.url}/_control/fail", json={"provider": "ngp", "status": 503, "count": count}, timeout=5)


def heal(sandbox) -> None:
    requests.post(f"{sandbox.url}/_control/recover", timeout=5)


def wait_for(predicate, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def emails(sandbox) -> list[str]:
    return [r["fields"]["EmailAddress"][0] for r in received(sandbox, "ngp")]


def test_outage_then_recovery_delivers_every_submission_exactly_once(tmp_path, sandbox, relays):
    relay = relays(write_config(tmp_path / "r.toml", sandbox.url, tmp_path / "q.sqlite3"))
    fail(sandbox, 40)  # the first tries of each, and a few retries
    answers = [relay.post(person(i)) for i in range(10)]
    assert [a.status_code for a in answers] == [202] * 10
    assert wait_for(lambda: len(emails(sandbox)) >= 10)
    time.sleep(0.5)  # would a duplicate follow?
    assert sorted(emails(sandbox)) == sorted(f"p{i}@example.org" for i in range(10))


def test_queued_submissions_survive_kill_9(tmp_path, sandbox, relays):
    config = write_config(tmp_path / "r.toml", sandbox.url, tmp_path / "q.sqlite3")
    relay = relays(config)
    fail(sandbox, 100_000)  # down for as long as it takes
    answers = [relay.post(person(i)) for i in range(8)]
    assert [a.status_code for a in answers] == [202] * 8
    relay.kill()
    heal(sandbox)
    assert emails(sandbox) == []
    relays(config)
    assert wait_for(lambda: len(emails(sandbox)) >= 8)
    time.sleep(0.5)
    assert sorted(emails(sandbox)) == sorted(f"p{i}@example.org" for i in range(8))


def test_two_relays_share_rate_limits_idempotency_and_the_queue(tmp_path, sandbox, relays, redis_url):
    shared = f'redis_url = "{redis_url}"\n'
    a = relays(write_config(tmp_path / "a.toml", sandbox.url, extra=shared))
    b = relays(write_config(tmp_path / "b.toml", sandbox.url, extra=shared))

    # idempotency: the same key sent to both hosts is delivered once
    first = a.post(person(1), headers={"Idempotency-Key": "fill-1"})
    second = b.post(person(1), headers={"Idempotency-Key": "fill-1"})
    assert first.status_code == second.status_code == 200 and first.json() == second.json()
    assert emails(sandbox) == ["p1@example.org"]

    # the queue: what A accepted during an outage is delivered by B after A is gone
    fail(sandbox, 100_000)
    assert [a.post(person(i)).status_code for i in range(2, 6)] == [202] * 4
    a.kill()
    heal(sandbox)
    assert wait_for(lambda: len(emails(sandbox)) >= 5)
    time.sleep(0.3)
    assert sorted(emails(sandbox)) == sorted(f"p{i}@example.org" for i in range(1, 6))


def test_two_relays_share_one_rate_limit(tmp_path, sandbox, relays, redis_url):
    shared = f'redis_url = "{redis_url}"\n'
    config_a = write_config(tmp_path / "a.toml", sandbox.url, extra=shared)
    config_a.write_text(config_a.read_text().replace('rate_limit = ""', 'rate_limit = "3/minute"'))
    config_b = write_config(tmp_path / "b.toml", sandbox.url, extra=shared)
    config_b.write_text(config_b.read_text().replace('rate_limit = ""', 'rate_limit = "3/minute"'))
    a, b = relays(config_a), relays(config_b)
    codes = [host.post({}).status_code for host in (a, b, a, b)]
    assert codes == [422, 422, 422, 429]

"""Redis as redis_url, stopped under load: answers degrade (never 500), nothing answered `queued` is lost, the log
stays readable; `formrelay check` says whether Redis would keep queued submissions; the CLI fails in one line."""
from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from formrelay.cli import main
from tests.conftest import _need, free_port, received
from tests.servers import post_raw, running, toml


def start_redis(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """redis-server with an append-only file in workdir: what docs/deploy/serving.md asks for the queue."""
    binary = shutil.which("redis-server")
    if binary is None:
        _need("redis-server")
    assert binary is not None
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
                             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            client.close()
            return proc
        except redis.ConnectionError:
            assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)


def stop_redis(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(timeout=15)


class Load:
    """Steady small load: one post every `every` seconds, alternating between two forms; every answer kept."""

    def __init__(self, port: int, every: float = 0.1) -> None:
        self.port, self.every = port, every
        self.answers: list[tuple[str, str, int, dict[str, str], dict]] = []  # form, email, HTTP, headers, JSON
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._n = itertools.count()

    def _run(self) -> None:
        while not self._stop.is_set():
            n = next(self._n)
            form = "later" if n % 2 else "join"
            email = f"p{n}@example.org"
            body = ({"FirstName": "Ann", "LastName": "Lee", "EmailAddress": email, "PostalCode": "20009"}
                    if form == "join" else {"given_name": "Ann", "email_address": email})
            try:
                status, raw, headers = post_raw(self.port, f"/v1/forms/{form}", json.dumps(body).encode(), timeout=15)
                answer = json.loads(raw) if raw else {}
            except OSError as exc:
                status, headers, answer = 0, {}, {"error": exc.__class__.__name__}
            self.answers.append((form, email, status, headers, answer))
            self._stop.wait(self.every)

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def since(self, index: int) -> list[tuple[str, str, int, dict[str, str], dict]]:
        return self.answers[index:]


@pytest.mark.e2e
def test_redis_stopped_for_15_seconds_under_load(tmp_path, sandbox):
    port = free_port()
    workdir = tmp_path / "redis"
    workdir.mkdir()
    redis_proc = start_redis(port, workdir)
    # Action Network (the sandbox's) is down for the whole test, so its form must queue: the queue is in Redis.
    requests.post(f"{sandbox.url}/_control/fail", json={"provider": "actionnetwork", "status": 503, "count": 100000},
                  timeout=5)
    extra = (f'[providers.actionnetwork]\nbase_url = "{sandbox.url}/actionnetwork/api/v2"\n'
             '[forms.later]\nprovider = "actionnetwork"\naction = "petition"\naction_id = "air"\n')
    # breaker_reset = 1: once Action Network is back, its circuit breaker lets a probe through within a second
    # rather than after the default 30 s, so that the queued submissions go out as soon as it is up.
    text = toml({"rate_limit": "1000/minute", "redis_url": f"redis://127.0.0.1:{port}/0", "breaker_reset": 1},
                sandbox.url, extra)
    # backoff_cap = 1 also bounds the workers' polls of the storage during the outage (10 s by default), so that
    # they find Redis back within a second: the test waits for the outage, not for the poll after it.
    text = text.replace("[providers.ngp]", "[queue]\nbackoff_base = 0.2\nbackoff_cap = 1\npoll_interval = 0.1\n"
                                           "[providers.ngp]")
    config = tmp_path / "relay.toml"
    config.write_text(text)
    try:
        with running("serve", config, tmp_path, workers=2, threads=4) as relay:
            load = Load(relay.port).start()
            time.sleep(3)
            outage_starts = len(load.answers)
            log_before = len(relay.output().splitlines())
            stop_redis(redis_proc)
            time.sleep(15)
            outage_ends = len(load.answers)
            log_during = relay.output().splitlines()[log_before:]
            redis_proc = start_redis(port, workdir)  # same port, same append-only file
            time.sleep(2)  # the load goes on past the workers' next poll (at most backoff_cap later)
            load.stop()

            answers = load.answers
            codes = Counter(a[2] for a in answers)
            assert 500 not in codes and 0 not in codes, codes
            during = load.since(outage_starts)[: outage_ends - outage_starts]
            assert len(during) > 50, "the load kept going through the outage"
            join_during = [a for a in during if a[0] == "join"]
            later_during = [a for a in during if a[0] == "later"]
            # A healthy CRM still gets its submissions (after the first second or so of the outage).
            assert sum(a[2] == 200 for a in join_during) >= len(join_during) - 3, Counter(a[2] for a in join_during)
            # One that must be queued cannot be: 503 unavailable with Retry-After.
            unavailable = [a for a in later_during if a[2] == 503]
            assert len(unavailable) >= len(later_during) - 3, Counter(a[2] for a in later_during)
            assert all(a[4].get("status") == "unavailable" and int(a[3]["retry-after"]) > 0 for a in unavailable)
            # Readable log: no traceback, and far fewer lines than answers (one per submission, not per poll).
            assert not any("Traceback" in line for line in log_during), "\n".join(log_during[:40])
            assert len(log_during) < 3 * len(during) + 20, len(log_during)
            outage_lines = [x for x in log_during if "queue worker: the queue storage is unavailable" in x]
            assert 1 <= len(outage_lines) <= 2, outage_lines  # one per worker process

            # Nothing answered `queued` (before or after the outage) is lost: AN recovers and gets each of them.
            queued = {a[1] for a in answers if a[0] == "later" and a[2] == 202}
            assert queued, "some submissions were queued while Redis was up"
            requests.post(f"{sandbox.url}/_control/recover", json={}, timeout=5)
            deadline = time.monotonic() + 60
            while True:
                got = {r["body"]["person"]["email_addresses"][0]["address"] for r in received(sandbox, "actionnetwork")}
                if queued <= got or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert queued <= got, f"lost {len(queued - got)} of {len(queued)} queued submissions"
            back = [x for x in relay.output().splitlines() if "queue storage is back" in x]
            assert back, "the worker says when the storage is back"
    finally:
        stop_redis(redis_proc)


def test_check_fails_on_an_unreachable_redis_url(tmp_path, sandbox):
    path = tmp_path / "relay.toml"
    path.write_text(toml({"redis_url": f"redis://127.0.0.1:{free_port()}/0"}, sandbox.url))
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert result.exit_code != 0
    assert "ERROR: no answer from Redis" in result.output


def test_check_warns_when_redis_would_lose_queued_submissions(tmp_path, sandbox, redis_url):
    import redis

    path = tmp_path / "relay.toml"
    path.write_text(toml({"redis_url": redis_url}, sandbox.url))
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert result.exit_code == 0, result.output  # warnings do not fail the check; an unreachable Redis does
    assert "keeps nothing on disk" in result.output and "maxmemory-policy" not in result.output.split("WARNING")[-1]
    client = redis.Redis.from_url(redis_url)
    client.config_set("appendonly", "yes")
    client.config_set("maxmemory-policy", "allkeys-lru")
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert "keeps nothing on disk" not in result.output and "RDB" not in result.output
    assert "maxmemory-policy is 'allkeys-lru'" in result.output
    client.config_set("maxmemory-policy", "noeviction")
    result = CliRunner().invoke(main, ["check", "--config", str(path)])
    assert "WARNING" not in result.output and "appendonly yes" in result.output
    client.config_set("appendonly", "no")  # as the fixture started it, so that it stops at once
    client.close()


def test_queue_list_with_redis_down_is_one_line(tmp_path, sandbox):
    path = tmp_path / "relay.toml"
    path.write_text(toml({"redis_url": f"redis://127.0.0.1:{free_port()}/0"}, sandbox.url))
    result = CliRunner().invoke(main, ["queue", "list", "--config", str(path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: the queue storage does not answer"), result.output

"""Storage that fails is seen (issue 32): a real redis-server, a real `formrelay serve`, /readyz, /metrics, the log.

Persistence off, refused writes (maxmemory reached) and a wiped store (FLUSHALL under queued jobs) each show in
/readyz as `degraded` with the reason, in the server's log, and as formrelay_queue_storage_problem{reason}.
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from formrelay.cli import main
from tests.conftest import _need, free_port
from tests.servers import PERSON, running, toml


@contextlib.contextmanager
def redis_server(tmp_path: Path, *options: str) -> Iterator[str]:
    """Debian's redis-server on a free loopback port with these options; its URL."""
    import redis

    binary = shutil.which("redis-server") or _need("redis-server")
    port = free_port()
    data = tmp_path / f"redis-{port}"
    data.mkdir()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), *options],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


DURABLE = ("--appendonly", "yes", "--save", "")


def config(tmp_path: Path, redis_url: str, sandbox_url: str) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(toml({"redis_url": redis_url, "answer_within": 1.0}, sandbox_url)
                    + "[queue]\nbackoff_base = 30\nbackoff_cap = 60\n")
    return path


def readyz(url: str) -> dict:
    return requests.get(f"{url}/readyz", timeout=5).json()  # from 127.0.0.1: the operator's view


def view_if(url: str, wanted) -> dict | None:
    view = readyz(url)
    return view if wanted(view) else None


def wait_for(predicate, timeout: float, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def test_persistence_off_is_degraded_warned_at_start_and_fails_check_strict(tmp_path, sandbox, redis_url):
    path = config(tmp_path, redis_url, sandbox.url)  # the conftest Redis: --save "" --appendonly no
    with running("serve", path, tmp_path, workers=1) as relay:
        view = readyz(relay.url)
        assert view["status"] == "degraded"
        assert "persistence_off" in view["queue"]["storage_health"]["problems"]
        assert any("keeps nothing on disk" in p for p in view["problems"])
        assert 'formrelay_queue_storage_problem{reason="persistence_off"} 1.0' in \
            requests.get(f"{relay.url}/metrics", timeout=5).text
        assert 'formrelay_queue_storage_problem{reason="eviction"} 0.0' in \
            requests.get(f"{relay.url}/metrics", timeout=5).text
        log = relay.output()
    assert log.count("keeps nothing on disk") == 1, log  # once at start-up, not once per check
    assert CliRunner().invoke(main, ["check", "--config", str(path)]).exit_code == 0
    strict = CliRunner().invoke(main, ["check", "--strict", "--config", str(path)])
    assert strict.exit_code != 0 and "keeps nothing on disk" in strict.output


def test_a_durable_redis_is_ok_and_passes_check_strict(tmp_path, sandbox):
    with redis_server(tmp_path, *DURABLE) as url:
        path = config(tmp_path, url, sandbox.url)
        with running("serve", path, tmp_path, workers=1) as relay:
            view = readyz(relay.url)
            assert view["queue"]["storage_health"]["problems"] == {} and view["status"] == "ok", view
        strict = CliRunner().invoke(main, ["check", "--strict", "--config", str(path)])
        assert "WARNING" not in strict.output and "redis" in strict.output


def test_flushall_under_queued_jobs_is_reported_as_the_jobs_lost(tmp_path, sandbox):
    import redis

    requests.post(f"{sandbox.url}/_control/fail", json={"provider": "ngp", "status": 503, "count": 10**6}, timeout=5)
    try:
        with redis_server(tmp_path, *DURABLE) as url:
            path = config(tmp_path, url, sandbox.url)
            with running("serve", path, tmp_path, workers=2) as relay:
                for i in range(7):
                    answer = requests.post(f"{relay.url}/v1/forms/join", timeout=10,
                                           json={**PERSON, "EmailAddress": f"lost{i}@example.org"})
                    assert answer.json()["status"] == "queued", answer.text
                assert wait_for(lambda: readyz(relay.url)["queue"]["storage_health"]["unfinished_seen"] == 7, 10)
                time.sleep(2.5)  # every process's watch has seen the 7 (they check every 2 s)
                redis.Redis.from_url(url).flushall()
                view = wait_for(lambda: view_if(relay.url, lambda v: "lost_jobs" in v["queue"]["storage_health"][
                    "problems"]), 10)
                assert view, "the wipe was not reported"
                assert view["status"] == "degraded" and "queue storage: the queue storage lost 7 jobs" in view["problems"]
                # every process found it (each has its own watch; a scrape reaches any of them)
                assert wait_for(lambda: all("formrelay_queue_storage_lost_jobs 7.0" in requests.get(
                    f"{relay.url}/metrics", timeout=5).text for _ in range(6)), 6)
                metrics = requests.get(f"{relay.url}/metrics", timeout=5).text
                assert 'formrelay_queue_storage_problem{reason="lost_jobs"} 1.0' in metrics
                assert wait_for(lambda: "the queue storage lost 7 jobs" in relay.output(), 5), relay.output()
                # the queue goes on: a new submission is queued in the new (empty) store
                again = requests.post(f"{relay.url}/v1/forms/join", json=PERSON, timeout=10)
                assert again.json()["status"] == "queued"
    finally:
        requests.post(f"{sandbox.url}/_control/recover", timeout=5)


def test_maxmemory_reached_makes_readyz_not_ok_within_5_seconds(tmp_path, sandbox):
    import redis

    with redis_server(tmp_path, *DURABLE, "--maxmemory-policy", "noeviction") as url:
        path = config(tmp_path, url, sandbox.url)
        with running("serve", path, tmp_path, workers=1) as relay:
            assert readyz(relay.url)["status"] == "ok"
            client = redis.Redis.from_url(url)
            for i in range(8):
                client.set(f"filler{i}", b"x" * (256 * 1024))
            # maxmemory now below what Redis holds: with noeviction, every write is refused until memory is freed
            client.config_set("maxmemory", int(client.info("memory")["used_memory"]) - 512 * 1024)
            with pytest.raises(redis.ResponseError, match="maxmemory"):
                client.set("one-more", "x")
            started = time.monotonic()
            view = wait_for(lambda: view_if(relay.url, lambda v: v["status"] != "ok"), 5, 0.2)
            assert view and time.monotonic() - started <= 5.5, "still ok after 5 s"
            assert "writes_refused" in view["queue"]["storage_health"]["problems"], view
            assert 'formrelay_queue_storage_problem{reason="writes_refused"} 1.0' in \
                requests.get(f"{relay.url}/metrics", timeout=5).text
            assert wait_for(lambda: "refuses writes" in relay.output(), 5)
            client.delete(*[f"filler{i}" for i in range(8)])
            assert wait_for(lambda: readyz(relay.url)["status"] == "ok", 6), "did not clear"
            client.close()


def test_a_loss_the_watch_finds_reaches_the_alerts():
    from formrelay import alerts
    from formrelay.alerts import monitor
    from formrelay.delivery.storage_check import StorageEvent, _publish

    monitor._take_lost()
    alerts.hear_storage()
    alerts.hear_storage()  # once per process, however often alerts start
    _publish(StorageEvent("problem", "eviction", "Redis may evict"))
    _publish(StorageEvent("lost", "lost_jobs", "the queue storage lost 3 jobs", count=3))
    assert monitor._take_lost() == 3

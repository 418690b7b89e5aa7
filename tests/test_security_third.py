"""Security third pass (issue 31), through `formrelay serve` and a real redis-server.

Each test reproduces a finding and fails on the code before the fix: made-up form names that cost memory and Redis
keys, a full Redis answered with 500s while /readyz said ok, forged log lines, the audit operator from $USER,
whole page URLs stored with queued jobs, non-ASCII Accept-Language regions, and a dripping webhook receiver that
held every worker thread.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import received
from tests.servers import PERSON, running, toml

pytestmark = pytest.mark.e2e

LIMITED = {"rate_limit": "10/minute;100/hour"}


def rss_kb(pid: int) -> int:
    """Resident memory of a process and its children (the server's workers), in KB."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        pids += [int(c) for c in children]
    return total


def write(tmp_path: Path, sandbox_url: str, relay: dict | None = None, extra: str = "",
          logging_format: str = "text") -> Path:
    config = tmp_path / "formrelay.toml"
    config.write_text(toml({"time_trap_min": 0, **(relay or {})}, sandbox_url, extra=extra,
                           queue_path=tmp_path / "queue.sqlite3", logging_format=logging_format))
    return config


# -- 1. made-up form names -----------------------------------------------------------------------------------


def test_2000_made_up_16_kb_form_names_cost_no_memory_and_no_5xx(tmp_path, sandbox):
    config = write(tmp_path, sandbox.url, LIMITED)
    with running("serve", config, tmp_path, workers=1, threads=4) as server:
        for _ in range(20):  # warm up: the first answers load what every later one uses
            requests.post(f"{server.url}/v1/forms/join", json=PERSON, timeout=10)
        before = rss_kb(server.proc.pid)
        statuses: dict[int, int] = {}
        for i in range(2000):  # a connection each, as a scanner would
            name = f"{i:05d}" + "x" * (16 * 1024 - 5)
            status = requests.post(f"{server.url}/v1/forms/{name}", json=PERSON, timeout=10).status_code
            statuses[status] = statuses.get(status, 0) + 1
        grown_mb = (rss_kb(server.proc.pid) - before) / 1024
        log = server.output()
    assert not any(status >= 500 for status in statuses), statuses
    assert grown_mb < 40, f"the relay grew by {grown_mb:.0f} MB for 2,000 made-up names ({statuses})"
    assert "x" * 300 not in log  # no made-up name is written out whole


def test_made_up_form_names_share_one_bucket_per_address(tmp_path, sandbox):
    config = write(tmp_path, sandbox.url, LIMITED)
    with running("serve", config, tmp_path, workers=1) as server:
        session = requests.Session()
        statuses = [session.post(f"{server.url}/v1/forms/made-up-{i}", json=PERSON, timeout=10).status_code
                    for i in range(15)]
        # The real form keeps its own bucket: a supporter on the same address is not refused for the scan.
        real = session.post(f"{server.url}/v1/forms/join", json=PERSON, timeout=10).status_code
    assert statuses[:10] == [404] * 10
    assert statuses[10:] == [429] * 5, statuses  # one bucket for every made-up name, not a bucket each
    assert real == 200


def test_form_names_longer_than_the_config_accepts_are_404_from_routing(tmp_path, sandbox):
    config = write(tmp_path, sandbox.url, LIMITED)
    with running("serve", config, tmp_path, workers=1) as server:
        for name in ("a" * 65, "Join", "join%0a", "-join"):
            answer = requests.post(f"{server.url}/v1/forms/{name}", json=PERSON, timeout=10)
            assert answer.status_code == 404, name
            assert answer.json()["status"] == "not_found"
        assert requests.get(f"{server.url}/v1/forms/{'a' * 64}", timeout=10).status_code == 404


def fill(client, prefix: str = "filler") -> int:
    """Write until Redis refuses (maxmemory reached with noeviction); the number of keys written."""
    import redis

    blob = b"x" * 4096
    for i in range(100_000):
        try:
            client.set(f"{prefix}:{i}", blob)
        except redis.exceptions.OutOfMemoryError:
            return i
    raise AssertionError("Redis never filled up")


def test_a_full_redis_is_never_a_500_and_readyz_says_why(tmp_path, sandbox, redis_url):
    import redis

    config = write(tmp_path, sandbox.url, {**LIMITED, "redis_url": redis_url})
    client = redis.Redis.from_url(redis_url)
    with running("serve", config, tmp_path, workers=1, threads=8) as server:
        assert requests.post(f"{server.url}/v1/forms/join", json=PERSON, timeout=10).status_code == 200
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", str(used + 512 * 1024))
        assert fill(client) > 0
        from concurrent.futures import ThreadPoolExecutor

        def post(i: int) -> int:
            name = "join" if i % 3 == 0 else f"made-up-{i}" if i % 3 == 1 else "y" * 16384
            return requests.post(f"{server.url}/v1/forms/{name}", json=PERSON, timeout=20).status_code

        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(post, range(150)))
        ready = requests.get(f"{server.url}/readyz", timeout=10)
        log = server.output()
    assert 500 not in statuses, statuses
    view = ready.json()
    assert view["status"] != "ok"
    assert any("rate-limit Redis full" in p for p in view["problems"]), view["problems"]
    assert view["rate_limit"]["full"] is True
    assert "Traceback" not in log
    assert "y" * 300 not in log


def test_check_reports_a_full_rate_limit_redis_and_one_shared_with_the_queue(tmp_path, sandbox, redis_url):
    import subprocess
    import sys

    import redis

    config = write(tmp_path, sandbox.url, {**LIMITED, "redis_url": redis_url})
    checked = subprocess.run([sys.executable, "-m", "formrelay.cli", "check", "--config", str(config)],
                             capture_output=True, text=True, timeout=60)
    assert "rate-limit keys share the queue's Redis instance" in checked.stdout, checked.stdout
    client = redis.Redis.from_url(redis_url)
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", str(int(client.info("memory")["used_memory"]) + 256 * 1024))
    fill(client)
    checked = subprocess.run([sys.executable, "-m", "formrelay.cli", "check", "--config", str(config)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode != 0
    assert "the rate-limit Redis is full" in checked.stdout, checked.stdout

"""Serving for real: `formrelay serve` (granian) and gunicorn with the shipped config, as a user starts them.

Hostile connections, client addresses behind proxies (and through a real nginx), metrics across workers without
any variable set by the test, logs printed once in the configured format, body limits at the server, and a
graceful SIGTERM that finishes the requests and queue deliveries in flight.
"""
from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from formrelay.delivery.jobs import DONE, INFLIGHT, new_job
from formrelay.delivery.stores import SQLiteStore
from formrelay.forms.submission import Submission
from tests.servers import (
    PERSON,
    clean_env,
    get_raw,
    hostile_sockets,
    nginx,
    post_raw,
    raise_fd_limit,
    running,
    stop,
    toml,
)

pytestmark = pytest.mark.e2e
BODY = json.dumps(PERSON).encode()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "relay.toml"
    path.write_text(text)
    return path


def timed_submission(port: int) -> tuple[float, int]:
    started = time.monotonic()
    status, _, _ = post_raw(port, "/v1/forms/join", BODY, timeout=10)
    return time.monotonic() - started, status


def test_serve_answers_a_real_submission_while_hostile_sockets_are_open(tmp_path, sandbox):
    """600 hostile sockets (300 unfinished requests, 300 idle keep-alive), then 1,000 idle keep-alive."""
    raise_fd_limit()
    config = write(tmp_path, toml(sandbox_url=sandbox.url, queue_path=tmp_path / "q.sqlite3"))
    with running("serve", config, tmp_path) as relay:
        assert timed_submission(relay.port)[1] == 200  # warm: the form's definition is fetched once
        socks = hostile_sockets(relay.port, unfinished=300, idle=300)
        try:
            seconds, status = timed_submission(relay.port)
        finally:
            for s in socks:
                s.close()
        assert status == 200 and seconds < 1.0, f"answered {status} in {seconds:.2f} s behind 600 hostile sockets"
        socks = hostile_sockets(relay.port, unfinished=0, idle=1000)
        try:
            seconds, status = timed_submission(relay.port)
        finally:
            for s in socks:
                s.close()
        assert status == 200 and seconds < 1.0, f"answered {status} in {seconds:.2f} s beside 1,000 idle connections"


def test_serve_refuses_a_huge_body_before_reading_it(tmp_path, sandbox):
    import socket

    config = write(tmp_path, toml(sandbox_url=sandbox.url, queue_path=tmp_path / "q.sqlite3"))
    with running("serve", config, tmp_path, workers=1, threads=2) as relay:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as s:
            started = time.monotonic()
            s.sendall(b"POST /v1/forms/join HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
                      b"Accept: application/json\r\nContent-Length: 200000000\r\n\r\n" + b"{" * 4096)
            answer = b""
            while b"\r\n\r\n" not in answer or b'"status"' not in answer:
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
            seconds = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b'"too_large"' in answer
        assert seconds < 2.0, f"a 200 MB body should be refused at once, took {seconds:.2f} s"


@pytest.mark.parametrize("kind", ["serve", "gunicorn"])
def test_client_address_from_x_forwarded_for_only_behind_a_trusted_proxy(tmp_path, sandbox, kind):
    """0 proxies: a spoofed X-Forwarded-For changes nothing. 1 proxy: it is the visitor's address."""
    for proxies in (0, 1):
        here = tmp_path / f"p{proxies}"
        here.mkdir()
        config = write(here, toml({"rate_limit": "2/minute", "trusted_proxies": proxies}, sandbox.url,
                                  queue_path=here / "q.sqlite3"))
        with running(kind, config, here, workers=1) as relay:  # limits in memory: one process counts them all
            spoofed = [post_raw(relay.port, "/v1/forms/join", BODY, {"X-Forwarded-For": f"198.51.100.{i}"})[0]
                       for i in range(3)]
            if proxies == 0:
                assert spoofed == [200, 200, 429], "with 0 proxies every post is from 127.0.0.1"
                assert get_raw(relay.port, "/metrics", {"X-Forwarded-For": "203.0.113.7"})[0] == 200
            else:
                assert spoofed == [200, 200, 200], "behind one proxy each address is a visitor"
                same = [post_raw(relay.port, "/v1/forms/join", BODY, {"X-Forwarded-For": "198.51.100.77"})[0]
                        for _ in range(3)]
                assert same == [200, 200, 429]
                # /metrics is loopback-only: a visitor through the proxy is not loopback
                assert get_raw(relay.port, "/metrics", {"X-Forwarded-For": "203.0.113.7"})[0] == 403


def test_behind_a_real_nginx_each_visitor_has_their_own_limit(tmp_path, sandbox):
    """30 visitors posting once are all accepted; one visitor posting 15 times meets the 10/minute limit."""
    config = write(tmp_path, toml({"rate_limit": "10/minute", "trusted_proxies": 1}, sandbox.url,
                                  queue_path=tmp_path / "q.sqlite3"))
    with running("serve", config, tmp_path, workers=1) as relay, nginx(relay.port, tmp_path) as proxy:
        visitors = [post_raw(proxy, "/v1/forms/join", BODY, source=f"127.0.0.{2 + i}")[0] for i in range(30)]
        assert visitors == [200] * 30
        one = [post_raw(proxy, "/v1/forms/join", BODY, source="127.0.0.100")[0] for _ in range(15)]
        assert one == [200] * 10 + [429] * 5
        assert get_raw(proxy, "/metrics", source="127.0.0.101")[0] == 403, "a visitor through nginx may not scrape"
        assert get_raw(relay.port, "/metrics")[0] == 200, "a scrape on loopback, past the proxy, may"


@pytest.mark.parametrize("kind", ["serve", "gunicorn"])
def test_metrics_count_every_worker_as_a_user_starts_it(tmp_path, sandbox, kind):
    """No PROMETHEUS_MULTIPROC_DIR from the test: the shipped config / serve makes one (found under TMPDIR)."""
    config = write(tmp_path, toml(sandbox_url=sandbox.url, queue_path=tmp_path / "q.sqlite3"))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    with running(kind, config, tmp_path, workers=2, threads=2, env=clean_env(config, TMPDIR=str(tmp))) as relay:
        def counting_pids() -> set[str]:
            return {p.name.rsplit("_", 1)[-1].split(".")[0] for p in tmp.glob("formrelay-metrics-*/counter_*.db")}

        posted = 0
        # A new connection each time; no server promises to spread them, so post until two workers counted.
        while posted < 20 or (len(counting_pids()) < 2 and posted < 300):
            answer = requests.post(f"{relay.url}/v1/forms/join", json=PERSON, timeout=10,
                                   headers={"Connection": "close"})
            assert answer.json()["status"] == "delivered"
            posted += 1
        assert len(counting_pids()) >= 2, "the submissions should have reached both workers"
        for _ in range(6):  # whichever worker answers the scrape, it reports all of them
            text = requests.get(f"{relay.url}/metrics", timeout=10, headers={"Connection": "close"}).text
            line = next(x for x in text.splitlines()
                        if x.startswith("formrelay_submissions_total{") and 'outcome="delivered"' in x)
            assert float(line.rsplit(" ", 1)[1]) == posted
            assert "formrelay_upstream_request_seconds_bucket" in text


@pytest.mark.parametrize("kind", ["serve", "gunicorn"])
def test_logs_once_in_json_with_rejections_by_reason_only(tmp_path, sandbox, kind):
    config = write(tmp_path, toml({"rate_limit": "2/minute"}, sandbox.url, queue_path=tmp_path / "q.sqlite3",
                                  logging_format="json"))
    with running(kind, config, tmp_path, workers=1, threads=2) as relay:
        statuses = [post_raw(relay.port, "/v1/forms/join", BODY, {"X-Forwarded-For": "198.51.100.9"})[0]
                    for _ in range(2)]
        statuses.append(post_raw(relay.port, "/v1/forms/join", BODY)[0])
        assert statuses == [200, 200, 429]
    lines = [line for line in relay.output().splitlines() if line.strip()]
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"a line that is not JSON under {kind}: {line!r}")
    submissions = [r for r in records if r.get("event") == "submission"]
    assert len(submissions) == 2 and len({r["submission_id"] for r in submissions}) == 2
    assert all(r["provider"] == "ngp" and r["upstream_status"] == 200 for r in submissions)
    rejections = [r for r in records if r.get("event") == "rejection"]
    assert len(rejections) == 1 and rejections[0]["reason"] == "rate limited"
    assert "127.0.0.1" not in json.dumps(rejections[0]) and "ann@" not in relay.output()


def test_text_log_line_carries_provider_upstream_and_fields_in_error(tmp_path, sandbox):
    config = write(tmp_path, toml(sandbox_url=sandbox.url, queue_path=tmp_path / "q.sqlite3"))
    with running("serve", config, tmp_path, workers=1, threads=2) as relay:
        assert post_raw(relay.port, "/v1/forms/join", BODY)[0] == 200
        bad = json.dumps({**PERSON, "EmailAddress": "not an email", "PostalCode": ""}).encode()
        assert post_raw(relay.port, "/v1/forms/join", bad)[0] == 422
    lines = [x for x in relay.output().splitlines() if "submission" in x and "formrelay.web.routes" in x]
    assert len(lines) == 2, lines
    delivered, invalid = lines
    assert "form join (ngp):" in delivered and " delivered in " in delivered and "upstream 200 in " in delivered
    assert "[request " in delivered
    assert "invalid" in invalid and "fields in error: EmailAddress, PostalCode" in invalid
    assert "not an email" not in relay.output()


def test_sigterm_finishes_requests_and_queue_deliveries_in_flight(tmp_path, sandbox):
    """SIGTERM: stop accepting, answer the request in flight, finish the queue's delivery, exit 0."""
    queue_path = tmp_path / "q.sqlite3"
    config = write(tmp_path, toml(sandbox_url=sandbox.url, queue_path=queue_path))
    with running("serve", config, tmp_path, workers=1, threads=2) as relay:
        assert post_raw(relay.port, "/v1/forms/join", BODY)[0] == 200  # definition cached before the delay
        requests.post(f"{sandbox.url}/_control/delay", json={"provider": "ngp", "seconds": 3}, timeout=5)
        # A job due now: the embedded worker claims it and spends 3 s delivering it (longer than the request
        # below, so the exit must wait for the queue's delivery, not only for the request).
        store = SQLiteStore(str(queue_path))
        job = new_job("join", "primary", Submission(form="join", values=dict(PERSON), context={}))
        store.put(job)
        deadline = time.monotonic() + 10
        while store.get(job.id).state != INFLIGHT:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the worker never claimed the job"
            time.sleep(0.05)
        requests.post(f"{sandbox.url}/_control/delay", json={"provider": "ngp", "seconds": 1}, timeout=5)
        answers: list[int] = []
        poster = threading.Thread(target=lambda: answers.append(post_raw(relay.port, "/v1/forms/join", BODY)[0]))
        poster.start()
        time.sleep(0.3)
        relay.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        refused = False
        try:
            get_raw(relay.port, "/healthz", timeout=2)
        except OSError:
            refused = True
        poster.join(15)
        code = stop(relay.proc)
        assert answers == [200], "the request in flight at SIGTERM is answered"
        assert refused, "no new connection is taken after SIGTERM"
        assert code == 0
        finished = store.get(job.id)
        assert finished is not None and finished.state == DONE, finished
        store.close()


def test_workers_stop_when_the_master_is_killed_outright(tmp_path, sandbox):
    """kill -9 of `formrelay serve` (OOM killer, a bad supervisor) must not leave workers serving the port."""
    config = write(tmp_path, toml(sandbox_url=sandbox.url, queue_path=tmp_path / "q.sqlite3"))
    with running("serve", config, tmp_path, workers=2, threads=2) as relay:
        children = children_of(relay.proc.pid)
        assert len(children) >= 2, children
        relay.proc.send_signal(signal.SIGKILL)
        relay.proc.wait(10)
        deadline = time.monotonic() + 20
        alive = children
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [pid for pid in children if Path(f"/proc/{pid}").exists()
                     and Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"]
        assert not alive, f"workers {alive} outlived their master"
        try:
            get_raw(relay.port, "/healthz", timeout=2)
            served = True
        except OSError:
            served = False
        assert not served, "nothing may answer on the port once the master is gone"


def children_of(pid: int) -> list[int]:
    """Child processes of pid, from /proc (each process's parent in its stat line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                found.append(int(entry.name))
    return found

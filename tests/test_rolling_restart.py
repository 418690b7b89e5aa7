"""Restarts without 502s (issue 32): the recipe of docs/restarts.md, run for real.

Debian's nginx on 127.0.0.1 in front of two `formrelay serve` instances that share one queue (the same SQLite
file: WAL, safe for the processes of one host). Under a steady stream of submissions (the CRM failing for the
first part, so many are queued), each instance is restarted in turn: SIGTERM, wait for it to exit, start it
again, wait until it answers, then the other. No answer may be a 502 (or anything but 200/202), and every
submission answered `delivered` or `queued` reaches the CRM exactly once.
"""
from __future__ import annotations

import collections
import contextlib
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port, wait_until_serving
from tests.servers import PERSON, ROOT, clean_env, nginx_with, server_command, stop, toml

pytestmark = pytest.mark.e2e

# The nginx part of the recipe (docs/restarts.md, kept in step with it). Both instances in one upstream, never
# marked down (max_fails=0: a stopped one costs a refused connect, then the other is tried). A request that
# reached a stopping instance's listen queue but was never accepted is reset: nginx may send it to the other
# instance (non_idempotent) because it carries an Idempotency-Key, the client's own or nginx's $request_id,
# the same on every try, so the relay never delivers it twice.
NGINX = """  map $http_idempotency_key $formrelay_idempotency_key {{
    ""      $request_id;
    default $http_idempotency_key;
  }}
  upstream formrelay {{
    server 127.0.0.1:{a} max_fails=0;
    server 127.0.0.1:{b} max_fails=0;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://formrelay;
      proxy_next_upstream error timeout non_idempotent;
      proxy_next_upstream_tries 2;
      proxy_connect_timeout 2s;
      proxy_set_header Idempotency-Key $formrelay_idempotency_key;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
    }}
  }}"""


class Instance:
    """One `formrelay serve` on a fixed port, restartable on it."""

    def __init__(self, config: Path, port: int, tmp_path: Path) -> None:
        self.config, self.port, self.tmp_path = config, port, tmp_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.tmp_path / f"serve-{self.port}-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(server_command("serve", self.config, self.port, workers=1, threads=8), cwd=ROOT,
                                     env=clean_env(self.config), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        wait_until_serving(f"http://127.0.0.1:{self.port}", self.proc, 30)

    def restart(self) -> float:
        """SIGTERM, wait for the exit (in-flight requests are finished), start again; the seconds it was away."""
        assert self.proc is not None
        began = time.monotonic()
        assert stop(self.proc, timeout=60) is not None, "did not stop within 60 s"
        self.start()
        return time.monotonic() - began


def test_a_rolling_restart_behind_nginx_loses_no_request(tmp_path, sandbox):
    queue = tmp_path / "queue.sqlite3"
    config = tmp_path / "relay.toml"
    config.write_text(toml({"answer_within": 1.0, "breaker_reset": 0.5}, sandbox.url, queue_path=queue))
    requests.post(f"{sandbox.url}/_control/fail", json={"provider": "ngp", "status": 503, "count": 40}, timeout=5)
    first, second = Instance(config, free_port(), tmp_path), Instance(config, free_port(), tmp_path)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(lambda: [stop(i.proc) for i in (first, second) if i.proc is not None])
        first.start()
        second.start()
        port = cleanup.enter_context(nginx_with(NGINX.format(a=first.port, b=second.port, port="{port}"), tmp_path))
        answers: collections.Counter[int] = collections.Counter()
        accepted: list[str] = []
        errors: list[str] = []
        done = threading.Event()
        lock = threading.Lock()

        def client(n: int) -> None:
            session = requests.Session()
            i = 0
            while not done.is_set():
                email = f"rolling{n}-{i}-{tag}@example.org"
                i += 1
                try:
                    answer = session.post(f"http://127.0.0.1:{port}/v1/forms/join", timeout=30,
                                          json={**PERSON, "EmailAddress": email})
                except requests.RequestException as exc:
                    with lock:
                        errors.append(f"{email}: {exc.__class__.__name__}")
                    continue
                with lock:
                    answers[answer.status_code] += 1
                    if answer.status_code in (200, 202):
                        accepted.append(email)
                time.sleep(0.02)

        tag = os.urandom(4).hex()
        clients = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for thread in clients:
            thread.start()
        time.sleep(2)
        away = [first.restart(), second.restart(), first.restart()]  # under the stream, one after the other
        time.sleep(2)
        done.set()
        for thread in clients:
            thread.join(60)
        assert not errors, errors[:5]
        assert set(answers) <= {200, 202}, answers  # no 502, nor any other failure
        assert answers[202] > 0 and sum(answers.values()) > 100, answers

        def received() -> collections.Counter[str]:
            got = requests.get(f"{sandbox.url}/_control/received/ngp", timeout=10).json()
            return collections.Counter(r["fields"]["EmailAddress"][0] for r in got if "EmailAddress" in r["fields"])

        deadline = time.monotonic() + 120
        while not set(accepted) <= set(received()) and time.monotonic() < deadline:
            time.sleep(0.5)
        got = received()
        missing = set(accepted) - set(got)
        queue = requests.get(f"http://127.0.0.1:{first.port}/readyz", timeout=5).json()
        assert not missing, (f"{len(missing)} of {len(accepted)} accepted submission(s) never delivered; "
                             f"{sum(got.values())} received; queue {queue['queue']}, problems {queue['problems']}")
        twice = [email for email in accepted if got[email] > 1]
        assert not twice, f"delivered more than once: {twice[:5]}"
        print(f"answers {dict(answers)}, instances away {[round(a, 1) for a in away]} s")
        requests.post(f"{sandbox.url}/_control/recover", timeout=5)

"""An end-to-end submission with nothing but formrelay's own dependencies (no pytest): run by the lowest-versions check.

`python -m tests.lowest_e2e` from the repository, in a venv where formrelay is installed (tests/test_lowest_versions.py
makes one with each direct dependency at its declared lower bound). It starts the sandbox CRMs in this process and
`formrelay serve` (the venv's own command) on 127.0.0.1, then posts one submission to a form of each provider and
one that is queued (the CRM answers 503 once) and delivered by the worker. Prints one line per check; exit 0 = all
delivered.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests


def value_toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(value_toml(v) for v in value) + "]"
    return json.dumps(value)  # a JSON string of ASCII text is a TOML basic string


def to_toml(table: dict[str, Any], prefix: str = "") -> str:
    """A nested dict as TOML: plain keys first, then each sub-table (or array of tables) under its dotted name."""
    def key(name: str) -> str:
        return name if name.replace("-", "").replace("_", "").isalnum() else json.dumps(name)

    lines, subtables = [], []
    for name, value in table.items():
        if isinstance(value, dict):
            subtables.append((name, value))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            subtables += [(name, [item]) for item in value]  # [[forms.x.webhooks]]
        else:
            lines.append(f"{key(name)} = {value_toml(value)}")
    text = "\n".join(lines) + "\n"
    for name, value in subtables:
        dotted = f"{prefix}.{key(name)}" if prefix else key(name)
        if isinstance(value, list):
            text += f"\n[[{dotted}]]\n" + to_toml(value[0], dotted)
        else:
            text += f"\n[{dotted}]\n" + to_toml(value, dotted)
    return text


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SUBMISSIONS = {
    "petition": {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009"},
    "write-your-mp": {"First Name": "Ann", "Last Name": "Lee", "Postcode": "SW1A 1AA", "Email Address": "ann@example.org"},
    "clean-air": {"email": "ann@example.org", "given_name": "Ann", "postal_code": "20009"},
    "toolkit": {"email": "ann@example.org", "first_name": "Ann"},
}


def bounded_answers() -> int:
    """The transport's bound holds with these versions: a gzip bomb (200 MB of zeros in 190 KB) is refused having
    held about 1 MB. urllib3 before 2.6.0 decompressed each network read whole (48 MB here): its lower bound."""
    import gzip
    import http.server
    import threading
    import tracemalloc

    from formrelay.core.errors import TryLater
    from formrelay.transport import Upstream

    bomb = gzip.compress(b"0" * 200_000_000, 9)

    class Bomb(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            try:
                self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(200)
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(bomb)))
                self.end_headers()
                self.wfile.write(bomb)
            except OSError:  # the relay stopped reading, as it should
                self.close_connection = True

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Bomb)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    upstream = Upstream("bomb", 2.0, 5.0, "formrelay-lowest")
    tracemalloc.start()
    try:
        upstream.call("POST", f"http://127.0.0.1:{server.server_address[1]}/", data=b"{}")
        refused = False
    except TryLater:
        refused = True
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    server.shutdown()
    print(f"gzip bomb: {'refused' if refused else 'ACCEPTED'}, peak {peak / 1e6:.1f} MB")
    return 0 if refused and peak < 8e6 else 1


def main() -> int:
    import logging

    from formrelay.sandbox import ServerThread, create_sandbox
    from formrelay.web.demo import demo_config

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the sandbox's access log

    sandbox = ServerThread(create_sandbox()).start()
    work = Path(tempfile.mkdtemp(prefix="formrelay-lowest-"))
    config = demo_config(sandbox.url, str(work / "queue.sqlite3"))
    config["relay"]["rate_limit"] = ""
    config["queue"].update({"backoff_base": 0.2, "backoff_cap": 1.0, "poll_interval": 0.1})
    (work / "formrelay.toml").write_text(to_toml(config))
    port = free_port()
    command = [str(Path(sys.executable).parent / "formrelay"), "serve", "--config", str(work / "formrelay.toml"),
               "--port", str(port), "--workers", "1", "--threads", "4"]
    log = (work / "serve.log").open("wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    failed = 0
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{url}/healthz", timeout=2)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    print("formrelay serve did not start")
                    return 1
                time.sleep(0.1)
        for slug, body in SUBMISSIONS.items():
            answer = requests.post(f"{url}/v1/forms/{slug}", json=body, headers={"Accept": "application/json"},
                                   timeout=30)
            status = answer.json().get("status")
            print(f"{slug}: HTTP {answer.status_code} {status}")
            failed += status != "delivered"
        requests.post(f"{sandbox.url}/_control/fail", json={"provider": "ngp", "status": 503, "count": 1}, timeout=5)
        body = {**SUBMISSIONS["petition"], "EmailAddress": "queued@example.org"}
        answer = requests.post(f"{url}/v1/forms/petition", json=body, headers={"Accept": "application/json"},
                               timeout=30)
        print(f"petition after a 503: HTTP {answer.status_code} {answer.json().get('status')}")
        failed += answer.json().get("status") != "queued"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            got = requests.get(f"{sandbox.url}/_control/received/ngp", timeout=5).json()
            if any("queued@example.org" in json.dumps(r) for r in got):
                print("queued submission: delivered by the worker")
                break
            time.sleep(0.2)
        else:
            print("queued submission: not delivered within 20 s")
            failed += 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        sandbox.stop()
    if failed:
        print((work / "serve.log").read_text(errors="replace")[-4000:])
    failed += bounded_answers()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

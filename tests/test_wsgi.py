"""The relay runs under any WSGI server (`wsgi:app`) and as `formrelay serve`, configured by FORMRELAY_CONFIG."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config_file(tmp_path, sandbox_url):
    path = tmp_path / "relay.toml"
    path.write_text(f'[providers.ngp]\nbase_url = "{sandbox_url}/ngp/v2"\n'
                    '[forms.join]\nprovider = "ngp"\nform_id = "demo-petition"\n')
    return path


def test_wsgi_module_builds_the_app_from_formrelay_config(tmp_path, sandbox):
    path = config_file(tmp_path, sandbox.url)
    code = ("import wsgi; c = wsgi.app.test_client(); r = c.get('/v1/forms/join'); "
            "print(r.status_code, r.get_json()['fields'][0]['name'])")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "FORMRELAY_CONFIG": str(path)})
    assert done.stdout.split() == ["200", "FirstName"], done.stderr


def test_formrelay_serve_answers_over_http(tmp_path, sandbox):
    path = config_file(tmp_path, sandbox.url)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "formrelay.cli", "serve", "--config", str(path), "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "relay did not start"
                time.sleep(0.1)
        assert answer.json()["status"] == "ok"
        posted = requests.post(f"http://127.0.0.1:{port}/v1/forms/join", json={
            "FirstName": "Ann", "LastName": "Lee", "EmailAddress": "a@example.org", "PostalCode": "20009"}, timeout=5)
        assert posted.json()["status"] == "delivered"
    finally:
        proc.terminate()
        proc.wait(timeout=10)

"""Shared fixtures: app/client/runner (Flask tutorial style), providers faked with `responses`, and real local servers."""
from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses

from formrelay import create_app
from formrelay.sandbox import ServerThread, create_sandbox
from formrelay.sandbox.ngp import PETITION

NGP_BASE = "https://ngp.test/v2"
NGP_FORM_URL = f"{NGP_BASE}/forms/demo-petition"
NGP_KEY = "ngp-secret-key-0b1e6c1a-4f"

NGP_SUCCESS = {
    "page": {"confirmationActionType": "DisplayContent", "confirmationPageContent": "<p>Thanks &amp; welcome!</p>"},
    "response": {},
    "errors": [],
    "resultCode": "Success",
}


def base_config(**relay: Any) -> dict[str, Any]:
    """A config with one NGP form, rate limits off unless a test turns them on."""
    return {
        "relay": {"allowed_origins": ["https://www.example.org"], "rate_limit": "", **relay},
        "providers": {"ngp": {"base_url": NGP_BASE, "api_key": NGP_KEY}},
        "forms": {
            "join": {"provider": "ngp", "form_id": "demo-petition", "success_url": "https://www.example.org/thanks"},
        },
    }


@pytest.fixture
def ngp_definition() -> dict[str, Any]:
    return copy.deepcopy(PETITION)


@pytest.fixture
def config() -> dict[str, Any]:
    return base_config()


@pytest.fixture
def mocked(ngp_definition: dict[str, Any]) -> Iterator[responses.RequestsMock]:
    """Every upstream call is faked at the HTTP layer; an unexpected one fails the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(NGP_FORM_URL, json=ngp_definition)
        yield rsps


@pytest.fixture
def app(config: dict[str, Any], mocked: responses.RequestsMock) -> Any:
    app = create_app(config)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def runner(app: Any) -> Any:
    return app.test_cli_runner()


@pytest.fixture
def sandbox() -> Iterator[ServerThread]:
    """The sandbox providers on a real 127.0.0.1 port."""
    server = ServerThread(create_sandbox()).start()
    yield server
    server.stop()


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start any WSGI app on 127.0.0.1; stopped after the test."""
    started: list[ServerThread] = []

    def start(app: Any) -> ServerThread:
        server = ServerThread(app).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def received(sandbox: ServerThread, provider: str) -> list[dict[str, Any]]:
    return requests.get(f"{sandbox.url}/_control/received/{provider}", timeout=5).json()


def _need(what: str) -> None:
    """Skip locally when a system tool is missing; in CI (`CI` set) that is a failure, never a silent skip."""
    import os

    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI (.ci/run installs it)")
    pytest.skip(f"{what} is not installed")


def wait_until_serving(url: str, proc: Any, timeout: float = 30) -> None:
    """Poll {url}/healthz until a freshly started server process answers; fail if it exits or takes too long."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(f"{url}/healthz", timeout=2)
            return
        except (requests.ConnectionError, requests.Timeout):  # a loaded machine may boot workers slowly
            assert proc.poll() is None, f"{url}: the server process exited"
            assert time.monotonic() < deadline, f"{url}: the server did not start within {timeout} s"
            time.sleep(0.05)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_url(tmp_path) -> Iterator[str]:
    """A throwaway redis-server on 127.0.0.1 (Debian's redis-server)."""
    import shutil
    import subprocess
    import time

    binary = shutil.which("redis-server")
    if binary is None:
        _need("redis-server")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    client.close()
    proc.terminate()
    proc.wait(timeout=10)

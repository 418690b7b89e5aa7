"""Shared fixtures: app/client/runner (Flask tutorial style), providers faked with `responses`, and real local servers."""
from __future__ import annotations

import copy
from collections import deque
import fcntl
import os
import random
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
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


# -- Parallel runs (pytest-xdist; docs/testing.md) ------------------------------------------------------------
# Tests that share something expensive made once per process run in one worker, one after the other: the
# container tests share the images they build; the WordPress browser tests one WordPress site; each other
# browser module its module-scoped servers and npm installs. Every other test is a unit of its own.
GROUPS = {"tests/deploy/test_container.py": "containers", "tests/deploy/test_compose.py": "containers",
          "tests/browser/test_wordpress.py": "wordpress"}
# The tests that take longest (seconds of a serial run on 2 cores, `--durations`), started first so that the
# workers finish together rather than one of them starting a 20 s test at the end.
SLOW_FIRST = (
    "tests/test_lowest_versions.py::test_the_lowest_allowed_versions_deliver_submissions_end_to_end",
    "tests/test_redis_outage.py::test_redis_stopped_for_15_seconds_under_load",
    "tests/deploy/test_release.py::test_the_wheel_alone_runs_the_demo",
    "tests/test_supporters.py::test_a_process_killed_after_the_deadline_loses_nothing",
    "tests/test_supporters.py::test_a_slow_crm_keeps_no_one_waiting_and_delivers_each_once",
    "tests/test_e2e_queue.py::test_outage_then_recovery_delivers_every_submission_exactly_once",
    "tests/test_supporters.py::test_an_unreachable_crm_at_cold_start_starves_no_thread",
    "tests/test_e2e_operator.py::test_an_outage_handled_by_an_operator_from_the_command_line",
    "tests/test_e2e_upstream.py::test_a_dripping_webhook_receiver_does_not_hold_the_queue",
)


def schedule_group(nodeid: str) -> str | None:
    """The unit a test is scheduled in, when it is not alone: see GROUPS."""
    path = nodeid.split("::")[0]
    return GROUPS.get(path) or (path if path.startswith("tests/browser/") else None)


def _rank(item: pytest.Item) -> int:
    """Containers (a minute or more), then WordPress, the slow tests, the browser modules, the rest."""
    group = schedule_group(item.nodeid)
    if group in ("containers", "wordpress"):
        return ("containers", "wordpress").index(group)
    slow = next((i for i, name in enumerate(SLOW_FIRST) if item.nodeid.startswith(name)), None)
    if slow is not None:
        return 2 + slow
    return 2 + len(SLOW_FIRST) + (0 if group else 1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker collects the same; a serial run keeps the files' order
        items.sort(key=_rank)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadscope` (addopts) with our scopes: a group of GROUPS, else the test alone.

    Not `--dist loadgroup` with xdist_group marks: that mode renames each test's node id, which pytest 9.2 no
    longer lets a plugin do, and the groups are silently lost (pytest-dev/pytest-xdist#1386). Any other --dist
    keeps xdist's own scheduling."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Groups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return schedule_group(nodeid) or nodeid

    return Groups(config, log)


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


# -- Ports: each test process (xdist worker) takes its own, never one another process could be handed ----------
# A port from bind(0) lies in the kernel's ephemeral range, which outgoing connections use too: between the
# moment a test picks it and the moment the server it starts binds it (a second or more for `formrelay serve`),
# a client socket of another worker may take it. So the ports come from below that range, a block per worker
# (gw0, gw1, ... of PYTEST_XDIST_WORKER), handed out in turn, each never twice in one run; a lock file per port
# (flock, held while the port is among this process's last PORT_LOCKS_HELD) keeps two test runs on one machine
# from starting servers on the same one; after that the server has bound it, and the probe bind sees that.
PORTS_LOW, PORTS_HIGH = 20000, 32768  # below Linux's default ephemeral range (32768-60999)
PORT_LOCKS = Path(tempfile.gettempdir()) / "formrelay-test-ports"
PORT_LOCKS_HELD = 64
_given_ports: set[int] = set()
_port_locks: deque[Any] = deque()  # the open, locked files of the last ports handed out
_next_port: list[int] = []


def _port_block() -> range:
    """This process's block: PORTS_LOW..PORTS_HIGH split evenly between the workers of the run."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    size = (PORTS_HIGH - PORTS_LOW) // count
    return range(PORTS_LOW + index * size, PORTS_LOW + (index + 1) * size)


def _lock_port(port: int) -> bool:
    """Reserve the port for this process: its lock file, then a bind that shows nothing else holds it."""
    PORT_LOCKS.mkdir(exist_ok=True)
    handle = open(PORT_LOCKS / str(port), "a")  # noqa: SIM115 - kept open: closing it releases the lock
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return False
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:  # in use by something that is not a test run (or still in TIME_WAIT)
            handle.close()
            return False
    _port_locks.append(handle)
    while len(_port_locks) > PORT_LOCKS_HELD:
        _port_locks.popleft().close()
    return True


def free_port() -> int:
    """A loopback port nothing listens on, this process's alone for the rest of the run."""
    block = _port_block()
    if not _next_port:
        _next_port.append(random.randrange(len(block)))  # two runs at once start apart
    for _ in range(len(block)):
        port = block[_next_port[0] % len(block)]
        _next_port[0] += 1
        if port not in _given_ports and _lock_port(port):
            _given_ports.add(port)
            return port
    raise RuntimeError(f"no free port left in {block}")


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

"""What lets the suite run in parallel (docs/testing.md): ports of each worker's own, never handed out twice or to
another test run, and the units xdist schedules."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import PORT_LOCKS_HELD, _port_block, free_port, schedule_group

ROOT = Path(__file__).resolve().parent.parent


def ephemeral_range() -> range:
    low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    return range(low, high + 1)


def test_free_ports_are_distinct_bindable_and_outside_the_ephemeral_range():
    ports = [free_port() for _ in range(40)]
    assert len(set(ports)) == len(ports)
    block, ephemeral = _port_block(), ephemeral_range()
    assert all(port in block and port not in ephemeral for port in ports), (block, ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # nothing else holds it


def test_another_test_run_is_never_handed_the_ports_this_one_just_took():
    """Two checkouts' suites on one machine, both worker gw0: the port locks keep their servers apart."""
    mine = [free_port() for _ in range(PORT_LOCKS_HELD)]
    start = _port_block().index(mine[0])  # the other run starts where this one did: without the locks, same ports
    code = (f"import json, tests.conftest as c; c._next_port.append({start}); "
            f"print(json.dumps([c.free_port() for _ in range({2 * PORT_LOCKS_HELD})]))")
    env = {**os.environ, "PYTEST_XDIST_WORKER": os.environ.get("PYTEST_XDIST_WORKER", "gw0"),
           "PYTEST_XDIST_WORKER_COUNT": os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    theirs = set(json.loads(done.stdout))
    assert len(theirs) == 2 * PORT_LOCKS_HELD and not set(mine) & theirs


def test_tests_sharing_an_expensive_fixture_are_scheduled_as_one_unit():
    assert schedule_group("tests/deploy/test_container.py::test_x") == "containers"
    assert schedule_group("tests/deploy/test_compose.py::test_y[a]") == "containers"
    assert schedule_group("tests/browser/test_wordpress.py::test_z") == "wordpress"
    assert schedule_group("tests/browser/test_funnel.py::test_w") == "tests/browser/test_funnel.py"
    assert schedule_group("tests/test_cards.py::test_v") is None  # alone: any free worker takes it

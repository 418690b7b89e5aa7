"""CPU per submission on the relay's hot path, in-process, set against the bare forwarder (about 30 s).

    python benchmarks/hotpath.py [--count N]

Server-level figures (`benchmarks/serving.py`) move with whatever else the machine runs; these do not depend on
a server or on the load generator, so a change of a few microseconds shows. On 127.0.0.1 against the sandbox
NGP (one gunicorn process), it prints:

- CPU ms per NGP submission through the relay and through `benchmarks/forwarder.py` (Flask test clients, the
  same upstream), alternating in chunks of 100 so that drift hits both alike; with the relay's log line going
  to a file and its metrics in multiprocess mode, as under `formrelay serve`;
- CPU ms of one upstream call: the providers' `Provider.request` against requests' own `Session.request` with
  the same session, body and headers.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from loadgen import request_once
from targets import FAKE_THREADS, HERE, HOST, NGP_BODY, ROOT, Servers, free_port, relay_config, wait_until


def per_submission(fake: str, workdir: Path, count: int) -> dict[str, float]:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(workdir)
    from formrelay.metrics import use_multiprocess

    use_multiprocess()
    from formrelay import create_app

    app = create_app(relay_config(fake, workdir))
    log_file = open(workdir / "relay.log", "w")  # noqa: SIM115 (closed below)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(log_file)
    os.environ["FORWARDER_UPSTREAM"] = f"{fake}/ngp/v2/forms/demo-petition"
    spec = importlib.util.spec_from_file_location("bench_forwarder", HERE / "forwarder.py")
    assert spec is not None and spec.loader is not None
    forwarder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(forwarder)
    clients = {"relay": app.test_client(), "forwarder": forwarder.app.test_client()}
    spent = dict.fromkeys(clients, 0.0)
    try:
        for client in clients.values():
            for _ in range(50):
                client.post("/v1/forms/join", json=NGP_BODY)
        for _ in range(max(1, count // 100)):
            for name, client in clients.items():
                started = time.process_time()
                for _ in range(100):
                    if client.post("/v1/forms/join", json=NGP_BODY).status_code != 200:
                        raise RuntimeError(f"{name} did not answer 200")
                spent[name] += time.process_time() - started
    finally:
        app.extensions["formrelay"].close()
        log_file.close()
    done = max(1, count // 100) * 100
    return {name: seconds * 1000 / done for name, seconds in spent.items()}


def upstream_call(fake: str, count: int) -> dict[str, float]:
    from formrelay.core.config import RelaySettings
    from formrelay.providers.ngp import NGP, NGPSettings

    provider = NGP(NGPSettings(base_url=f"{fake}/ngp/v2", api_key="bench-key"), RelaySettings())
    url = f"{fake}/ngp/v2/forms/demo-petition"
    pairs = [(k, v) for k, v in NGP_BODY.items()] + [("type", "PetitionForm")]
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=UTF-8", "Accept": "application/json"}
    calls = {
        "Provider.request": lambda: provider.request("POST", url, data=pairs, headers=headers).json(),
        "requests Session.request": lambda: provider.http.request("POST", url, data=pairs, headers=headers,
                                                                  timeout=provider.timeout, proxies={}).json(),
    }
    out = dict.fromkeys(calls, 0.0)
    try:
        for _ in range(5):
            for name, call in calls.items():
                for _ in range(20):
                    call()
                started = time.process_time()
                for _ in range(count // 5):
                    call()
                out[name] += time.process_time() - started
    finally:
        provider.close()
    return {name: seconds * 1000 / (count // 5 * 5) for name, seconds in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=3000, help="submissions through each target")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    workdir = Path(tempfile.mkdtemp(prefix="formrelay-hotpath-"))
    servers = Servers(workdir)
    try:
        port = free_port()
        proc = servers.gunicorn("fake", "formrelay.sandbox:create_sandbox()", port, 1, FAKE_THREADS, ROOT)
        wait_until(lambda: request_once(port, "GET", "/_control/calls")[0] == 200, 30, "fake", proc)
        fake = f"http://{HOST}:{port}"
        calls = upstream_call(fake, args.count)
        submissions = per_submission(fake, workdir, args.count)
    finally:
        servers.stop_all()
    print("\n| in-process CPU per NGP submission | ms |\n|---|---|")
    for name, ms in submissions.items():
        print(f"| {name} | {ms:.3f} |")
    print(f"| relay / forwarder | {submissions['relay'] / submissions['forwarder']:.3f} |")
    print("\n| one upstream call (NGP post, same session) | CPU ms |\n|---|---|")
    for name, ms in calls.items():
        print(f"| {name} | {ms:.3f} |")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())

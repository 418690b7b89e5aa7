"""Queue N submissions during an outage, end the outage, and time the drain; count losses and duplicates.

    python benchmarks/queue_drain.py [--count 10000] [--threads 4] [--rate 200/second]

The relay and the sandbox NGP run on 127.0.0.1; submissions arrive over real HTTP. `--rate` holds the
worker to a provider's allowed rate with the relay's own Budget (as ENS and Action Network do).
"""
from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from formrelay import create_app  # noqa: E402
from formrelay.budget import Budget  # noqa: E402
from formrelay.sandbox import ServerThread, create_sandbox  # noqa: E402


def main() -> None:
    import logging

    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rate", default=None, help="e.g. 4/second: hold deliveries to this rate")
    args = parser.parse_args()

    sandbox = ServerThread(create_sandbox()).start()
    workdir = Path(tempfile.mkdtemp(prefix="formrelay-bench-"))
    app = create_app({
        "relay": {"rate_limit": "", "global_rate_limit": ""},  # one client sends them all: no ceiling
        "providers": {"ngp": {"base_url": f"{sandbox.url}/ngp/v2", "api_key": "sandbox-ngp-api-key"}},
        "forms": {"join": {"provider": "ngp", "form_id": "demo-petition"}},
        "queue": {"path": str(workdir / "queue.sqlite3"), "backoff_base": 0.05, "backoff_cap": 0.5,
                  "poll_interval": 0.02},
    })
    relay_app = app.extensions["formrelay"]
    if args.rate:
        budget = Budget("bench", args.rate)
        deliver = relay_app.providers["ngp"].deliver

        def throttled(*a, **kw):
            budget.take(wait=60)
            return deliver(*a, **kw)

        relay_app.providers["ngp"].deliver = throttled
    relay = ServerThread(app).start()
    requests.post(f"{sandbox.url}/_control/fail", json={"provider": "ngp", "status": 503, "count": 10**6}, timeout=5)

    session = requests.Session()

    def submit(i: int) -> int:
        body = {"FirstName": "Bench", "LastName": f"L{i}", "EmailAddress": f"p{i}@example.org", "PostalCode": "20009"}
        return session.post(f"{relay.url}/v1/forms/join", json=body, timeout=30).status_code

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        codes = collections.Counter(pool.map(submit, range(args.count)))
    queued_in = time.perf_counter() - started
    depth = relay_app.queue_stats()["depth"]

    requests.post(f"{sandbox.url}/_control/recover", timeout=5)
    worker = relay_app.worker(threads=args.threads).start()
    started = time.perf_counter()
    while relay_app.queue_stats()["depth"] and time.perf_counter() - started < 3600:
        time.sleep(0.05)
    drained_in = time.perf_counter() - started
    worker.stop()

    got = requests.get(f"{sandbox.url}/_control/received/ngp", timeout=60).json()
    names = collections.Counter(r["fields"]["LastName"][0] for r in got)
    expected = {f"L{i}" for i in range(args.count)}
    lost = len(expected - set(names))
    duplicates = sum(n - 1 for n in names.values() if n > 1)
    print(f"| submissions | answered 202 | queued in | depth | drain threads | rate | drained in | per second | lost | duplicates |")
    print(f"|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.count} | {codes.get(202, 0)} | {queued_in:.1f} s | {depth} | {args.threads} | {args.rate or 'unlimited'} "
          f"| {drained_in:.1f} s | {args.count / drained_in:.0f} | {lost} | {duplicates} |")
    relay.stop()
    sandbox.stop()
    sys.exit(1 if lost or duplicates or codes.get(202, 0) != args.count else 0)


if __name__ == "__main__":
    main()

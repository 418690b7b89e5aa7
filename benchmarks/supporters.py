"""How long a supporter waits when the CRM is slow, when it hangs, and in a surge; and whether all arrive once.

    python benchmarks/supporters.py [--only slow,hanging,surge] [--delay 8] [--surge 1000]

`formrelay serve` runs as a child process against the sandbox NGP and Action Network on 127.0.0.1; supporters
post over real HTTP, each from its own 127.x.y.z source address (distinct clients for the per-address limit).

- slow: NGP answers after --delay seconds; 24 NGP supporters post at once and an Action Network supporter 0.2 s
  later. Prints each group's p50/p99/max wait, and the time until all 24 reached NGP (and how many copies).
- hanging: NGP takes requests and never answers; 24 supporters at once, then 24 more once the breaker is open;
  the CRM recovers and everything queued must arrive once.
- surge: --surge distinct supporters as fast as 32 connections go, under the default config (600/minute
  relay-wide, 10/minute per address), then one address posting 150 times.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from formrelay.sandbox import ServerThread, create_sandbox  # noqa: E402


def person(i: int) -> dict[str, str]:
    letters = "".join("abcdefghij"[int(d)] for d in str(i))
    return {"FirstName": f"P{letters}", "LastName": f"L{i}", "EmailAddress": f"p{i}@example.org",
            "PostalCode": "20009"}


def post_from(source: str, url: str, body: dict) -> tuple[int, float]:
    parts = url.split("/", 3)
    host, port = parts[2].split(":")
    started = time.perf_counter()
    conn = http.client.HTTPConnection(host, int(port), timeout=60, source_address=(source, 0))
    try:
        conn.request("POST", "/" + parts[3], body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status, time.perf_counter() - started
    finally:
        conn.close()


def source(i: int) -> str:
    return f"127.{10 + i // 250}.{i % 250}.{1 + (i // 62500) % 250}"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(label: str, results: list[tuple[int, float]]) -> None:
    waits = [w for _, w in results]
    codes = Counter(c for c, _ in results)
    print(f"  {label:<34} n={len(results):<5} p50 {statistics.median(waits) * 1000:8.0f} ms   "
          f"p99 {pct(waits, 0.99) * 1000:8.0f} ms   max {max(waits) * 1000:8.0f} ms   "
          f"answers {dict(sorted(codes.items()))}")


class Relay:
    def __init__(self, workdir: Path, sandbox_url: str, relay: str = "", queue: str = "") -> None:
        config = workdir / "relay.toml"
        config.write_text(f"""
[relay]
{relay}
[providers.ngp]
base_url = "{sandbox_url}/ngp/v2"
api_key = "sandbox-ngp-api-key"
[providers.actionnetwork]
base_url = "{sandbox_url}/actionnetwork/api/v2"
[forms.join]
provider = "ngp"
form_id = "demo-petition"
[forms.sign]
provider = "actionnetwork"
action = "petition"
action_id = "air"
[queue]
path = "{workdir / 'q.sqlite3'}"
{queue}
[logging]
level = "WARNING"
""")
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "formrelay.cli", "serve", "--config", str(config),
                                      "--port", str(self.port)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=open(workdir / "relay.log", "w"), env={**os.environ})
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{self.url}/healthz", timeout=1)
                break
            except requests.RequestException:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise SystemExit("the relay did not start; see " + str(workdir / "relay.log"))
                time.sleep(0.1)
        requests.get(f"{self.url}/v1/forms/join", timeout=10)  # warm: definitions cached
        requests.get(f"{self.url}/v1/forms/sign", timeout=10)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def ngp_emails(sandbox: ServerThread) -> list[str]:
    got = requests.get(f"{sandbox.url}/_control/received/ngp", timeout=10).json()
    return [r["fields"]["EmailAddress"][0] for r in got]


def control(sandbox: ServerThread, what: str, **spec: object) -> None:
    requests.post(f"{sandbox.url}/_control/{what}", json=spec, timeout=5)


def until_delivered(sandbox: ServerThread, expected: set[str], limit: float) -> tuple[float | None, int]:
    """Seconds until every expected address reached NGP (None past `limit`), and the copies beyond one each."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        got = ngp_emails(sandbox)
        if expected <= set(got):
            time.sleep(1.0)  # would a copy follow?
            got = ngp_emails(sandbox)
            return time.monotonic() - started - 1.0, len(got) - len(set(got))
        time.sleep(0.2)
    got = ngp_emails(sandbox)
    return None, len(got) - len(set(got))


def slow(sandbox: ServerThread, workdir: Path, delay: float) -> None:
    print(f"\nslow CRM: NGP answers after {delay:g} s; answer_within 3 s (default); [queue] workers = 8")
    relay = Relay(workdir, sandbox.url, queue="workers = 8\nbackoff_base = 0.5")
    try:
        control(sandbox, "delay", provider="ngp", seconds=delay)
        url = f"{relay.url}/v1/forms/join"
        with ThreadPoolExecutor(25) as pool:
            ngp = [pool.submit(post_from, source(i), url, person(i)) for i in range(24)]
            time.sleep(0.2)
            an = pool.submit(post_from, source(999), f"{relay.url}/v1/forms/sign", {"email": "an@example.org"})
            results = [f.result() for f in ngp]
            summary("24 NGP supporters", results)
            summary("1 Action Network supporter", [an.result()])
        took, copies = until_delivered(sandbox, {f"p{i}@example.org" for i in range(24)}, 120)
        print(f"  all 24 at NGP after {took:.1f} s, extra copies: {copies}" if took is not None
              else f"  NOT all 24 at NGP within 120 s; extra copies: {copies}")
    finally:
        relay.stop()
        control(sandbox, "reset")


def hanging(sandbox: ServerThread, workdir: Path) -> None:
    print("\nhanging CRM: NGP never answers (timeout 10 s); breaker_reset = 5; then NGP recovers")
    relay = Relay(workdir, sandbox.url, relay="breaker_reset = 5", queue="workers = 4\nbackoff_base = 0.5")
    try:
        control(sandbox, "hang", provider="ngp", seconds=600)
        url = f"{relay.url}/v1/forms/join"
        with ThreadPoolExecutor(24) as pool:
            summary("24 supporters, breaker closed", list(pool.map(lambda i: post_from(source(i), url, person(i)),
                                                                 range(24))))
        time.sleep(11)  # the attempts in flight time out: the breaker opens
        state = requests.get(f"{relay.url}/readyz", timeout=5).json()
        print(f"  readiness: {state['status']}, breaker {state['providers']['ngp']['breaker']['state']}")
        with ThreadPoolExecutor(24) as pool:
            summary("24 supporters, breaker open", list(pool.map(lambda i: post_from(source(i), url, person(i)),
                                                               range(24, 48))))
        control(sandbox, "recover")
        took, copies = until_delivered(sandbox, {f"p{i}@example.org" for i in range(48)}, 120)
        print(f"  after recovery all 48 at NGP in {took:.1f} s, extra copies: {copies}" if took is not None
              else f"  NOT all 48 at NGP within 120 s; extra copies: {copies}")
    finally:
        relay.stop()
        control(sandbox, "reset")


def surge(sandbox: ServerThread, workdir: Path, count: int) -> None:
    print(f"\nsurge: {count} distinct supporters at once, default config (600/minute relay-wide, 10/minute each)")
    relay = Relay(workdir, sandbox.url)
    try:
        url = f"{relay.url}/v1/forms/join"
        started = time.monotonic()
        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(lambda i: post_from(source(i), url, person(i)), range(count)))
        print(f"  sent in {time.monotonic() - started:.1f} s")
        summary(f"{count} supporters", results)
        one = [post_from("127.250.0.1", url, person(100_000 + i)) for i in range(150)]
        summary("one address, 150 posts", one)
        took, copies = until_delivered(sandbox, {f"p{i}@example.org" for i in range(count)}, 300)
        print(f"  all {count} at NGP after {took:.1f} s, extra copies: {copies}" if took is not None
              else f"  NOT all {count} at NGP within 300 s; extra copies: {copies}")
    finally:
        relay.stop()
        control(sandbox, "reset")


def main() -> None:
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="slow,hanging,surge")
    parser.add_argument("--delay", type=float, default=8.0)
    parser.add_argument("--surge", type=int, default=1000)
    args = parser.parse_args()
    sandbox = ServerThread(create_sandbox()).start()
    try:
        for name in args.only.split(","):
            workdir = Path(tempfile.mkdtemp(prefix=f"formrelay-bench-{name}-"))
            if name == "slow":
                slow(sandbox, workdir, args.delay)
            elif name == "hanging":
                hanging(sandbox, workdir)
            elif name == "surge":
                surge(sandbox, workdir, args.surge)
    finally:
        sandbox.stop()


if __name__ == "__main__":
    main()

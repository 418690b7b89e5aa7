"""Filling the SQLite queue over HTTP with the CRM down (issue 32's first "Done when").

    python benchmarks/queue_http.py [--count 20000] [--clients 8] [--later 400] [--wait 60]

`formrelay serve` (the embedded SQLite queue, defaults but for rate limits) in front of the sandbox NGP (its own
gunicorn), which answers 503 to every submission: the CRM is down. `--clients` processes post `--count`
submissions in all (keep-alive, one after another each); every answer should be `202 queued`, all within 150 s,
99 % within `answer_within` (3 s by default). Then, the CRM still down, `--wait` seconds later (thousands of
retries due by then), `--later` more posts: again 99 % within `answer_within`.

Prints the answers by status, the wall time, and latency percentiles of each phase; exits 1 when a target is
missed.
"""
from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from queue_depth import BIN, PERSON, free_port, sandbox, spawn, stop, wait_http  # noqa: E402

ANSWER_WITHIN = 3.0


def client(port: int, first: int, count: int, out: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    latencies, statuses = [], Counter()
    for i in range(first, first + count):
        body = json.dumps({**PERSON, "EmailAddress": f"http{i}@example.org"}).encode()
        started = time.perf_counter()
        try:
            conn.request("POST", "/v1/forms/join", body, {"Content-Type": "application/json",
                                                          "Accept": "application/json"})
            answer = conn.getresponse()
            answer.read()
            statuses[str(answer.status)] += 1
        except (OSError, http.client.HTTPException) as exc:
            statuses[exc.__class__.__name__] += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        latencies.append(time.perf_counter() - started)
    out.put((latencies, dict(statuses)))


def phase(port: int, first: int, count: int, clients: int) -> dict[str, Any]:
    out: multiprocessing.Queue[Any] = multiprocessing.Queue()
    share = [count // clients + (1 if i < count % clients else 0) for i in range(clients)]
    procs, start = [], first
    began = time.perf_counter()
    for n in share:
        proc = multiprocessing.Process(target=client, args=(port, start, n, out))
        proc.start()
        procs.append(proc)
        start += n
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    for _ in procs:
        got, codes = out.get()
        latencies += got
        statuses.update(codes)
    for proc in procs:
        proc.join()
    wall = time.perf_counter() - began
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))]

    within = sum(lat <= ANSWER_WITHIN for lat in latencies) / len(latencies)
    return {"posts": count, "wall_s": round(wall, 1), "per_s": round(count / wall), "statuses": dict(statuses),
            "p50_s": round(statistics.median(latencies), 3), "p99_s": round(pct(0.99), 3),
            "max_s": round(latencies[-1], 3), "within_answer_within": round(within, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--later", type=int, default=400)
    parser.add_argument("--wait", type=float, default=60)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="formrelay-http-"))
    sandbox_proc, sandbox_url = sandbox(work)
    server = None
    path = work / "relay.toml"
    path.write_text('[relay]\nrate_limit = ""\nglobal_rate_limit = ""\nsecret_key = "bench-secret-key-0123456789abcd"\n'
                    f'[queue]\npath = "{work / "queue.sqlite3"}"\n[logging]\nlevel = "WARNING"\n'
                    f'[providers.ngp]\nbase_url = "{sandbox_url}/ngp/v2"\napi_key = "bench-key"\n'
                    '[forms.join]\nprovider = "ngp"\nform_id = "demo-petition"\n')
    port = free_port()
    load = os.getloadavg()[0]
    try:
        requests.post(f"{sandbox_url}/_control/fail", json={"provider": "ngp", "status": 503, "count": 10**8},
                      timeout=60)
        server = spawn([str(BIN / "formrelay"), "serve", "--config", str(path), "--port", str(port)],
                       work / "serve.log")
        wait_http(f"http://127.0.0.1:{port}/healthz", server)
        requests.get(f"http://127.0.0.1:{port}/v1/forms/join", timeout=30)  # the form's definition, once
        first = phase(port, 0, args.count, args.clients)
        print(json.dumps({"phase": "fill", **first}), flush=True)
        time.sleep(args.wait)
        view = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=30).json()["queue"]
        later = phase(port, args.count, args.later, args.clients)
        print(json.dumps({"phase": f"{args.wait:.0f} s later", "depth_before": view["depth"], **later}), flush=True)
    finally:
        if server is not None:
            stop(server)
        stop(sandbox_proc)
    print(f"load average at start {load:.1f} on {os.cpu_count()} cores")
    ok = (first["statuses"] == {"202": args.count} and first["wall_s"] <= 150
          and first["within_answer_within"] >= 0.99 and later["within_answer_within"] >= 0.99)
    print("targets met" if ok else "TARGETS MISSED: all 202 within 150 s, 99 % within answer_within in both phases")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""Load generation: closed-loop keep-alive HTTP clients in separate processes, and their latency summary."""
from __future__ import annotations

import http.client
import multiprocessing
import signal
import threading
import time
from collections import Counter
from typing import Any

from targets import HOST


def request_once(port: int, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body, headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _client_process(port: int, path: str, body: bytes, headers: dict[str, str], conns: int, t_measure: float,
                    t_end: float, per_conn: int, out: Any) -> None:
    """conns closed-loop keep-alive connections; latencies of requests started in [t_measure, t_end)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    lock = threading.Lock()

    def loop() -> None:
        mine: list[float] = []
        codes: Counter[str] = Counter()
        conn = http.client.HTTPConnection(HOST, port, timeout=30)
        sent = 0
        while True:
            if per_conn:
                if sent >= per_conn:
                    break
            elif time.monotonic() >= t_end:
                break
            t0 = time.monotonic()
            try:
                conn.request("POST", path, body, headers)
                resp = conn.getresponse()
                resp.read()
                code = str(resp.status)
                if resp.will_close:
                    conn.close()
                    conn = http.client.HTTPConnection(HOST, port, timeout=30)
            except (OSError, http.client.HTTPException) as exc:
                code = exc.__class__.__name__
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=30)
            t1 = time.monotonic()
            sent += 1
            if per_conn or (t_measure <= t0 < t_end):
                mine.append(t1 - t0)
                codes[code] += 1
        conn.close()
        with lock:
            latencies.extend(mine)
            statuses.update(codes)

    threads = [threading.Thread(target=loop) for _ in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((latencies, dict(statuses)))


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = max(1, round(p / 100 * len(sorted_values) + 0.5))  # nearest rank
    return sorted_values[min(rank, len(sorted_values)) - 1]


def load(port: int, path: str, body: bytes, headers: dict[str, str], procs: int, conns: int,
         warmup: float = 0.0, duration: float = 0.0, total: int = 0) -> dict[str, Any]:
    return summarise([run_load(port, path, body, headers, procs, conns, warmup, duration, total)])


def run_load(port: int, path: str, body: bytes, headers: dict[str, str], procs: int, conns: int,
             warmup: float = 0.0, duration: float = 0.0, total: int = 0) -> tuple[list[float], Counter[str], float]:
    """Closed-loop load from `procs` processes x `conns` connections, for `duration` after `warmup` or `total`
    requests: (latencies, statuses, measured seconds)."""
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    start = time.monotonic() + 0.3  # lets every process start before the clock runs
    t_measure = start + warmup
    t_end = t_measure + duration
    per_conn = -(-total // (procs * conns)) if total else 0
    children = [ctx.Process(target=_client_process,
                            args=(port, path, body, headers, conns, t_measure, t_end, per_conn, out), daemon=True)
                for _ in range(procs)]
    began = time.monotonic()
    try:
        for child in children:
            child.start()
        parts = [out.get(timeout=(warmup + duration + 120) if not total else 600) for _ in children]
        elapsed = time.monotonic() - began
        for child in children:
            child.join(timeout=5)
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()
                child.join(timeout=2)
    statuses: Counter[str] = Counter()
    for part in parts:
        statuses.update(part[1])
    return [x for part in parts for x in part[0]], statuses, (duration if not total else elapsed)


def summarise(runs: list[tuple[list[float], Counter[str], float]]) -> dict[str, Any]:
    """One figure from one or more runs: requests over their summed measured time, percentiles over all."""
    latencies = sorted(x for run in runs for x in run[0])
    statuses: Counter[str] = Counter()
    for run in runs:
        statuses.update(run[1])
    seconds = sum(run[2] for run in runs)
    errors = sum(n for code, n in statuses.items() if not (code.isdigit() and 200 <= int(code) < 300))
    return {
        "requests": len(latencies),
        "seconds": round(seconds, 2),
        "rps": round(len(latencies) / seconds, 1) if seconds else 0.0,
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "errors": errors,
        "statuses": dict(sorted(statuses.items())),
    }

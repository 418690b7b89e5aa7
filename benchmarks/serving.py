"""Which server for `formrelay serve`: waitress (tuned), gunicorn (gthread, shipped config) and granian, side by side.

    python benchmarks/serving.py [--quick]

Everything on 127.0.0.1, against the sandbox NGP (one gunicorn process, 16 threads). For each server running the
relay it measures, in one run:

- hostile sockets: 300 connections that never finish their headers plus 300 idle keep-alive connections, then
  the time a real submission takes to be answered; then 1,000 idle keep-alive connections, and the same;
- a 200 MB Content-Length post: how long until the server answers (413), without sending the body;
- throughput of submissions with 16 keep-alive connections, in interleaved rounds with the bare Flask + requests
  forwarder (`benchmarks/forwarder.py`) under gunicorn 2 workers x 4 threads, the ceiling for this stack.

The relay runs with 2 workers x 4 threads under granian (`formrelay serve --workers 2 --threads 4`) and
gunicorn; waitress has no worker processes, so it gets one process with 8 threads. The machine is shared: the
load generator and every server compete for the same cores, so figures move between runs; the rounds are
interleaved, each round starting with the next target, so that drift hits every target alike. Results go to stdout and benchmarks/serving_results.json.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from loadgen import request_once, run_load, summarise  # noqa: E402  (the shared load generator)
from targets import (  # noqa: E402  (the shared server helpers)
    FAKE_THREADS,
    HOST,
    JSON_HEADERS,
    NGP_BODY,
    ROOT,
    Servers,
    free_port,
    relay_config,
    to_toml,
    wait_until,
)

WORKERS, THREADS = 2, 4
BIN = Path(sys.executable).parent
TIMEOUT = 5.0  # a real submission not answered within this is "no answer"


def start(servers: Servers, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(servers.workdir / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop_all)
    servers._logs.append(log)
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    servers.procs.append(proc)
    return proc


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants (from /proc), for CPU per submission."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        stats[int(entry.name)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        if current in stats:
            total += (int(stats[current][11]) + int(stats[current][12])) / ticks
        todo.extend(children.get(current, []))
    return total


def submission_seconds(port: int, timeout: float = TIMEOUT) -> float | None:
    """Seconds for one real submission on a new connection; None when it gets no 200 in `timeout`."""
    started = time.monotonic()
    try:
        status, _ = request_once(port, "POST", "/v1/forms/join", json.dumps(NGP_BODY).encode(), JSON_HEADERS,
                                 timeout=timeout)
    except OSError:
        return None
    return time.monotonic() - started if status == 200 else None


def open_hostile(port: int, unfinished: int, idle: int) -> list[socket.socket]:
    socks: list[socket.socket] = []
    try:
        for _ in range(unfinished):
            s = socket.create_connection((HOST, port), timeout=5)
            s.sendall(b"POST /v1/forms/join HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nX-Slow: ")
            socks.append(s)
        for _ in range(idle):
            s = socket.create_connection((HOST, port), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
            socks.append(s)
    except OSError:
        pass  # a server that stops accepting is measured by the submission that follows
    read_answers(socks[unfinished:], 3.0)
    return socks


def read_answers(socks: list[socket.socket], within: float) -> int:
    """Read the first answer on each socket, all at once, for at most `within` seconds; how many answered."""
    import selectors

    selector = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        selector.register(s, selectors.EVENT_READ)
    answered = 0
    deadline = time.monotonic() + within
    try:
        while answered < len(socks) and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=max(0.0, deadline - time.monotonic())):
                with contextlib.suppress(OSError):
                    key.fileobj.recv(65536)  # type: ignore[union-attr]
                selector.unregister(key.fileobj)
                answered += 1
    finally:
        selector.close()
    return answered


def hostile(port: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, unfinished, idle in (("600_hostile", 300, 300), ("1000_idle", 0, 1000)):
        socks = open_hostile(port, unfinished, idle)
        time.sleep(0.3)
        seconds = submission_seconds(port)
        out[label] = {"opened": len(socks), "submission_s": None if seconds is None else round(seconds, 3)}
        for s in socks:
            s.close()
        time.sleep(0.5)
        # Let the server recover (a gthread worker stuck on half-sent headers frees once they are closed).
        for _ in range(20):
            if submission_seconds(port, 2.0) is not None:
                break
    return out


def huge_body(port: int) -> float | None:
    """Seconds until a 413 for a 200 MB Content-Length post whose body is never sent; None when no answer in 5 s."""
    with socket.create_connection((HOST, port), timeout=TIMEOUT) as s:
        started = time.monotonic()
        s.sendall(b"POST /v1/forms/join HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
                  b"Accept: application/json\r\nContent-Length: 200000000\r\n\r\n" + b"{" * 4096)
        try:
            first = s.recv(64)
        except OSError:
            return None
        return round(time.monotonic() - started, 3) if first.startswith(b"HTTP/1.1 413") else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter throughput rounds (about 45 s in all)")
    parser.add_argument("--procs", type=int, default=4, help="load-generator processes")
    parser.add_argument("--conns", type=int, default=4, help="keep-alive connections per load-generator process")
    args = parser.parse_args()
    rounds, warmup, duration = (2, 1.0, 3.0) if args.quick else (4, 0.5, 3.0)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(8192, hard), hard))

    workdir = Path(tempfile.mkdtemp(prefix="formrelay-serving-bench-"))
    servers = Servers(workdir)
    began = time.monotonic()
    try:
        fake_port = free_port()
        fake = f"http://{HOST}:{fake_port}"
        fake_proc = servers.gunicorn("fake", "formrelay.sandbox:create_sandbox()", fake_port, 1, FAKE_THREADS, ROOT)
        wait_until(lambda: request_once(fake_port, "GET", "/_control/calls")[0] == 200, 30, "fake", fake_proc)
        config = workdir / "formrelay.toml"
        config.write_text(to_toml(relay_config(fake, workdir)))
        env = {"FORMRELAY_CONFIG": str(config)}

        ports = {name: free_port() for name in ("granian", "gunicorn", "waitress", "forwarder")}
        procs = {
            "granian": start(servers, "granian", [str(BIN / "formrelay"), "serve", "--config", str(config), "--port",
                                                  str(ports["granian"]), "--workers", str(WORKERS),
                                                  "--threads", str(THREADS)], env),
            "gunicorn": start(servers, "gunicorn", [sys.executable, "-m", "gunicorn", "-c",
                                                    "python:formrelay.gunicorn_conf", "--workers", str(WORKERS),
                                                    "--threads", str(THREADS), "--bind",
                                                    f"{HOST}:{ports['gunicorn']}", "--log-level", "warning",
                                                    *servers.extra_flags, "wsgi:app"], env),
            # waitress tuned for many connections: poll() (select() stops at 1,024 descriptors), a high
            # connection limit, idle connections closed after 10 s like the others.
            "waitress": start(servers, "waitress", [sys.executable, "-m", "waitress", "--listen",
                                                    f"{HOST}:{ports['waitress']}", "--threads", str(WORKERS * THREADS),
                                                    "--connection-limit", "4000", "--channel-timeout", "10",
                                                    "--asyncore-use-poll", "--no-clear-untrusted-proxy-headers",
                                                    "wsgi:app"], env),
            "forwarder": servers.gunicorn("forwarder", "forwarder:app", ports["forwarder"], WORKERS, THREADS, HERE,
                                          env={"FORWARDER_UPSTREAM": f"{fake}/ngp/v2/forms/demo-petition"}),
        }
        for name, port in ports.items():
            try:
                wait_until(lambda port=port: request_once(port, "POST", "/v1/forms/join", json.dumps(NGP_BODY).encode(),
                                                          JSON_HEADERS)[0] == 200, 60, name, procs[name])
            except RuntimeError:
                print(servers.log_tail(name), file=sys.stderr)
                raise

        results: dict[str, Any] = {"hostile": {}, "huge_body_s": {}}
        for name in ("granian", "gunicorn", "waitress"):
            print(f"... {name}: hostile sockets", file=sys.stderr)
            results["hostile"][name] = hostile(ports[name])
            results["huge_body_s"][name] = huge_body(ports[name])

        body = json.dumps(NGP_BODY).encode()
        runs: dict[str, list[Any]] = {name: [] for name in ports}
        cpu: dict[str, list[float]] = {name: [] for name in ports}  # server CPU ms per submission, per round
        names = list(ports)
        for r in range(rounds):
            # Each round starts with the next target, so that none is always measured first or last.
            for name in names[r % len(names):] + names[:r % len(names)]:
                port = ports[name]
                request_once(fake_port, "POST", "/_control/reset")
                print(f"... round {r + 1}/{rounds} {name}: {args.procs * args.conns} connections, {warmup:g} s "
                      f"warm-up + {duration:g} s", file=sys.stderr)
                before = tree_cpu_seconds(procs[name].pid)
                run = run_load(port, "/v1/forms/join", body, JSON_HEADERS, args.procs, args.conns, 0.0,
                               warmup + duration)
                used = tree_cpu_seconds(procs[name].pid) - before
                runs[name].append(run)
                cpu[name].append(used * 1000 / max(1, len(run[0])))
        results["throughput"] = {name: summarise(r) for name, r in runs.items()}
        results["cpu_ms_per_submission"] = {name: round(sorted(v)[len(v) // 2], 2) for name, v in cpu.items()}
        fwd = results["throughput"]["forwarder"]["rps"]
        results["vs_forwarder"] = {name: round(results["throughput"][name]["rps"] / fwd, 2) if fwd else None
                                   for name in ("granian", "gunicorn", "waitress")}
        # Per round, each server against the forwarder measured just after it: the drift between rounds cancels.
        results["vs_forwarder_by_round"] = {
            name: [round(len(a[0]) / len(b[0]), 2) for a, b in zip(runs[name], runs["forwarder"], strict=True)]
            for name in ("granian", "gunicorn", "waitress")}
        results["seconds"] = round(time.monotonic() - began, 1)
        results["cpus"] = os.cpu_count()
    finally:
        servers.stop_all()

    def fmt(value: float | None) -> str:
        return "no answer in 5 s" if value is None else f"{value * 1000:.0f} ms"

    print(f"\nrelay under each server ({WORKERS} workers x {THREADS} threads; waitress 1 x {WORKERS * THREADS}), "
          f"{results['cpus']} CPUs shared with the load generator\n")
    print("| server | submission behind 300 unfinished + 300 idle | beside 1,000 idle | 200 MB body refused in "
          "| submissions/s | vs forwarder (by round) | server CPU ms per submission | p50 ms | p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in ("granian", "gunicorn", "waitress", "forwarder"):
        t = results["throughput"][name]
        if name == "forwarder":
            print(f"| forwarder (gunicorn {WORKERS}x{THREADS}) | - | - | - | {t['rps']:,.0f} | 1.00 | "
                  f"{results['cpu_ms_per_submission'][name]} | {t['p50_ms']} | {t['p99_ms']} | {t['errors']} |")
            continue
        h = results["hostile"][name]
        print(f"| {name} | {fmt(h['600_hostile']['submission_s'])} | {fmt(h['1000_idle']['submission_s'])} | "
              f"{fmt(results['huge_body_s'][name])} | {t['rps']:,.0f} | {results['vs_forwarder'][name]:.2f} "
              f"({', '.join(f'{x:.2f}' for x in results['vs_forwarder_by_round'][name])}) | "
              f"{results['cpu_ms_per_submission'][name]} | {t['p50_ms']} | {t['p99_ms']} | {t['errors']} |")
    print(f"\n{results['seconds']} s in all")
    (HERE / "serving_results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

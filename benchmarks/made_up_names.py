"""What posts to made-up form names cost a `formrelay serve` relay: `python benchmarks/made_up_names.py [--redis]`.

Posts to names no form has (2 KB, 16 KB and 60 KB long, and short names of a valid shape), each on a fresh
connection as a scanner would, and prints the answers, the relay's resident memory before and after (the server
and its worker), and with --redis (a throwaway redis-server on 127.0.0.1) the number of keys the rate limiter
left there. Issue 31's target: 2,000 posts with 16 KB names grow the relay by less than 40 MB, never a 5xx.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from formrelay.sandbox import ServerThread, create_sandbox  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.servers import PERSON, running, toml  # noqa: E402


def rss_mb(pid: int) -> float:
    total, pids = 0, [pid]
    while pids:
        current = pids.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        pids += [int(c) for c in children]
    return total / 1024


def redis_server(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, f"redis://127.0.0.1:{port}/0"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", action="store_true", help="rate limits (and the queue) in a real redis-server")
    parser.add_argument("--posts", type=int, default=2000)
    args = parser.parse_args()
    sandbox = ServerThread(create_sandbox()).start()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        relay: dict[str, object] = {"rate_limit": "10/minute;100/hour"}
        redis_proc = None
        if args.redis:
            redis_proc, relay["redis_url"] = redis_server(tmp)
        config = tmp / "formrelay.toml"
        config.write_text(toml(relay, sandbox.url, queue_path=tmp / "queue.sqlite3"))
        try:
            with running("serve", config, tmp, workers=1, threads=4) as server:
                for _ in range(20):
                    requests.post(f"{server.url}/v1/forms/join", json=PERSON, timeout=10)
                print(f"{'names':24} {'posts':>6} {'seconds':>8} {'RSS before':>11} {'after':>8}  answers")
                for label, make in (("short, valid shape", lambda i: f"made-up-{i}"),
                                    ("2 KB", lambda i: f"{i:05d}" + "x" * (2 * 1024 - 5)),
                                    ("16 KB", lambda i: f"{i:05d}" + "x" * (16 * 1024 - 5)),
                                    ("60 KB", lambda i: f"{i:05d}" + "x" * (60 * 1024 - 5))):
                    before = rss_mb(server.proc.pid)
                    started = time.perf_counter()
                    answers: Counter[int] = Counter()
                    for i in range(args.posts):
                        answers[requests.post(f"{server.url}/v1/forms/{make(i)}", json=PERSON,
                                              timeout=10).status_code] += 1
                    seconds = time.perf_counter() - started
                    after = rss_mb(server.proc.pid)
                    print(f"{label:24} {args.posts:6} {seconds:8.1f} {before:8.0f} MB {after:5.0f} MB  "
                          f"{dict(sorted(answers.items()))}")
                if args.redis:
                    import redis

                    client = redis.Redis.from_url(str(relay["redis_url"]))
                    limiter_keys = sum(1 for _ in client.scan_iter("LIMITS*"))
                    print(f"rate-limiter keys in Redis: {limiter_keys}")
        finally:
            if redis_proc is not None:
                redis_proc.terminate()
                redis_proc.wait(10)
            sandbox.stop()


if __name__ == "__main__":
    main()

"""The queue at depth: each store filled to 1k, 10k and 100k jobs; enqueue and drain rates, `queue list --limit 10`
time and memory, /readyz and /metrics times at each depth; RQ on the same Redis as the reference.

    python benchmarks/queue_depth.py [--depths 1000,10000,100000] [--stores sqlite,redis] [--sample 5000]
                                     [--rq-max 10000]

Needs redis-server (Debian's) and, for the reference, `pip install -e '.[bench]'` (rq). Everything runs on
127.0.0.1: the sandbox NGP in a gunicorn of its own (1 process, 16 threads), Redis with `appendonly yes`
(`appendfsync everysec`), the relay as the real commands (`formrelay serve` with `embedded_worker = false` for
the HTTP timings, `formrelay worker` for the drain, `formrelay queue list`).

At each depth, for each store (a new, empty one):
- fill to depth minus `--sample` in bulk (one transaction / pipeline: not measured), then `--sample` single
  enqueues the way the relay makes them (Store.add, one transaction each): the enqueue rate at that depth;
- /readyz and /metrics from the operator's address, 30 times each after 3 warm-ups: the median;
- `formrelay queue list --limit 10`: wall time and peak memory (the process's max RSS);
- `formrelay worker` (the [queue] default of 2 threads) delivering to the sandbox: the rate over the first
  `--sample` jobs (timed from the first job taken), i.e. the drain rate with `depth` jobs waiting.
RQ (to `--rq-max`): `depth` jobs enqueued one by one (Queue.enqueue), then drained by two `rq worker --burst`
processes (SimpleWorker: no fork per job, like formrelay's threads), each job the same form post to the sandbox.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from formrelay.delivery.jobs import new_job  # noqa: E402
from formrelay.forms.submission import Submission  # noqa: E402

BIN = Path(sys.executable).parent
PERSON = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009",
          "AddressLine1": "1 Main Street", "City": "Springfield"}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(url, timeout=2)
            return
        except requests.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{url} did not start") from None
            time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=ROOT, env=env or os.environ.copy())


def sandbox(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = spawn([str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "16",
                  "formrelay.sandbox:create_sandbox()"], work / "sandbox.log")
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/_control/calls", proc)
    return proc, url


def redis_server(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is needed (apt-get install redis-server)")
    port = free_port()
    data = work / "redis"
    data.mkdir(exist_ok=True)
    proc = spawn([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--appendonly", "yes",
                  "--appendfsync", "everysec", "--save", ""], work / "redis.log")
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


def config(work: Path, name: str, sandbox_url: str, redis_url: str | None) -> Path:
    path = work / f"{name}.toml"
    queue = "" if redis_url else f'path = "{work / (name + ".sqlite3")}"\n'
    path.write_text(
        "[relay]\nrate_limit = \"\"\nglobal_rate_limit = \"\"\nsecret_key = \"bench-secret-key-0123456789abcdef\"\n"
        + (f'redis_url = "{redis_url}"\n' if redis_url else "")
        + f"[queue]\n{queue}embedded_worker = false\nmax_jobs = 1000000\nmax_bytes = 4000000000\n"
        "poll_interval = 0.05\n[logging]\nlevel = \"WARNING\"\n"
        f'[providers.ngp]\nbase_url = "{sandbox_url}/ngp/v2"\napi_key = "bench-key"\n'
        '[forms.join]\nprovider = "ngp"\nform_id = "demo-petition"\n')
    return path


def open_store(path: Path) -> Any:
    from formrelay.core.config import load_config
    from formrelay.delivery.relay import Relay

    relay = Relay(load_config(str(path)))
    return relay, relay.store


def job(i: int) -> Any:
    person = {**PERSON, "EmailAddress": f"bench{i}@example.org"}
    return new_job("join", "primary", Submission(form="join", values=person))


def bulk_fill(store: Any, count: int) -> None:
    """Not measured: the part of the depth that only has to be there."""
    done = 0
    while done < count:
        batch = [job(done + i) for i in range(min(5000, count - done))]
        if hasattr(store, "redis"):
            with store.redis.pipeline(transaction=False) as pipe:
                for j in batch:
                    store.scripts.add(keys=[*store._std, store.k_sub + j.submission_id],
                                      args=[j.id, j.to_json(), j.state, j.due_at, j.created_at], client=pipe)
                pipe.execute()
        else:
            with store._tx() as db:
                for j in batch:
                    store._write(db, j)
        done += len(batch)


def timed_gets(url: str, count: int = 30) -> float:
    session = requests.Session()
    for _ in range(3):
        session.get(url, timeout=30)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        answer = session.get(url, timeout=30)
        times.append(time.perf_counter() - started)
        assert answer.status_code == 200, (url, answer.status_code, answer.text[:200])
    return statistics.median(times) * 1000


def queue_list(path: Path) -> tuple[float, float, float]:
    """Wall seconds, peak MB and CPU seconds of `formrelay queue list --limit 10` (CPU: on a busy machine the
    wall time is mostly waiting for a core)."""
    started = time.perf_counter()
    proc = subprocess.Popen([str(BIN / "formrelay"), "queue", "list", "--limit", "10", "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"queue list failed: {proc.stderr.read().decode()[-500:]}")  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]
    return elapsed, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def drain(path: Path, store: Any, depth: int, sample: int, work: Path) -> float:
    """Jobs per second over the first `sample` deliveries of `formrelay worker`, timed from the first one."""
    worker = spawn([str(BIN / "formrelay"), "worker", "--config", str(path)], work / "worker.log")
    try:
        target = depth - sample
        began = None
        deadline = time.monotonic() + 3600
        while True:
            left = store.stats(time.time()).depth
            if began is None and left < depth:
                began, start_left = time.perf_counter(), left
            if left <= target or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert began is not None
        return (start_left - left) / (time.perf_counter() - began)
    finally:
        stop(worker)


def measure_store(name: str, depth: int, args: argparse.Namespace, work: Path, sandbox_url: str,
                  redis_url: str | None) -> dict[str, Any]:
    path = config(work, f"{name}-{depth}-{os.urandom(3).hex()}", sandbox_url, redis_url)  # a depth may repeat
    relay, store = open_store(path)
    if redis_url:
        store.redis.flushdb()
        store._sentinel = None
    sample = min(args.sample, depth)
    bulk_fill(store, depth - sample)
    started = time.perf_counter()
    for i in range(sample):
        store.add(job(depth + i))
    enqueue = sample / (time.perf_counter() - started)
    assert store.stats(time.time()).depth == depth
    port = free_port()
    server = spawn([str(BIN / "formrelay"), "serve", "--config", str(path), "--port", str(port)], work / "serve.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", server)
        readyz = timed_gets(f"http://127.0.0.1:{port}/readyz")
        metrics = timed_gets(f"http://127.0.0.1:{port}/metrics")
    finally:
        stop(server)
    list_s, list_mb, list_cpu = queue_list(path)
    rate = drain(path, store, depth, sample, work)
    relay.close()
    row = {"store": name, "depth": depth, "enqueue_per_s": round(enqueue), "drain_per_s": round(rate),
           "list_s": round(list_s, 2), "list_cpu_s": round(list_cpu, 2), "list_mb": round(list_mb), "readyz_ms": round(readyz, 1),
           "metrics_ms": round(metrics, 1)}
    print(json.dumps(row), flush=True)
    return row


def rq_deliver(url: str, body: dict[str, str]) -> int:
    """The RQ job: the same form post formrelay's NGP delivery makes to the sandbox."""
    answer = requests.post(url, data=body, timeout=10)
    answer.raise_for_status()
    return answer.status_code


def measure_rq(depth: int, work: Path, sandbox_url: str, redis_url: str) -> dict[str, Any]:
    import redis
    from rq import Queue

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    queue = Queue("bench", connection=client)
    url = f"{sandbox_url}/ngp/v2/forms/demo-petition"
    started = time.perf_counter()
    for i in range(depth):
        queue.enqueue("benchmarks.queue_depth.rq_deliver", url, {**PERSON, "EmailAddress": f"rq{i}@example.org"}, result_ttl=0)
    enqueue = depth / (time.perf_counter() - started)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    workers = [spawn([str(BIN / "rq"), "worker", "--burst", "--worker-class", "rq.worker.SimpleWorker", "--url",
                      redis_url, "--quiet", "bench"], work / "rq.log", env) for _ in range(2)]
    for proc in workers:
        proc.wait()
    rate = depth / (time.perf_counter() - started)
    left = queue.count
    client.close()
    row = {"store": "rq (reference)", "depth": depth, "enqueue_per_s": round(enqueue), "drain_per_s": round(rate),
           "left": left}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", default="1000,10000,100000")
    parser.add_argument("--stores", default="sqlite,redis")
    parser.add_argument("--sample", type=int, default=5000, help="single enqueues and deliveries timed per depth")
    parser.add_argument("--rq-max", type=int, default=10000, help="the reference up to this depth (0: none)")
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    stores = args.stores.split(",")
    work = Path(tempfile.mkdtemp(prefix="formrelay-depth-"))
    sandbox_proc, sandbox_url = sandbox(work)
    redis_proc, redis_url = None, None
    rows = []
    try:
        if "redis" in stores or args.rq_max:
            redis_proc, redis_url = redis_server(work)
        # What `queue list` costs with nothing queued (Python's start-up, the config, the relay): the rest is depth.
        empty_s, empty_mb, empty_cpu = queue_list(config(work, "empty", sandbox_url, None))
        print(json.dumps({"queue list on an empty queue": {"s": round(empty_s, 2), "cpu_s": round(empty_cpu, 2),
                                                           "mb": round(empty_mb)}}), flush=True)
        for depth in depths:
            for name in stores:
                rows.append(measure_store(name, depth, args, work, sandbox_url, redis_url if name == "redis" else None))
            if redis_url and depth <= args.rq_max:
                try:
                    rows.append(measure_rq(depth, work, sandbox_url, redis_url))
                except ImportError:
                    print("rq is not installed: pip install -e '.[bench]'", file=sys.stderr)
    finally:
        stop(sandbox_proc)
        if redis_proc is not None:
            stop(redis_proc)
    print()
    print(f"{'store':<16} {'depth':>7} {'enqueue/s':>10} {'drain/s':>8} {'list s':>7} {'list cpu':>9} "
          f"{'list MB':>8} {'readyz ms':>10} {'metrics ms':>11}")
    for r in rows:
        print(f"{r['store']:<16} {r['depth']:>7} {r['enqueue_per_s']:>10} {r['drain_per_s']:>8} "
              f"{r.get('list_s', '-'):>7} {r.get('list_cpu_s', '-'):>9} {r.get('list_mb', '-'):>8} "
              f"{r.get('readyz_ms', '-'):>10} {r.get('metrics_ms', '-'):>11}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

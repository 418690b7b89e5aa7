"""Relay overhead on loopback: throughput and latency against a bare forwarder and the fake provider itself,
peak memory per worker, cold start, schema build time, and upstream calls per 1,000 submissions.

    python benchmarks/run.py [--quick] [--profile]

Every server is a gunicorn on 127.0.0.1 (free ports); the load comes from separate client processes, each
with keep-alive http.client connections in a closed loop. The table goes to stdout and the same figures to
benchmarks/results.json. When the relay misses a target, a cProfile of in-process submissions goes to
benchmarks/profile.txt (--profile writes it regardless).
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

HOST = "127.0.0.1"
RELAY_WORKERS = 2
RELAY_THREADS = 4
FAKE_THREADS = 16
ENS_PAGE_BUDGET = "100000/5minute"  # the relay's default is 200/5minute: raised so the count is not throttled

NGP_BODY = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009"}
ENS_BODY = {"First Name": "Ann", "Last Name": "Lee", "Email Address": "ann@example.org", "Postcode": "SW1A 1AA"}
ENGAGEONE_BODY = {"email": "ann@example.org", "first_name": "Ann"}
# The upstream call each submission makes, per provider; every other kind (authenticate, definition, ...) is once-off.
DELIVERY_CALL = {"ngp": "submit", "ens": "process", "engageone": "send"}
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}

TARGETS = {
    "throughput_vs_forwarder_pct": 80.0,  # at least
    "added_p50_ms": 2.0,  # at most
    "peak_rss_mib": 80.0,  # below
    "definition_to_schema_ms": 5.0,  # below
}


# -- servers -------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _gunicorn_supports(flag: str) -> bool:
    out = subprocess.run([sys.executable, "-m", "gunicorn", "--help"], capture_output=True, text=True, timeout=30,
                         check=False)
    return flag in out.stdout


class Servers:
    """gunicorn processes, each in its own session (process group), all killed by stop_all()."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[Any] = []
        self.extra_flags = ["--no-control-socket"] if _gunicorn_supports("--no-control-socket") else []

    def gunicorn(self, name: str, app: str, port: int, workers: int, threads: int, chdir: Path,
                 env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 (closed in stop_all)
        self._logs.append(log)
        cmd = [sys.executable, "-m", "gunicorn", "--bind", f"{HOST}:{port}", "--workers", str(workers),
               "--worker-class", "gthread", "--threads", str(threads), "--keep-alive", "30",
               "--log-level", "warning", "--chdir", str(chdir), *self.extra_flags, app]
        proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 8
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # The group may hold workers that outlived the master: kill what is left of it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)
        for log in self._logs:
            log.close()

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def request_once(port: int, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body, headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_until(check: Any, timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the server exited with code {proc.returncode}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.01)
    raise RuntimeError(f"{what}: not ready within {timeout:.0f} s")


def worker_pids(master: int) -> list[int]:
    """Children of a gunicorn master, from /proc (task/*/children when the kernel has it, else every stat)."""
    found: set[int] = set()
    task_dir = Path(f"/proc/{master}/task")
    with contextlib.suppress(OSError):
        for task in task_dir.iterdir():
            children = task / "children"
            if children.exists():
                found.update(int(p) for p in children.read_text().split())
    if found:
        return sorted(found)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == master:
            found.add(int(entry.name))
    return sorted(found)


def cpu_times() -> tuple[int, int]:
    """(all jiffies, steal jiffies) from /proc/stat: steal is time the hypervisor gave to someone else."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0, 0
    return sum(values[:8]), (values[7] if len(values) > 7 else 0)


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# -- load generator --------------------------------------------------------------------------------------------


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


# -- config ------------------------------------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string of ASCII text is a TOML basic string
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(value)


def to_toml(doc: dict[str, Any]) -> str:
    lines: list[str] = []

    def table(name: str, body: dict[str, Any]) -> None:
        lines.append(f"[{name}]")
        lines.extend(f"{json.dumps(k) if ' ' in k else k} = {toml_value(v)}" for k, v in body.items())
        lines.append("")

    for top, body in doc.items():
        if top in ("providers", "forms"):
            for name, sub in body.items():
                table(f"{top}.{name}", sub)
        else:
            table(top, body)
    return "\n".join(lines)


def relay_config(fake: str, workdir: Path) -> dict[str, Any]:
    return {
        "relay": {"rate_limit": "", "global_rate_limit": "", "time_trap_min": 0},
        "queue": {"path": str(workdir / "queue.sqlite3")},
        "providers": {
            "ngp": {"base_url": f"{fake}/ngp/v2"},
            "ens": {"base_url": f"{fake}/ens/service", "api_token": "sandbox-ens-api-token",
                    "page_budget": ENS_PAGE_BUDGET},
            "engageone": {"users_url": f"{fake}/engageone/users", "api_url": f"{fake}/engageone/api",
                          "client_id": "sa11bb.sandbox@communicate.engageone.co",
                          "secret": "sandbox-engageone-secret", "customer_id": "sa11bb"},
        },
        "forms": {
            "join": {"provider": "ngp", "form_id": "demo-petition"},
            "mp": {"provider": "ens", "page_id": 12345,
                   "fields": {"First Name": {"required": True}, "Last Name": {"required": True},
                              "Email Address": {"required": True}, "Postcode": {"required": True}}},
            "toolkit": {"provider": "engageone", "campaign": "ToolkitDownload", "communication": "Toolkit",
                        "fields": {"first_name": {"label": "First name", "required": True}}},
        },
    }


# -- in-process measurements -------------------------------------------------------------------------------------


def ngp_definition_doc(n: int = 200) -> dict[str, Any]:
    """A synthetic NGP definition with n fields of every element shape the provider reads, in fieldsets."""
    shapes = [
        lambda i: {"type": "textfield", "maxlength": 50, "required": i % 3 == 0, "queryString": f"q{i}"},
        lambda i: {"type": "textfield", "maxlength": 100, "validation": "email"},
        lambda i: {"type": "textfield", "maxlength": 20, "validation": "phone"},
        lambda i: {"type": "textfield", "maxlength": 10, "validation": "postalCode"},
        lambda i: {"type": "select", "options": "states"},
        lambda i: {"type": "radios", "options": [{"val": str(v), "label": f"${v}"} for v in (10, 25, 50, 100)]},
        lambda i: {"type": "checkboxes", "options": ["Air", "Water", "Land", "Climate"]},
        lambda i: {"type": "textarea", "maxlength": 1000},
        lambda i: {"type": "checkbox"},
        lambda i: {"type": "number", "valueMin": 0, "valueMax": 1000},
        lambda i: {"type": "date"},
    ]
    fieldsets = []
    per_set = 20
    for s in range(0, n, per_set):
        children = []
        for i in range(s, min(n, s + per_set)):
            element = shapes[i % len(shapes)](i)
            children.append({"name": f"Field{i:03d}", "title": f"Field {i}", **element})
        fieldsets.append({"type": "fieldset", "name": f"Set{s // per_set}", "title": f"Set {s // per_set}",
                          "children": children})
    return {"formId": "bench-200", "title": "Bench", "type": "PetitionForm",
            "form_elements": [*fieldsets, {"type": "hidden", "name": "Source", "value": "bench"},
                              {"type": "submit", "name": "Submit", "title": "Go"}]}


def definition_to_schema(runs: int) -> dict[str, Any]:
    """Median time of NGP definition JSON -> Definition -> schema class -> schema instance (as Form.loaded does)."""
    from formrelay.forms.fields import build_schema
    from formrelay.providers.ngp import definition_from_ngp

    doc = ngp_definition_doc(200)
    parts: dict[str, list[float]] = {"definition": [], "build_schema": [], "instantiate": [], "total": []}
    fields = 0
    for i in range(runs + 3):
        t0 = time.perf_counter()
        definition = definition_from_ngp(doc)
        t1 = time.perf_counter()
        schema_cls = build_schema("bench", definition.fields)
        t2 = time.perf_counter()
        schema = schema_cls()
        t3 = time.perf_counter()
        fields = len(schema.fields)
        if i >= 3:  # the first runs warm caches
            parts["definition"].append(t1 - t0)
            parts["build_schema"].append(t2 - t1)
            parts["instantiate"].append(t3 - t2)
            parts["total"].append(t3 - t0)
    medians = {f"{k}_ms": round(statistics.median(v) * 1000, 3) for k, v in parts.items()}
    return {"fields": fields, "runs": runs, **medians}


def _package(filename: str, function: str) -> str:
    """Where a profiled function lives: formrelay.<module>, a site-packages distribution, stdlib, or socket I/O."""
    if filename == "~":
        if any(word in function for word in ("recv", "send", "connect", "socket", "poll", "select")):
            return "socket I/O (includes waiting for the fake)"
        return "builtins"
    path = Path(filename)
    parts = path.parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    if "formrelay" in parts:
        return "formrelay." + path.stem
    if "frozen" in filename:
        return "stdlib " + filename.strip("<>").replace("frozen ", "")
    return "stdlib " + (parts[-2] if parts[-1] == "__init__.py" else path.stem)


def _profiled(clients: dict[str, Any], count: int, chunk: int = 50) -> dict[str, tuple[Any, float]]:
    """cProfile of `count` NGP posts through each Flask test client, alternating in chunks so that drift on a
    shared machine hits all alike; {name: (profile, ms per post)}."""
    import cProfile

    for client in clients.values():
        for _ in range(20):
            client.post("/v1/forms/join", json=NGP_BODY)
    profilers = {name: cProfile.Profile() for name in clients}
    spent = dict.fromkeys(clients, 0.0)
    done = 0
    while done < count:
        n = min(chunk, count - done)
        for name, client in clients.items():
            profiler = profilers[name]
            t0 = time.perf_counter()
            profiler.enable()
            try:
                for _ in range(n):
                    response = client.post("/v1/forms/join", json=NGP_BODY)
                    if response.status_code != 200:
                        raise RuntimeError(f"profiled post to {name} answered {response.status_code}")
            finally:
                profiler.disable()
            spent[name] += time.perf_counter() - t0
        done += n
    return {name: (profilers[name], spent[name] / count * 1000) for name in clients}


def _by_function(relay: Any, forwarder: Any, count: int, top: int = 25) -> list[tuple[str, float, float]]:
    import pstats

    def own(profiler: Any) -> dict[str, float]:
        raw: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
        return {f"{fn.split('site-packages/')[-1].split('/lib/python3')[-1]}:{line} {func}": v[2] * 1000 / count
                for (fn, line, func), v in raw.items()}

    r, f = own(relay), own(forwarder)
    rows = [(name, r.get(name, 0.0), f.get(name, 0.0)) for name in set(r) | set(f)]
    return sorted(rows, key=lambda row: row[1] - row[2], reverse=True)[:top]


def _relay_steps(profiler: Any, count: int, top: int = 25) -> list[tuple[str, float]]:
    """Cumulative ms per submission of the relay's own functions and the libraries it adds over the forwarder."""
    import pstats

    raw: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    picked = []
    for (filename, line, function), v in raw.items():
        if "/formrelay/" in filename or any(f"/{lib}/" in filename for lib in (
                "flask_limiter", "limits", "marshmallow", "email_validator", "prometheus_client")):
            where = filename.split("site-packages/")[-1].split("/formrelay/")[-1]
            picked.append((f"{where}:{line} {function}", v[3] * 1000 / count))
    return sorted(picked, key=lambda row: row[1], reverse=True)[:top]


def _ms_by_package(profiler: Any, count: int) -> Counter[str]:
    import pstats

    raw: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    out: Counter[str] = Counter()
    for (filename, _, function), v in raw.items():
        out[_package(filename, function)] += v[2] * 1000 / count
    return out


def profile_submissions(fake: str, workdir: Path, count: int, out: Path, schema_too: bool) -> dict[str, Any]:
    """cProfile of in-process NGP submissions through the relay and through the forwarder (Flask test clients,
    the running gunicorn fake upstream), with the relay's own time per package set against the forwarder's."""
    import importlib.util
    import io
    import logging
    import pstats

    # Log lines go to a file, as they would under gunicorn, instead of this terminal.
    logging.basicConfig(filename=str(workdir / "profile.log"), level=logging.WARNING)
    from formrelay import create_app

    cfg = relay_config(fake, workdir)
    cfg["queue"] = {"path": str(workdir / "profile-queue.sqlite3")}
    app = create_app(cfg)
    os.environ["FORWARDER_UPSTREAM"] = f"{fake}/ngp/v2/forms/demo-petition"
    spec = importlib.util.spec_from_file_location("bench_forwarder", HERE / "forwarder.py")
    assert spec is not None and spec.loader is not None
    forwarder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(forwarder)
    try:
        profiled = _profiled({"relay": app.test_client(), "forwarder": forwarder.app.test_client()}, count)
    finally:
        app.extensions["formrelay"].close()
    (relay_prof, relay_ms), (fwd_prof, fwd_ms) = profiled["relay"], profiled["forwarder"]

    relay_pkg, fwd_pkg = _ms_by_package(relay_prof, count), _ms_by_package(fwd_prof, count)
    rows = sorted(((name, relay_pkg[name], fwd_pkg[name]) for name in set(relay_pkg) | set(fwd_pkg)),
                  key=lambda row: row[1] - row[2], reverse=True)

    buf = io.StringIO()
    buf.write(f"cProfile of {count} NGP submissions each through the relay and through the minimal forwarder, "
              f"in-process (Flask test client -> app -> requests -> the gunicorn fake provider on loopback), "
              f"alternating in chunks of 50.\n"
              f"Under the profiler: relay {relay_ms:.2f} ms, forwarder {fwd_ms:.2f} ms per submission.\n\n"
              f"== own time per submission by package, ms (sorted by relay - forwarder) ==\n"
              f"{'relay':>8}{'forwarder':>10}{'extra':>8}  package\n")
    buf.writelines(f"{r:8.3f}{f:10.3f}{r - f:8.3f}  {name}\n" for name, r, f in rows if r >= 0.0005 or f >= 0.0005)
    buf.write("\n== own time per submission by function, ms: the 25 largest relay - forwarder differences ==\n"
              f"{'relay':>8}{'forwarder':>10}{'extra':>8}  function\n")
    buf.writelines(f"{r:8.3f}{f:10.3f}{r - f:8.3f}  {name}\n"
                   for name, r, f in _by_function(relay_prof, fwd_prof, count))
    buf.write("\n== relay: its own steps and the libraries it adds, cumulative ms per submission ==\n")
    buf.writelines(f"{ms:8.3f}  {name}\n" for name, ms in _relay_steps(relay_prof, count))
    buf.write("\n== relay: top 25 by cumulative time ==\n")
    pstats.Stats(relay_prof, stream=buf).sort_stats("cumulative").print_stats(25)
    buf.write("\n== relay: top 25 by own time ==\n")
    pstats.Stats(relay_prof, stream=buf).sort_stats("tottime").print_stats(25)
    buf.write("\n== forwarder: top 25 by own time ==\n")
    pstats.Stats(fwd_prof, stream=buf).sort_stats("tottime").print_stats(25)
    if schema_too:
        import cProfile

        from formrelay.forms.fields import build_schema
        from formrelay.providers.ngp import definition_from_ngp

        doc = ngp_definition_doc(200)
        p2 = cProfile.Profile()
        p2.enable()
        for _ in range(20):
            build_schema("bench", definition_from_ngp(doc).fields)()
        p2.disable()
        buf.write("\n== 200-field NGP definition -> schema class -> instance (20 runs), top 25 by cumulative time ==\n")
        pstats.Stats(p2, stream=buf).sort_stats("cumulative").print_stats(25)
    out.write_text(buf.getvalue())
    return {"relay_ms": round(relay_ms, 3), "forwarder_ms": round(fwd_ms, 3),
            "extra_ms_by_package": [(name, round(r - f, 3)) for name, r, f in rows],
            "relay_steps_ms": [(name, round(ms, 3)) for name, ms in _relay_steps(relay_prof, count)]}


# -- main --------------------------------------------------------------------------------------------------------


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short runs (about 40 s in all)")
    parser.add_argument("--profile", action="store_true", help="write benchmarks/profile.txt even if all targets pass")
    parser.add_argument("--procs", type=int, default=4, help="load-generator processes")
    parser.add_argument("--conns", type=int, default=4, help="keep-alive connections per load-generator process")
    args = parser.parse_args()

    rounds, warmup, duration, probe_rounds, probe, count, schema_runs, profile_count = (
        (1, 1.0, 3.0, 1, 1.0, 200, 50, 300) if args.quick else (3, 1.5, 4.0, 2, 1.5, 1000, 50, 1000))
    concurrency = args.procs * args.conns
    # SIGTERM ends the run like Ctrl-C does, through the finally that stops every server.
    signal.signal(signal.SIGTERM, _interrupt)

    started = time.monotonic()
    cpu_at_start = cpu_times()
    workdir = Path(tempfile.mkdtemp(prefix="formrelay-bench-"))
    servers = Servers(workdir)
    finished = False
    try:
        from formrelay.core.config import load_config

        # The fake provider: ONE process (the sandbox counts calls per process), many threads.
        fake_port = free_port()
        fake = f"http://{HOST}:{fake_port}"
        fake_proc = servers.gunicorn("fake", "formrelay.sandbox:create_sandbox()", fake_port, 1, FAKE_THREADS, ROOT)
        wait_until(lambda: request_once(fake_port, "GET", "/_control/calls")[0] == 200, 30, "fake provider", fake_proc)

        config_path = workdir / "formrelay.toml"
        config_path.write_text(to_toml(relay_config(fake, workdir)))
        load_config(config_path)  # fail here, not in gunicorn, if the bench config is wrong

        # The relay, timed from spawn to the first delivered submission.
        relay_port = free_port()
        body = json.dumps(NGP_BODY).encode()
        t0 = time.monotonic()
        relay_proc = servers.gunicorn("relay", "wsgi:app", relay_port, RELAY_WORKERS, RELAY_THREADS, ROOT,
                                      env={"FORMRELAY_CONFIG": str(config_path)})

        def delivered() -> bool:
            status, answer = request_once(relay_port, "POST", "/v1/forms/join", body, JSON_HEADERS)
            return status == 200 and json.loads(answer).get("status") == "delivered"

        try:
            wait_until(delivered, 60, "relay", relay_proc)
        except RuntimeError:
            print(servers.log_tail("relay"), file=sys.stderr)
            raise
        cold_start = time.monotonic() - t0

        fwd_port = free_port()
        fwd_proc = servers.gunicorn("forwarder", "forwarder:app", fwd_port, RELAY_WORKERS, RELAY_THREADS, HERE,
                                    env={"FORWARDER_UPSTREAM": f"{fake}/ngp/v2/forms/demo-petition"})
        wait_until(lambda: request_once(fwd_port, "POST", "/v1/forms/join", body, JSON_HEADERS)[0] == 200, 30,
                   "forwarder", fwd_proc)

        form_body = urllib.parse.urlencode(NGP_BODY).encode()
        targets = {
            "relay": (relay_port, "/v1/forms/join", body, JSON_HEADERS),
            "forwarder": (fwd_port, "/v1/forms/join", body, JSON_HEADERS),
            "direct": (fake_port, "/ngp/v2/forms/demo-petition", form_body, FORM_HEADERS),
        }
        # Rounds interleave the targets, so that drift on a shared machine hits all three alike.
        runs: dict[str, list[Any]] = {name: [] for name in targets}
        for r in range(rounds):
            for name, (port, path, payload, headers) in targets.items():
                request_once(fake_port, "POST", "/_control/reset")  # the fake keeps every submission in memory
                print(f"... round {r + 1}/{rounds} {name}: {concurrency} connections, {warmup:g} s warm-up + "
                      f"{duration:g} s", file=sys.stderr)
                runs[name].append(run_load(port, path, payload, headers, args.procs, args.conns, warmup, duration))
        loaded = {name: summarise(r) for name, r in runs.items()}
        runs = {name: [] for name in targets}
        for r in range(probe_rounds):
            for name, (port, path, payload, headers) in targets.items():
                print(f"... round {r + 1}/{probe_rounds} {name}: 1 connection, {probe:g} s", file=sys.stderr)
                runs[name].append(run_load(port, path, payload, headers, 1, 1, 0.3, probe))
        unloaded = {name: summarise(r) for name, r in runs.items()}

        # Upstream calls per 1,000 submissions, per provider (sandbox reset before each).
        calls: dict[str, Any] = {}
        for provider, slug, payload in (("ngp", "join", NGP_BODY), ("ens", "mp", ENS_BODY),
                                        ("engageone", "toolkit", ENGAGEONE_BODY)):
            request_once(fake_port, "POST", "/_control/reset")
            print(f"... {provider}: {count} submissions through the relay", file=sys.stderr)
            run = load(relay_port, f"/v1/forms/{slug}", json.dumps(payload).encode(), JSON_HEADERS, 2, 4,
                       total=count)
            _, answer = request_once(fake_port, "GET", "/_control/calls")
            counted = json.loads(answer)
            scale = 1000 / run["requests"]
            delivery = f"{provider}:{DELIVERY_CALL[provider]}"
            calls[provider] = {
                "submissions": run["requests"], "relay_statuses": run["statuses"], "errors": run["errors"],
                "calls": counted,
                "delivery_calls_per_1000": round(counted.get(delivery, 0) * scale, 1),
                "once_off_calls": {k.split(":", 1)[1]: v for k, v in counted.items() if k != delivery},
            }

        # Peak RSS of each relay worker, after all the load it served.
        pids = worker_pids(relay_proc.pid)
        rss = {pid: peak_rss_mib(pid) for pid in pids}
        rss_values = [v for v in rss.values() if v is not None]

        schema = definition_to_schema(schema_runs)

        relay, fwd, direct = loaded["relay"], loaded["forwarder"], loaded["direct"]
        pct = relay["rps"] / fwd["rps"] * 100 if fwd["rps"] else 0.0
        added = relay["p50_ms"] - direct["p50_ms"]
        added_1 = unloaded["relay"]["p50_ms"] - unloaded["direct"]["p50_ms"]
        fwd_added_1 = unloaded["forwarder"]["p50_ms"] - unloaded["direct"]["p50_ms"]
        peak = max(rss_values) if rss_values else float("nan")
        checks = {
            "throughput_vs_forwarder_pct": (round(pct, 1), pct >= TARGETS["throughput_vs_forwarder_pct"]),
            "added_p50_ms": (round(added, 2), added <= TARGETS["added_p50_ms"]),
            "added_p50_ms_1_connection": (round(added_1, 2), added_1 <= TARGETS["added_p50_ms"]),
            "peak_rss_mib": (round(peak, 1), bool(rss_values) and peak < TARGETS["peak_rss_mib"]),
            "definition_to_schema_ms": (schema["total_ms"],
                                        schema["total_ms"] < TARGETS["definition_to_schema_ms"]),
        }
        relay_missed = [k for k, (_, ok) in checks.items() if not ok]
        profile_note: dict[str, Any] | None = None
        profile_error = None
        if relay_missed or args.profile:
            print(f"... profiling {profile_count} in-process submissions", file=sys.stderr)
            request_once(fake_port, "POST", "/_control/reset")
            try:
                profile_note = profile_submissions(fake, workdir, profile_count, HERE / "profile.txt",
                                                   schema_too="definition_to_schema_ms" in relay_missed)
            except Exception as exc:  # noqa: BLE001 (the figures stand without the profile)
                profile_error = f"{exc.__class__.__name__}: {exc}"
        finished = True
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the servers", file=sys.stderr)
        finished = True  # nothing to look into: no logs to keep
        return 130
    finally:
        servers.stop_all()
        if finished:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"server logs kept in {workdir}", file=sys.stderr)

    import gunicorn

    setup = (f"{os.cpu_count()} CPUs, Python {platform.python_version()}, gunicorn {gunicorn.__version__} "
             f"gthread; relay and forwarder: {RELAY_WORKERS} workers x {RELAY_THREADS} threads; fake provider: "
             f"1 worker x {FAKE_THREADS} threads")
    out: list[str] = [
        f"formrelay benchmark{' (--quick)' if args.quick else ''}: {setup}",
        f"load: closed loop, {concurrency} keep-alive connections ({args.procs} processes x {args.conns}), "
        f"{rounds} round(s) per target, interleaved, each {warmup:g} s warm-up + {duration:g} s measured; "
        f"1-connection rows: {probe_rounds} x {probe:g} s; all on 127.0.0.1",
        "",
        f"{'target':<12}{'conns':>6}{'rps':>10}{'p50 ms':>10}{'p99 ms':>10}{'requests':>10}{'errors':>8}",
    ]
    for label, table, conns in (("", loaded, concurrency), ("", unloaded, 1)):
        for name in targets:
            r = table[name]
            out.append(f"{name:<12}{conns:>6}{r['rps']:>10.0f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}"
                       f"{r['requests']:>10}{r['errors']:>8}")
    bad = {f"{n}/{c}": t[n]["statuses"] for t, c in ((loaded, concurrency), (unloaded, 1)) for n in targets
           if set(t[n]["statuses"]) != {"200"}}
    if bad:
        out.append(f"  answers other than 200: {bad}")
    out += [
        "",
        f"{'figure':<48}{'value':>12}  {'target':<10}",
        f"{'relay throughput as % of forwarder':<48}{pct:>11.1f}%  {'>= 80 %':<10}"
        f"{verdict(checks['throughput_vs_forwarder_pct'][1])}",
        f"{'added p50 latency, relay - direct (' + str(concurrency) + ' conns)':<48}{added:>9.2f} ms  "
        f"{'<= 2 ms':<10}{verdict(checks['added_p50_ms'][1])}",
        f"{'added p50 latency, relay - direct (1 conn)':<48}{added_1:>9.2f} ms  "
        f"{'<= 2 ms':<10}{verdict(checks['added_p50_ms_1_connection'][1])}",
        f"{'  of which the bare forwarder already adds':<48}{fwd_added_1:>9.2f} ms",
        f"{'  relay over the bare forwarder (1 conn)':<48}{added_1 - fwd_added_1:>9.2f} ms",
        f"{'peak RSS per relay worker (VmHWM, max)':<48}{peak:>8.1f} MiB  {'< 80 MiB':<10}"
        f"{verdict(checks['peak_rss_mib'][1])}",
        f"{'  each worker':<48}{', '.join(f'{v:.1f}' for v in rss_values):>12}",
        f"{'cold start to first delivered submission':<48}{cold_start:>10.2f} s  {'-':<10}",
        f"{'200-field NGP definition -> schema (median)':<48}{schema['total_ms']:>9.2f} ms  {'< 5 ms':<10}"
        f"{verdict(checks['definition_to_schema_ms'][1])}",
        f"{'  definition / build_schema / instantiate':<48}{schema['definition_ms']:>6.2f} / "
        f"{schema['build_schema_ms']:.2f} / {schema['instantiate_ms']:.2f} ms  ({schema['runs']} runs, "
        f"{schema['fields']} fields)",
        "",
        f"upstream calls per 1,000 submissions (measured over {count} through the relay, scaled; "
        f"{RELAY_WORKERS} relay worker processes; ENS page_budget raised to {ENS_PAGE_BUDGET}):",
    ]
    for provider, c in calls.items():
        once = ", ".join(f"{k} {v}" for k, v in sorted(c["once_off_calls"].items())) or "none"
        clean = c["errors"] == 0 and set(c["relay_statuses"]) == {"200"}
        extra = "" if clean else f"  relay answers {c['relay_statuses']}"
        out.append(f"  {provider:<10} {DELIVERY_CALL[provider]} {c['delivery_calls_per_1000']:g} per 1,000; "
                   f"once-off (not scaled): {once}{extra}")
    ens_auth = calls["ens"]["calls"].get("ens:authenticate", 0)
    e1_auth = calls["engageone"]["calls"].get("engageone:authenticate", 0)
    calls_ok = {
        "ngp": calls["ngp"]["calls"].get("ngp:submit", 0) == calls["ngp"]["submissions"],
        "ens": (calls["ens"]["calls"].get("ens:process", 0) == calls["ens"]["submissions"]
                and ens_auth <= RELAY_WORKERS),
        "engageone": (calls["engageone"]["calls"].get("engageone:send", 0) == calls["engageone"]["submissions"]
                      and e1_auth <= RELAY_WORKERS),
    }
    out.append("  one delivery call per submission, <= 1 authenticate per relay worker: "
               + ", ".join(f"{p} {verdict(ok)}" for p, ok in calls_ok.items())
               + f"  (authenticates: ens {ens_auth}, engageone {e1_auth})")

    out += ["", f"missed: {', '.join(relay_missed) or 'none'}"]
    if profile_note is not None:
        out.append(f"cProfile (benchmarks/profile.txt), in-process, per submission: relay "
                   f"{profile_note['relay_ms']:.2f} ms, forwarder {profile_note['forwarder_ms']:.2f} ms; "
                   f"the relay's extra own time, largest first:")
        out += [f"  {name:<44}{ms:>+7.3f} ms" for name, ms in profile_note["extra_ms_by_package"][:8]]
    if profile_error:
        out.append(f"profile failed: {profile_error}")

    elapsed = time.monotonic() - started
    cpu_at_end = cpu_times()
    jiffies = cpu_at_end[0] - cpu_at_start[0]
    steal_pct = round((cpu_at_end[1] - cpu_at_start[1]) / jiffies * 100, 1) if jiffies > 0 else None
    out += ["", f"total run time {elapsed:.0f} s; CPU steal during the run "
                f"{'n/a' if steal_pct is None else f'{steal_pct:g} %'} (a busy host makes runs vary)"]
    print("\n".join(out))

    results = {
        "quick": args.quick,
        "setup": {"cpus": os.cpu_count(), "python": platform.python_version(), "gunicorn": gunicorn.__version__,
                  "worker_class": "gthread", "relay_workers": RELAY_WORKERS, "relay_threads": RELAY_THREADS,
                  "fake_workers": 1, "fake_threads": FAKE_THREADS, "load_processes": args.procs,
                  "connections_per_process": args.conns, "rounds": rounds, "warmup_s": warmup, "measure_s": duration,
                  "one_connection_rounds": probe_rounds, "one_connection_s": probe,
                  "ens_page_budget": ENS_PAGE_BUDGET},
        "loaded": loaded,
        "one_connection": unloaded,
        "cold_start_s": round(cold_start, 3),
        "peak_rss_mib": {str(pid): (round(v, 1) if v is not None else None) for pid, v in rss.items()},
        "definition_to_schema": schema,
        "upstream_calls": {**calls, "measured_submissions": count, "ok": calls_ok},
        "targets": {k: {"value": v, "target": TARGETS.get(k.replace("_1_connection", "")), "pass": ok}
                    for k, (v, ok) in checks.items()},
        "profile": profile_note,
        "run_time_s": round(elapsed, 1),
        "cpu_steal_pct": steal_pct,
    }
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

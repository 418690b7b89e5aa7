"""The targets under load: the relay, a bare forwarder and the fake provider, each a gunicorn on 127.0.0.1;
the relay's config; the processes' CPU and memory figures."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # formrelay from this checkout

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
            "ngp": {"base_url": f"{fake}/ngp/v2", "api_key": "sandbox-ngp-api-key"},
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

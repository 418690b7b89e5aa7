"""Real server processes for end-to-end tests: `formrelay serve`, gunicorn with the shipped config, nginx."""
from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import _need, free_port, wait_until_serving

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PERSON = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009"}


def toml(relay: dict[str, Any] | None = None, sandbox_url: str = "", extra: str = "",
         queue_path: Path | None = None, logging_format: str = "text") -> str:
    """A config with the sandbox NGP form `join`, and whatever [relay] keys a test needs."""
    lines = ["[relay]"] + [f"{key} = {value_toml(value)}" for key, value in {"rate_limit": "", **(relay or {})}.items()]
    lines += ["[logging]", f'format = "{logging_format}"']
    if queue_path is not None:
        lines += ["[queue]", f'path = "{queue_path}"', "backoff_base = 0.2", "backoff_cap = 1", "poll_interval = 0.1"]
    lines += ["[providers.ngp]", f'base_url = "{sandbox_url}/ngp/v2"', 'api_key = "sandbox-ngp-api-key"',
              "[forms.join]", 'provider = "ngp"', 'form_id = "demo-petition"', extra]
    return "\n".join(lines) + "\n"


def value_toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(value_toml(v) for v in value) + "]"
    return json.dumps(value)  # a JSON string of ASCII text is a TOML basic string


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    url: str
    port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def raise_fd_limit(wanted: int = 8192) -> None:
    """The tests open over a thousand sockets at once; lift the soft limit as far as the hard one allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def server_command(kind: str, config: Path, port: int, workers: int = 2, threads: int = 4) -> list[str]:
    if kind == "serve":
        return [str(BIN / "formrelay"), "serve", "--config", str(config), "--port", str(port),
                "--workers", str(workers), "--threads", str(threads)]
    if kind == "gunicorn":
        return [str(BIN / "gunicorn"), "-c", "python:formrelay.gunicorn_conf", "--workers", str(workers),
                "--threads", str(threads), "--bind", f"127.0.0.1:{port}", "wsgi:app"]
    raise ValueError(kind)


def clean_env(config: Path, **more: str) -> dict[str, str]:
    """The environment a user would have: FORMRELAY_CONFIG, and no PROMETHEUS_MULTIPROC_DIR of the test's."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["FORMRELAY_CONFIG"] = str(config)
    env.update(more)
    return env


@contextlib.contextmanager
def running(kind: str, config: Path, tmp_path: Path, workers: int = 2, threads: int = 4,
            env: dict[str, str] | None = None, name: str | None = None) -> Iterator[Running]:
    """Start `formrelay serve` or gunicorn on a free loopback port; SIGTERM (then the whole group) after."""
    port = free_port()
    log = tmp_path / f"{name or kind}-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(server_command(kind, config, port, workers, threads), cwd=ROOT,
                                env=env or clean_env(config), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = Running(proc, f"http://127.0.0.1:{port}", port, log)
    try:
        try:
            wait_until_serving(server.url, proc, 30)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{server.output()[-3000:]}") from None
        yield server
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # workers that outlived their master
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def post_raw(port: int, path: str, body: bytes, headers: dict[str, str] | None = None,
             source: str | None = None, timeout: float = 10) -> tuple[int, bytes, dict[str, str]]:
    """One POST on a fresh connection, optionally from another loopback source address (a different visitor)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json", "Accept": "application/json",
                                          **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def get_raw(port: int, path: str, headers: dict[str, str] | None = None, source: str | None = None,
            timeout: float = 10) -> tuple[int, bytes]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def hostile_sockets(port: int, unfinished: int, idle: int) -> list[socket.socket]:
    """`unfinished` connections that never finish their headers, `idle` keep-alive ones after one request."""
    socks: list[socket.socket] = []
    for _ in range(unfinished):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"POST /v1/forms/join HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\nX-Slow: ")
        socks.append(s)
    for _ in range(idle):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
        socks.append(s)
    # Read each answer, so that the connection is idle, kept alive by the server (bounded: a server that
    # cannot answer them all is caught by the submission that follows).
    read_answers(socks[unfinished:], 5.0)
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


@contextlib.contextmanager
def nginx_with(http: str, tmp_path: Path) -> Iterator[int]:
    """Debian's nginx on a free loopback port with every path under tmp_path; `http` is the inside of its http
    block, with {port} where the server listens."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        _need("nginx")
    assert binary is not None
    port = free_port()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    user = "user root;\n" if os.geteuid() == 0 else ""  # as root, workers would drop to nobody: keep paths ours
    (prefix / "nginx.conf").write_text(f"""{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
{http.replace("{port}", str(port))}
}}
""")
    proc = subprocess.Popen([binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(f"nginx exited: {proc.stderr.read().decode(errors='replace')}")  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
        yield port
    finally:
        stop(proc, timeout=10)


def nginx(upstream_port: int, tmp_path: Path) -> contextlib.AbstractContextManager[int]:
    """Debian's nginx on a free loopback port, proxying to the relay, with every path under tmp_path."""
    return nginx_with(f"""  client_max_body_size 1m;
  upstream relay {{ server 127.0.0.1:{upstream_port}; keepalive 8; }}
  server {{
    listen 127.0.0.1:{{port}};
    location / {{
      proxy_pass http://relay;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
    }}
  }}""", tmp_path)

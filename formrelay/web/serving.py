"""`formrelay serve`: the relay under granian (a Rust HTTP server with a WSGI interface), tuned for the open internet.

Why granian (figures in docs/deploy/serving.md, from `python benchmarks/serving.py`): its connections live in a
Rust event loop, so a thousand idle keep-alive connections or hundreds of half-sent requests cost a few kilobytes each and
occupy none of the Python threads that run the relay; it bounds the time to send headers (which also closes idle
keep-alive connections); it answers a too-large body without reading it; and it runs several worker processes.
Each worker process builds the app from $FORMRELAY_CONFIG, starts its embedded queue worker, and hands the
queue's leases back when granian stops it (SIGTERM: stop accepting, finish the requests in flight, exit).
"""
from __future__ import annotations

import errno
import logging
import os
import resource
import shutil
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# How long a client may take to send a request's headers, and how long a keep-alive connection may sit idle
# (granian's one HTTP/1 header-read timer covers both). Browsers reopen a closed keep-alive connection silently.
HEADER_READ_TIMEOUT_MS = 10_000
# Connections one worker holds at once; an idle one costs a few KB in the Rust loop, none of the Python threads.
CONNECTIONS_PER_WORKER = 8192
BACKLOG = 2048
# After SIGTERM, how long a worker may take to finish its requests and hand back queue leases before it is killed.
STOP_TIMEOUT = 30
WANTED_OPEN_FILES = 65536


class ServeError(Exception):
    """Serving cannot start; the message says what to do."""


def worker_app() -> Any:
    """granian's factory, run in each worker process: the app, its queue worker, from $FORMRELAY_CONFIG."""
    stop_asked = _hold_stop_signals()
    _stop_with_the_master()
    from formrelay.web.app import create_app, start_embedded_worker

    app = create_app()
    start_embedded_worker(app)
    _pass_on_later(stop_asked)
    return app


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _hold_stop_signals() -> threading.Event:
    """Remember a SIGTERM that comes while the worker is still loading the app.

    granian installs the worker's own handlers only after this factory returns; until then a forked worker
    has the master's, which only set a flag in the worker's copy of the master: a deploy that stops the server
    during start-up would leave that worker serving until the kill timeout.
    """
    asked = threading.Event()
    for sig in _STOP_SIGNALS:
        signal.signal(sig, lambda *_: asked.set())
    return asked


MASTER_ENV = "FORMRELAY_SERVE_MASTER"


def _stop_with_the_master() -> None:
    """Ask Linux for a SIGTERM when the master process dies (kill -9, OOM killer), and act on one already gone.

    Without it, workers of a master killed outright would keep serving the port and working the queue, unseen by
    the next `formrelay serve` and by whatever supervises it.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
    master = os.environ.get(MASTER_ENV)
    if master and master.isdigit() and os.getppid() != int(master):
        os.kill(os.getpid(), signal.SIGTERM)  # held, and passed on once granian listens for it


def _pass_on_later(asked: threading.Event) -> None:
    """Once granian's handler is in place, deliver the SIGTERM that came during loading (if one did)."""
    ours = signal.getsignal(signal.SIGTERM)

    def wait_then_signal() -> None:
        deadline = time.monotonic() + 60
        while signal.getsignal(signal.SIGTERM) is ours and time.monotonic() < deadline:
            time.sleep(0.01)
        if asked.is_set():
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait_then_signal, name="formrelay-early-stop", daemon=True).start()


def check_port(host: str, port: int) -> None:
    """Fail with words a person can act on when the address cannot be bound (granian would print a traceback)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ServeError(f"port {port} on {host} is already in use (another formrelay or server is "
                                 f"listening there): stop it, or choose another with --port") from None
            if exc.errno == errno.EACCES:
                raise ServeError(f"not allowed to listen on port {port}: ports below 1024 need root; use a port "
                                 f"above 1024 behind your proxy") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ServeError(f"{host} is not an address of this machine: use 127.0.0.1 behind a proxy on "
                                 f"this host, or 0.0.0.0 for every interface") from None
            raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def raise_open_files_limit() -> int:
    """Lift the soft limit on open files towards the hard one: every connection is a file descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = WANTED_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, WANTED_OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            return wanted
        except (ValueError, OSError):
            return soft
    return soft




def log_config(fmt: str) -> dict[str, Any]:
    """granian's own lines (start, stop, worker exits) in the relay's format, on stderr like the relay's."""
    formatter = "formrelay.core.logs.JSONFormatter" if fmt == "json" else "formrelay.core.logs.TextFormatter"
    return {
        "formatters": {"relay": {"()": formatter}},
        "handlers": {"relay": {"class": "logging.StreamHandler", "formatter": "relay", "stream": "ext://sys.stderr"}},
        "loggers": {
            "_granian": {"handlers": ["relay"], "level": "INFO", "propagate": False},
            "granian.access": {"handlers": ["relay"], "level": "INFO", "propagate": False},
        },
    }


def serve(config_path: str | None, host: str, port: int, workers: int | None, threads: int) -> None:
    """Validate the config here (one clear error rather than one per worker), then run granian until SIGTERM.

    workers None: 2 when Redis shares rate limits and budgets between processes, else 1 (see below).
    """
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    import formrelay.delivery.relay  # noqa: F401  (registers the providers and sections the config reads)
    from formrelay.core import logs
    from formrelay.core.config import CONFIG_ENV, load_config

    config = load_config(config_path)  # ConfigError goes to the caller
    os.environ[CONFIG_ENV] = str(Path(config.source).resolve())
    logs.configure(config.logging.format, config.logging.level)
    shared = bool(config.relay.redis_url)
    if workers is None:
        workers = 2 if shared else 1
    elif workers > 1 and not shared:
        # Without Redis each process counts in its own memory: per-address limits and provider budgets
        # (Action Network's 4/second, ENS's 200/5 minutes) would each be multiplied by the number of workers.
        log.warning("%d workers without [relay] redis_url: rate limits and provider budgets are counted per "
                    "worker, so they allow %d times as much; set redis_url to share them", workers, workers)
    check_port(host, port)
    raise_open_files_limit()
    from formrelay.metrics import share_between_workers

    made = share_between_workers()
    os.environ[MASTER_ENV] = str(os.getpid())
    server = Granian(
        "formrelay.web.serving:worker_app",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        workers=workers,
        blocking_threads=threads,
        backlog=BACKLOG,
        backpressure=CONNECTIONS_PER_WORKER,
        http=HTTPModes.http1,  # behind a proxy HTTP/1.1 is what it speaks upstream; h2c is not offered
        websockets=False,
        http1_settings=HTTP1Settings(header_read_timeout=HEADER_READ_TIMEOUT_MS, keep_alive=True),
        log_dictconfig=log_config(config.logging.format),
        log_level=LogLevels(config.logging.level.lower()),
        respawn_failed_workers=True,
        workers_kill_timeout=STOP_TIMEOUT,
    )
    log.info("formrelay listening on http://%s:%d/ (%d worker(s) x %d thread(s))", host, port, workers, threads)
    try:
        server.serve()
    finally:
        if made:
            shutil.rmtree(made, ignore_errors=True)

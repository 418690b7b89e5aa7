"""gunicorn settings for the relay: `gunicorn -c python:formrelay.gunicorn_conf formrelay.wsgi:app` (or `wsgi:app` in a checkout).

What it does that a bare `gunicorn wsgi:app` doesn't: it gives prometheus-client a directory to share counters
between workers (so /metrics, whichever worker answers it, counts for all of them), empties that directory at
start (values of a previous run must not leak in), and tells prometheus-client when a worker exits. It also
bounds how long a client may take to send its headers (slow clients tie up a gthread thread: put a buffering
proxy in front, or use `formrelay serve`), and stops each worker's queue threads on exit so that their leases
are handed back. Flags on the command line still win over the defaults here.
"""
from __future__ import annotations

import os
from typing import Any

workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("FORMRELAY_THREADS", "8"))
bind = os.environ.get("FORMRELAY_BIND", "127.0.0.1:8000")
# The embedded queue worker runs threads in each web worker: they don't survive a fork, so no preload.
preload_app = False

# Before the workers start: a shared directory for prometheus-client, emptied now, switched over even if
# something imported prometheus-client before this file ran.
from formrelay.metrics import share_between_workers  # noqa: E402

share_between_workers()



def _log_format() -> str:
    """[logging] format of the relay's config, so gunicorn's own lines come out in the same format."""
    try:
        import formrelay.delivery.relay  # noqa: F401  (registers what the config reads)
        from formrelay.core.config import load_config

        return load_config().logging.format
    except Exception:  # the workers will report a broken config in words; here, fall back to text
        return "text"


# gunicorn's own lines (start, worker boot and exit) through the relay's formatter, once each.
logconfig_dict = {
    "root": {"level": "WARNING", "handlers": []},  # the relay puts its own handler there, in each worker
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
    },
    "formatters": {"generic": {"()": "formrelay.core.logs." + ("JSONFormatter" if _log_format() == "json"
                                                               else "TextFormatter")}},
}

# gthread keeps idle keep-alive connections in its poller (not in a thread) for this long.
keepalive = 10
# SIGTERM: finish requests in flight for up to this long, then exit.
graceful_timeout = 30


def worker_exit(server: Any, worker: Any) -> None:
    """In the worker, as it leaves: stop the embedded queue threads and hand back the leases they hold."""
    from formrelay.delivery.worker import stop_embedded_workers

    stop_embedded_workers()


def child_exit(server: Any, worker: Any) -> None:
    from formrelay.metrics import mark_process_dead

    mark_process_dead(worker.pid)

"""gunicorn settings for the relay: `gunicorn -c python:formrelay.gunicorn_conf wsgi:app`.

What it does that a bare `gunicorn wsgi:app` doesn't: it gives prometheus-client a directory to share counters
between workers (so /metrics, whichever worker answers it, counts for all of them), empties that directory at
start (values of a previous run must not leak in), and tells prometheus-client when a worker exits. Flags on
the command line still win over the defaults here.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("FORMRELAY_THREADS", "8"))
bind = os.environ.get("FORMRELAY_BIND", "127.0.0.1:8000")
# The embedded queue worker runs threads in each web worker: they don't survive a fork, so no preload.
preload_app = False

_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _metrics_dir:
    Path(_metrics_dir).mkdir(parents=True, exist_ok=True)
    for stale in Path(_metrics_dir).glob("*.db"):
        stale.unlink()
else:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="formrelay-metrics-")


def child_exit(server: Any, worker: Any) -> None:
    from formrelay.metrics import mark_process_dead

    mark_process_dead(worker.pid)

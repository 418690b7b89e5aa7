"""Sandbox providers: a small local HTTP server that answers like each CRM, for the demo and end-to-end tests.

Nothing here is used when the relay talks to real providers. The sandbox records what it received and can be
told to fail, so tests can check exactly what reached "the CRM".

Lives here: state (what was received, failures to answer with), one fake per CRM, and this package, which
mounts them with the control endpoints. May import: nothing else of formrelay (a fake built from the relay's
own code would agree with its bugs); the fakes never import this package or each other.
"""
from __future__ import annotations

import threading
from typing import Any

from flask import Blueprint, Flask, jsonify, request
from werkzeug.serving import BaseWSGIServer, make_server

from formrelay.sandbox import actionnetwork, engageone, ens, ngp
from formrelay.sandbox.state import SandboxState, state

__all__ = ["SandboxState", "ServerThread", "create_sandbox", "state"]


control = Blueprint("control", __name__, url_prefix="/_control")


@control.post("/fail")
def fail() -> Any:
    """{"provider": "ngp", "status": 503, "count": 3}: the next `count` submissions get `status`."""
    spec = request.get_json(force=True)
    with state().lock:
        state().failures[spec["provider"]] += [int(spec.get("status", 503))] * int(spec.get("count", 1))
    return jsonify({"ok": True})


@control.post("/limit")
def limit() -> Any:
    """{"provider": "ens", "calls": 10}: after 10 calls the provider answers its documented limit error."""
    spec = request.get_json(force=True)
    with state().lock:
        state().limits[spec["provider"]] = int(spec["calls"])
    return jsonify({"ok": True})


@control.post("/delay")
def delay() -> Any:
    spec = request.get_json(force=True)
    state().delay[spec["provider"]] = float(spec.get("seconds", 0))
    return jsonify({"ok": True})


@control.post("/hang")
def hang() -> Any:
    """{"provider": "ngp", "seconds": 30}: submissions are held that long (or until /recover), then dropped."""
    spec = request.get_json(force=True)
    state().hang[spec["provider"]] = float(spec.get("seconds", 30))
    return jsonify({"ok": True})


@control.get("/received/<provider>")
def received(provider: str) -> Any:
    with state().lock:
        return jsonify(list(state().received.get(provider, [])))


@control.get("/calls")
def calls() -> Any:
    with state().lock:
        return jsonify(dict(state().calls))


@control.post("/recover")
def recover() -> Any:
    """End a simulated outage, keeping what was received."""
    sandbox = state()
    with sandbox.lock:
        sandbox.failures.clear()
        sandbox.delay.clear()
        sandbox.hang.clear()
    return jsonify({"ok": True})


@control.post("/reset")
def reset() -> Any:
    sandbox = state()
    with sandbox.lock:
        sandbox.received.clear()
        sandbox.calls.clear()
        sandbox.failures.clear()
        sandbox.delay.clear()
        sandbox.hang.clear()
        sandbox.limits.clear()
    return jsonify({"ok": True})


def create_sandbox() -> Flask:
    """The sandbox app with every fake provider mounted under /<provider>/..."""
    app = Flask(__name__)
    app.extensions["sandbox"] = SandboxState()
    app.register_blueprint(control)
    app.register_blueprint(ngp.bp)
    app.register_blueprint(ens.bp)
    app.register_blueprint(actionnetwork.bp)
    app.register_blueprint(engageone.bp)
    return app


class ServerThread:
    """A WSGI app served on 127.0.0.1 in a daemon thread (tests and the demo)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server: BaseWSGIServer = make_server(host, port, app, threaded=True)
        self.url = f"http://{host}:{self.server.server_port}"
        # A short poll keeps shutdown quick: tests start and stop many servers.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name=f"serve-{self.url}", daemon=True
        )

    def start(self) -> ServerThread:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

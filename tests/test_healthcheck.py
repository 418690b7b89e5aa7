"""`formrelay healthcheck`: 0 for a relay that is ready (ok or degraded), 1 for anything else, in one line."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask, jsonify

from formrelay import create_app
from formrelay.cli import main
from formrelay.sandbox import ServerThread
from tests.conftest import base_config, free_port


@pytest.fixture
def answering() -> Iterator[Any]:
    """A small server whose /readyz and /healthz say what the test wants."""
    started: list[ServerThread] = []

    def start(ready: tuple[int, Any], live: tuple[int, Any] = (200, {"status": "ok"})) -> int:
        app = Flask(__name__)
        app.add_url_rule("/readyz", "readyz", lambda: (jsonify(ready[1]) if isinstance(ready[1], dict)
                                                       else ready[1], ready[0]))
        app.add_url_rule("/healthz", "healthz", lambda: (jsonify(live[1]), live[0]))
        server = ServerThread(app).start()
        started.append(server)
        return server.server.server_port

    yield start
    for server in started:
        server.stop()


def check(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, ["healthcheck", *args], env=env or {})


def test_a_ready_relay_is_healthy(serve: Any) -> None:
    server = serve(create_app(base_config()))
    result = check("--port", str(server.server.server_port))
    assert result.exit_code == 0, result.output
    assert result.output == f"http://127.0.0.1:{server.server.server_port}/readyz: HTTP 200 ok\n"


def test_the_port_comes_from_the_environment_as_serve_takes_it(serve: Any) -> None:
    port = serve(create_app(base_config())).server.server_port
    assert check(env={"FORMRELAY_PORT": str(port), "FORMRELAY_HOST": "0.0.0.0"}).exit_code == 0


def test_degraded_is_still_healthy_and_says_why(answering: Any) -> None:
    port = answering((200, {"status": "degraded", "problems": ["ens: authentication failing"]}))
    result = check("--port", str(port))
    assert result.exit_code == 0 and "degraded (ens: authentication failing)" in result.output


def test_unavailable_is_unhealthy(answering: Any) -> None:
    port = answering((503, {"status": "unavailable", "problems": []}))
    result = check("--port", str(port))
    assert result.exit_code == 1 and "unhealthy" in result.output and "HTTP 503 unavailable" in result.output


def test_live_asks_healthz_only(answering: Any) -> None:
    port = answering((503, {"status": "unavailable"}))
    assert check("--port", str(port), "--live").exit_code == 0


def test_something_else_on_the_port_is_not_a_healthy_relay(answering: Any) -> None:
    port = answering((200, "<html>it works</html>"))
    result = check("--port", str(port))
    assert result.exit_code == 1 and "not a formrelay answer" in result.output


def test_nothing_listening_is_unhealthy_in_one_line() -> None:
    result = check("--port", str(free_port()), "--timeout", "1")
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "unhealthy" in result.output and "Traceback" not in result.output


def test_version_is_the_package_version() -> None:
    from formrelay.core.version import __version__

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and result.output == f"formrelay, version {__version__}\n"


def test_the_queue_path_from_the_environment_fills_in_only_what_the_file_leaves_out(tmp_path: Any) -> None:
    from formrelay.core.config import load_config

    wanted = str(tmp_path / "volume" / "queue.sqlite3")
    bare = tmp_path / "bare.toml"
    bare.write_text('[relay]\nrate_limit = ""\n')
    assert load_config(bare, env={"FORMRELAY_QUEUE_PATH": wanted}).queue.path == wanted
    assert load_config(bare, env={}).queue.path is None
    own = tmp_path / "own.toml"
    own.write_text('[queue]\npath = "/srv/queue.sqlite3"\nworkers = 3\n')
    config = load_config(own, env={"FORMRELAY_QUEUE_PATH": wanted})
    assert config.queue.path == "/srv/queue.sqlite3" and config.queue.workers == 3

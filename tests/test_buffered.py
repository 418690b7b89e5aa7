"""Answers with an in-memory body reach the WSGI server as one list of bytes; streamed ones stay iterators."""
from __future__ import annotations

from typing import Any

from flask import Flask

from formrelay.web import buffered


def _call(app: Flask, path: str, method: str = "GET") -> tuple[Any, list[Any]]:
    started: list[Any] = []
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "SERVER_NAME": "relay", "SERVER_PORT": "80",
               "wsgi.url_scheme": "http", "wsgi.input": None, "QUERY_STRING": ""}
    body = app.wsgi_app(environ, lambda status, headers, exc_info=None: started.append((status, headers)))
    return body, started


def test_in_memory_bodies_are_one_list_and_close_callbacks_run() -> None:
    app = Flask(__name__)
    app.response_class = buffered.Response
    closed: list[str] = []

    @app.get("/json")
    def json_answer() -> Any:
        response = app.json.response({"status": "delivered"})
        response.call_on_close(lambda: closed.append("json"))
        return response

    @app.get("/stream")
    def stream() -> Any:
        return app.response_class((part for part in (b"a", b"b")), mimetype="text/plain")

    body, started = _call(app, "/json")
    assert isinstance(body, list) and len(body) == 1 and b'"delivered"' in body[0]
    assert started[0][0] == "200 OK" and ("Content-Length", str(len(body[0]))) in started[0][1]
    assert closed == ["json"]
    head, _ = _call(app, "/json", "HEAD")
    assert head == []
    streamed, _ = _call(app, "/stream")
    assert not isinstance(streamed, list) and b"".join(streamed) == b"ab"


def test_the_relay_answers_with_the_buffered_response(app: Any) -> None:
    assert app.response_class is buffered.Response

"""Answers whose body is already in memory go to the server as one list of bytes, not as an iterator."""
from __future__ import annotations

from typing import Any

from flask import Response as FlaskResponse


class Response(FlaskResponse):
    """Flask's response, handed to the WSGI server as `[body]` when the body is a list of strings or bytes.

    werkzeug answers every response with an iterator (ClosingIterator), which a WSGI server must step through
    one chunk at a time. granian writes an iterator's chunks from the Python thread while holding the GIL, and
    takes a list in one call: a fifth of the GIL time of a submission went to stepping through one-chunk
    iterators (docs/performance.md). Bodies made by generators (streaming) and files passed through are left
    as they are; `close()` and its callbacks still run, before the list is returned.
    """

    def __call__(self, environ: Any, start_response: Any) -> Any:
        if not self.is_sequence or self.direct_passthrough:
            return super().__call__(environ, start_response)
        app_iter, status, headers = self.get_wsgi_response(environ)
        try:
            body = b"".join(app_iter)
        finally:
            close = getattr(app_iter, "close", None)
            if close is not None:
                close()
        start_response(status, headers)
        return [body] if body else []

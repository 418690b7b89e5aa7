"""Log hygiene: every configured secret and every token the relay obtains is masked in every log record."""
from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable

MASK = "[redacted]"

_secrets: set[str] = set()
_lock = threading.Lock()
_installed = False
_personal_data = False

EMAIL = re.compile(r"([A-Za-z0-9])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")
# A phone-like run: optional +, a digit, then digits and ' ().-'. Nothing follows the greedy class, so the
# engine never backtracks into it; where the run may end (a digit not followed by a word character or '.')
# is decided in Python, one look per character. The old single regex (`...[\d ().-]{6,}\d(?![\w.])`)
# backtracked over every start: 24 KB of digits and spaces took seconds.
PHONE_RUN = re.compile(r"(?<![\w.])\+?\d[\d ().-]*")
PHONE_MIN_CHARS = 8  # as before: a digit, at least six more characters, a final digit (plus an optional +)


def show_personal_data(on: bool) -> None:
    """[logging] personal_data = true: log email addresses and phone numbers unmasked (for debugging only)."""
    global _personal_data
    _personal_data = on


def _phone(text: str) -> str:
    digits = [c for c in text if c.isdigit()]
    if len(digits) < 9:  # dates, amounts and counts are not phone numbers
        return text
    return "*" * (len(digits) - 2) + "".join(digits[-2:])


def _ends_here(text: str, i: int) -> bool:
    """A phone number may end at text[i]: a digit not followed by a word character or a dot."""
    if not text[i].isdigit():
        return False
    following = text[i + 1] if i + 1 < len(text) else ""
    return not (following == "." or following == "_" or following.isalnum())


def mask_phones(text: str) -> str:
    """Mask phone-like runs of nine digits or more, in time linear in the text."""
    out: list[str] = []
    emitted = pos = 0
    while (match := PHONE_RUN.search(text, pos)) is not None:
        start, end = match.span()
        last = end - 1
        while last >= start and not _ends_here(text, last):
            last -= 1
        if last - start + 1 < PHONE_MIN_CHARS + (text[start] == "+"):
            pos = end  # a later start inside this run could only end at the same place or earlier: skip it
            continue
        out += [text[emitted:start], _phone(text[start:last + 1])]
        emitted = pos = last + 1
    out.append(text[emitted:])
    return "".join(out)


def mask_personal(text: str) -> str:
    """a***@example.org and *********23: enough to tell records apart, not enough to identify anyone."""
    if _personal_data:
        return text
    return mask_phones(EMAIL.sub(r"\1***@\2", text))


def add_secrets(values: Iterable[str]) -> None:
    """Mask these values from now on (config secrets at start-up, tokens as they are obtained)."""
    with _lock:
        _secrets.update(v for v in values if isinstance(v, str) and len(v) >= 4)


def mask(text: str) -> str:
    """text with every known secret replaced by [redacted], longest first (one secret may contain another)."""
    text = mask_personal(text)
    if not _secrets:
        return text
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def install() -> None:
    """Wrap the log-record factory once, so records from any logger (ours, urllib3, werkzeug) are masked."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if _secrets or not _personal_data:
            try:
                message = record.getMessage()
            except Exception:  # a bad format string must not hide the record
                message = str(record.msg)
            record.msg = mask(message)
            record.args = None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = mask(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(factory)


# -- structured output ---------------------------------------------------------------------------------

REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# Attributes every LogRecord has; anything else on a record came from `extra=` and belongs in the JSON.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "request_id"}


def request_id() -> str | None:
    """The current request's id (taken from X-Request-ID when sane, else made), or None outside a request."""
    from flask import g, has_request_context

    if not has_request_context():
        return None
    return g.get("request_id")


class RequestIdFilter(logging.Filter):
    """Puts the request id on every record made while a request is served."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id()
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request id, and the record's `extra` fields."""

    converter = time.gmtime  # type: ignore[assignment]

    def format(self, record: logging.LogRecord) -> str:
        import json

        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "request_id", None):
            entry["request_id"] = record.request_id  # type: ignore[attr-defined]
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = record.exc_text or mask(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        rid = getattr(record, "request_id", None)
        return f"{line} [request {rid}]" if rid else line


def _ours(handler: logging.Handler) -> bool:
    return bool(getattr(handler, "_formrelay", False))


def configure(fmt: str = "text", level: str = "INFO") -> None:
    """Send records to stderr in `fmt`, once, unless the host (pytest, an embedding app) already set up logging.

    When nobody configured the root logger, our handler goes there, so that libraries' warnings (Flask-Limiter,
    urllib3, the server's own) come out in the same format, and so that a server calling
    `logging.basicConfig()` after us (waitress does) finds the root configured and adds no second handler.
    When the host configured the root logger, we add nothing (records propagate to its handlers).
    """
    install()
    root = logging.getLogger()
    logging.getLogger("formrelay").setLevel(level)
    for handler in [h for h in root.handlers if _ours(h)]:
        root.removeHandler(handler)
    if root.handlers:
        for handler in root.handlers:
            if not any(isinstance(f, RequestIdFilter) for f in handler.filters):
                handler.addFilter(RequestIdFilter())
        return
    root.addHandler(handler_for(fmt))
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)  # other libraries: warnings and worse


def handler_for(fmt: str) -> logging.Handler:
    """A stderr handler with the relay's formatter and request ids."""
    handler = logging.StreamHandler()
    handler._formrelay = True  # type: ignore[attr-defined]
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    return handler

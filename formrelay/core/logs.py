"""Log hygiene: every configured secret and every token the relay obtains is masked in every log record, and
nothing a client or a CRM wrote can start a line of its own or reach a terminal as a control sequence."""
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
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not hide the record
            message = str(record.msg)
        masking = bool(_secrets or not _personal_data)
        # Escaped here too, so that a handler with another formatter (a host's) gets one line a record as well.
        record.msg = printable(mask(message) if masking else message)
        record.args = None
        if masking and record.exc_info and record.exc_info[1] is not None:
            record.exc_text = mask(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(factory)


# -- escaping: one record is one line, and no terminal control or bidi override gets through ----------------

# C0 controls (newline, ESC, ...), DEL, C1 controls (U+0085 next line, U+009B CSI, ...), the Unicode line and
# paragraph separators, and the bidirectional marks and overrides (a name shown reversed hides what it says).
_UNPRINTABLE = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), 0x061C, 0x200E, 0x200F, 0x2028, 0x2029,
                *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0xFEFF]
_ESCAPE = {c: f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" for c in _UNPRINTABLE}
_ESCAPE.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"})
_ESCAPE_KEEP_NEWLINES = {c: e for c, e in _ESCAPE.items() if c != 0x0A}


def printable(text: str, newlines: bool = False) -> str:
    """text with every control and bidi character written as an escape (\\n, \\x1b, \\u202e): safe for one
    log line or a terminal. newlines=True keeps line breaks (a traceback's lines, split by the caller)."""
    return text.translate(_ESCAPE_KEEP_NEWLINES if newlines else _ESCAPE)


def clip(text: object, limit: int = 200) -> str:
    """At most `limit` characters of a client's text (a path, a method), escaped, saying how much was left out."""
    value = str(text)
    if len(value) <= limit:
        return printable(value)
    return f"{printable(value[:limit])}...({len(value) - limit} more characters)"


def _printable_value(value: object) -> object:
    """A JSON log field with every string in it escaped (lists and dicts of names too)."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, list | tuple):
        return [_printable_value(v) for v in value]
    if isinstance(value, dict):
        return {printable(str(k)): _printable_value(v) for k, v in value.items()}
    return value


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
            "message": printable(record.getMessage()),
        }
        if getattr(record, "request_id", None):
            entry["request_id"] = record.request_id  # type: ignore[attr-defined]
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = _printable_value(value)
        if record.exc_info:
            entry["exception"] = printable(record.exc_text or mask(self.formatException(record.exc_info)),
                                           newlines=True)
        if record.stack_info:
            entry["stack"] = printable(self.formatStack(record.stack_info), newlines=True)
        # ensure_ascii=False keeps names such as Müller readable; what a terminal or a viewer would act on
        # (C1 controls, bidi overrides) was escaped above, and json escapes the C0 controls itself.
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """One line a record, escaped; a traceback follows on lines that begin with spaces, so that no line a
        client or a CRM wrote can pass for a record (records begin with their time)."""
        record.message = printable(record.getMessage())
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        rid = getattr(record, "request_id", None)
        if rid:
            line += f" [request {printable(str(rid))}]"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        for block in (record.exc_text, self.formatStack(record.stack_info) if record.stack_info else None):
            if block:
                line += "".join(f"\n  {part}" for part in printable(block, newlines=True).split("\n"))
        return line


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

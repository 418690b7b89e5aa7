"""Log hygiene: every configured secret and every token the relay obtains is masked in every log record."""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

MASK = "[redacted]"

_secrets: set[str] = set()
_lock = threading.Lock()
_installed = False


def add_secrets(values: Iterable[str]) -> None:
    """Mask these values from now on (config secrets at start-up, tokens as they are obtained)."""
    with _lock:
        _secrets.update(v for v in values if isinstance(v, str) and len(v) >= 4)


def mask(text: str) -> str:
    """text with every known secret replaced by [redacted], longest first (one secret may contain another)."""
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
        if _secrets:
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

"""Log hygiene: every configured secret and every token the relay obtains is masked in every log record."""
from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

MASK = "[redacted]"

_secrets: set[str] = set()
_lock = threading.Lock()
_installed = False
_personal_data = False

EMAIL = re.compile(r"([A-Za-z0-9])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")
PHONE = re.compile(r"(?<![\w.])\+?\d[\d ().-]{6,}\d(?![\w.])")


def show_personal_data(on: bool) -> None:
    """[logging] personal_data = true: log email addresses and phone numbers unmasked (for debugging only)."""
    global _personal_data
    _personal_data = on


def _phone(match: re.Match[str]) -> str:
    digits = [c for c in match.group(0) if c.isdigit()]
    if len(digits) < 9:  # dates, amounts and counts are not phone numbers
        return match.group(0)
    return "*" * (len(digits) - 2) + "".join(digits[-2:])


def mask_personal(text: str) -> str:
    """a***@example.org and *********23: enough to tell records apart, not enough to identify anyone."""
    if _personal_data:
        return text
    return PHONE.sub(_phone, EMAIL.sub(r"\1***@\2", text))


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

"""The request body of a submission, read within the limits: JSON, urlencoded or multipart, into {name: value}.

Web floor: it reads the WSGI request (werkzeug's multipart decoder, a bounded stream) and answers 400/413/415
in the contract's shape; what a body means (controls, context, OSDI person) is the forms floor's.
"""
from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import parse_qsl

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from formrelay.core.config import RelaySettings
from formrelay.core.errors import BadRequest, TooLarge, UnsupportedMediaType
from formrelay.core.i18n import Msg
from formrelay.core.i18n import gettext as _
from formrelay.forms.submission import OSDIBody, Value, scalar

TOO_MANY_FIELDS = Msg("Too many fields (at most {count}).")
TOO_MANY_BYTES = Msg("The body is larger than {count} bytes.")

def _from_json(raw: bytes) -> dict[str, Value]:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest(_("The body is not valid JSON in UTF-8.")) from None
    if not isinstance(data, dict):
        raise BadRequest(_("A JSON body must be one flat object."))
    if _has_lone_surrogate(data):
        raise BadRequest(_(NOT_UTF8))
    if isinstance(data.get("person"), dict):
        return OSDIBody(data)
    out: dict[str, Value] = {}
    for key, value in data.items():
        if isinstance(value, list):
            items = [scalar(v) for v in value]
            out[key] = [v for v in items if v is not None]
        else:
            one = scalar(value)
            if one is not None:
                out[key] = one
    return out


NOT_UTF8 = Msg("The body is not valid UTF-8.")
SURROGATE = re.compile("[\ud800-\udfff]")


def _has_lone_surrogate(data: Any) -> bool:
    """JSON's \\ud800 escapes decode to lone surrogates, which no UTF-8 encoder (or CRM) can take: refuse them."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _add(out: dict[str, Value], key: str, value: str) -> None:
    if key in out:
        previous = out[key]
        out[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
    else:
        out[key] = value


def _from_urlencoded(raw: bytes, limits: RelaySettings) -> dict[str, Value]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(_(NOT_UTF8)) from None
    try:
        pairs = parse_qsl(
            text, keep_blank_values=True, max_num_fields=limits.max_fields, encoding="utf-8", errors="strict"
        )
    except UnicodeDecodeError:
        raise BadRequest(_(NOT_UTF8)) from None
    except ValueError:
        raise TooLarge(TOO_MANY_FIELDS.format(count=limits.max_fields)) from None
    out: dict[str, Value] = {}
    for key, value in pairs:
        _add(out, key, value)
    return out


PART_CHARSETS = ("utf-8", "utf8", "us-ascii", "ascii")


def _from_multipart(request: Request, limits: RelaySettings) -> dict[str, Value]:
    """Multipart parts decoded as strict UTF-8, like the other two body types (werkzeug's own parser would
    turn bytes that are not UTF-8 into U+FFFD and pass them on)."""
    boundary = request.mimetype_params.get("boundary", "")
    if not boundary:
        raise BadRequest(_("The multipart body has no boundary."))
    decoder = MultipartDecoder(boundary.encode("utf-8", "replace"), max_form_memory_size=limits.max_body_bytes)
    parts = 0
    out: dict[str, Value] = {}
    part: Field | File | None = None
    chunks: list[bytes] = []
    try:
        decoder.receive_data(_read(request, limits))
        decoder.receive_data(None)
        while True:
            event = decoder.next_event()
            if isinstance(event, Epilogue):
                break
            if isinstance(event, NeedData):
                raise BadRequest(_("The multipart body is cut short."))
            if isinstance(event, File):
                if event.filename:
                    raise BadRequest(_("File uploads are not accepted."))
                part, chunks = event, []  # an empty file input: nothing chosen, nothing kept
            elif isinstance(event, Field):
                part, chunks, parts = event, [], parts + 1
                if parts > limits.max_fields:
                    raise TooLarge(TOO_MANY_FIELDS.format(count=limits.max_fields))
                charset = parse_options_header(event.headers.get("content-type", ""))[1].get("charset", "utf-8")
                if charset.lower() not in PART_CHARSETS:
                    raise UnsupportedMediaType(_("Only UTF-8 is accepted."))
            elif isinstance(event, Data):
                chunks.append(event.data)
                if not event.more_data and isinstance(part, Field) and part.name:
                    _add(out, part.name, b"".join(chunks).decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest(_(NOT_UTF8)) from None
    except RequestEntityTooLarge:
        raise TooLarge(TOO_MANY_BYTES.format(count=limits.max_body_bytes)) from None
    except ValueError:
        raise BadRequest(_("The multipart body cannot be read.")) from None
    return out


def parse_body(request: Request, limits: RelaySettings) -> dict[str, Value]:
    """The submitted fields as {name: value or [values]}; 400/413/415 in the contract's shape."""
    length = request.content_length
    if length is not None and length > limits.max_body_bytes:
        raise TooLarge(TOO_MANY_BYTES.format(count=limits.max_body_bytes))
    mimetype = request.mimetype
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(_("Only UTF-8 is accepted."))
    if mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json")):
        body = _from_json(_read(request, limits))
    elif mimetype == "application/x-www-form-urlencoded":
        body = _from_urlencoded(_read(request, limits), limits)
    elif mimetype == "multipart/form-data":
        body = _from_multipart(request, limits)
    else:
        raise UnsupportedMediaType(
            _("Send application/json, application/x-www-form-urlencoded or multipart/form-data.")
        )
    if (body.size if isinstance(body, OSDIBody) else len(body)) > limits.max_fields:
        raise TooLarge(TOO_MANY_FIELDS.format(count=limits.max_fields))
    return body


def _read(request: Request, limits: RelaySettings) -> bytes:
    # Read one byte past the limit so that a chunked body without Content-Length is bounded too.
    raw = request.stream.read(limits.max_body_bytes + 1)
    if len(raw) > limits.max_body_bytes:
        raise TooLarge(TOO_MANY_BYTES.format(count=limits.max_body_bytes))
    return raw

"""The OpenAPI 3 document: the contract's routes, with each configured form's request schema (apispec)."""
from __future__ import annotations

import logging
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Response, jsonify

from formrelay.core.errors import ProviderError
from formrelay.core.outcome import STATUS_HTTP
from formrelay.core.version import __version__
from formrelay.delivery.relay import Relay, current_relay
from formrelay.forms.osdi import request_schema

log = logging.getLogger(__name__)

bp = Blueprint("openapi", __name__)

OUTCOME = {
    "type": "object",
    "required": ["ok", "status"],
    "properties": {
        "ok": {"type": "boolean"},
        "status": {"type": "string", "enum": sorted(STATUS_HTTP)},
        "message": {"type": "string"},
        "redirect": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
        "retry_after": {"type": "integer"},
        "thanks": {
            "type": "object", "required": ["message"],
            "description": "A success's thank-you ladder, when the form has a [thanks] table (links from config only).",
            "properties": {
                "message": {"type": "string"},
                "share_label": {"type": "string"},
                "share": {"type": "array", "items": {"type": "object", "required": ["channel", "label", "url"],
                          "properties": {"channel": {"type": "string",
                                                     "enum": ["facebook", "x", "whatsapp", "email", "copy"]},
                                         "label": {"type": "string"}, "url": {"type": "string"}}}},
                "copy": {"type": "string"},
                "copied": {"type": "string"},
                "donate": {"type": "object", "required": ["url", "label"],
                           "properties": {"url": {"type": "string"}, "label": {"type": "string"}}},
            },
        },
    },
}
DESCRIPTION = {
    "type": "object",
    "required": ["form", "provider", "title", "fields"],
    "properties": {
        "form": {"type": "string"},
        "provider": {"type": "string"},
        "title": {"type": "string"},
        "locale": {"type": "string", "description": "The language of the labels, title and texts (as Content-Language)."},
        "texts": {"type": "object", "additionalProperties": {"type": "string"},
                  "description": "The snippet's texts (submit, sending, delivered, ...) in that language."},
        "fields": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "label", "type", "required"],
                "properties": {
                    "name": {"type": "string"},
                    "label": {"type": "string"},
                    "type": {"type": "string", "enum": ["text", "email", "tel", "textarea", "select", "radio",
                                                        "checkbox", "number", "date"]},
                    "required": {"type": "boolean"},
                    "max_length": {"type": "integer"},
                    "options": {"type": "array", "items": {
                        "type": "object", "properties": {"value": {"type": "string"}, "label": {"type": "string"}}}},
                },
            },
        },
        "started": {"type": "string", "description": "Time-trap token, posted back once as `_started`."},
        "started_min": {"type": "number", "description": "Seconds after `started` was issued before a submission "
                        "carrying it is taken (the snippet waits out the rest; sooner gets 429 with Retry-After)."},
    },
}
CONTROLS = {
    "_hp": {"type": "string", "description": "Honeypot: must be empty."},
    "_idempotency_key": {"type": "string", "maxLength": 200},
    "_started": {"type": "string", "description": "Time-trap token from the snippet."},
    "_page_url": {"type": "string", "maxLength": 2000,
                  "description": "The page's address (http or https): attribution parameters a provider may read."},
    "_first_touch": {"type": "string", "maxLength": 8000,
                     "description": "The attribution parameters of the first campaign page of the visit, as a query "
                                    "string (source=em-1206&utm_medium=email); the snippet remembers them."},
    "_last_touch": {"type": "string", "maxLength": 8000,
                    "description": "The same for the latest campaign page; the form's `attribution` says which one "
                                   "its CRM is credited with."},
}


HTML = {"text/html": {"schema": {"type": "string"}}}


def _answers(*statuses: str, html: bool = False) -> dict[str, Any]:
    """Responses in the contract's JSON shape; with html, also the pages a plain form post gets."""
    out: dict[str, Any] = {}
    for status in statuses:
        code = str(STATUS_HTTP[status])
        content: dict[str, Any] = {"application/json": {"schema": {"$ref": "#/components/schemas/Outcome"}}}
        if html:
            content.update(HTML)
        out.setdefault(code, {"description": status, "content": content})
        if code in ("429", "503", "202", "409"):
            out[code]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    if html:
        out["303"] = {"description": "a plain form post: see the form's success_url, error_url or thank-you page",
                      "headers": {"Location": {"schema": {"type": "string"}}}}
    return out


def build_document(relay: Relay, version: str) -> dict[str, Any]:
    spec = APISpec(
        title="formrelay",
        version=version,
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin()],
        info={"description": "Validate supporters' form submissions and relay them to the campaign's CRM."},
    )
    spec.components.schema("Outcome", OUTCOME)
    spec.components.schema("FormDescription", DESCRIPTION)
    spec.path(
        path="/healthz",
        operations={"get": {"summary": "Liveness", "responses": {"200": {"description": "serving", "content": {
            "application/json": {"schema": {"type": "object", "properties": {"status": {"type": "string"}}}}}}}}},
    )
    ready = {"application/json": {"schema": {"type": "object", "required": ["status"], "properties": {
        "status": {"type": "string", "enum": ["ok", "degraded", "unavailable"]}}}}}
    spec.path(
        path="/readyz",
        operations={"get": {"summary": "Readiness: queue storage, providers' auth state, schema cache (details for "
                                       "[metrics] allow/token only)",
                            "responses": {"200": {"description": "ok or degraded", "content": ready},
                                          "503": {"description": "the queue storage does not answer",
                                                  "content": ready}}}},
    )
    spec.path(
        path="/metrics",
        operations={"get": {"summary": "Prometheus metrics, for [metrics] allow-listed addresses or the bearer token",
                            "responses": {
                                "200": {"description": "Prometheus text exposition",
                                        "content": {"text/plain": {"schema": {"type": "string"}}}},
                                "403": {"description": "not an operator", "content": {"application/json": {
                                    "schema": {"$ref": "#/components/schemas/Outcome"}}}},
                                "404": {"description": "[metrics] enabled = false", "content": {"application/json": {
                                    "schema": {"$ref": "#/components/schemas/Outcome"}}}},
                            }}},
    )
    spec.path(path="/v1/openapi.json", operations={"get": {"summary": "This document", "responses": {"200": {
        "description": "OpenAPI 3", "content": {"application/json": {"schema": {"type": "object"}}}}}}})
    for slug, form in relay.forms.items():
        try:
            schema = form.schema
        except ProviderError as exc:
            log.warning("openapi: form %s left without a request schema: %s", slug, exc)
            body_schema: Any = {"type": "object"}
            json_schema: Any = body_schema
        else:
            name = f"{schema.__class__.__name__}"
            if name not in spec.components.schemas:
                spec.components.schema(name, schema=schema.__class__)
            body_schema = {"allOf": [{"$ref": f"#/components/schemas/{name}"},
                                     {"type": "object", "properties": CONTROLS}]}
            # JSON may also be an OSDI helper body; a flat one has no `person` object, so exactly one applies.
            flat = {"allOf": [*body_schema["allOf"], {"not": {"type": "object", "required": ["person"],
                                                              "properties": {"person": {"type": "object"}}}}]}
            json_schema = {"oneOf": [flat, request_schema(form.person_mapping, form.config.osdi, CONTROLS)]}
        spec.path(
            path=f"/v1/forms/{slug}",
            operations={
                "get": {
                    "summary": f"Describe the form {slug}",
                    "responses": {
                        "200": {"description": "the form", "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/FormDescription"}}}},
                        **_answers("not_found", "unavailable"),
                    },
                },
                "post": {
                    "summary": f"Submit the form {slug}",
                    "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                    "schema": {"type": "string", "maxLength": 200}}],
                    "requestBody": {"required": True, "content": {
                        "application/json": {"schema": json_schema},
                        "application/x-www-form-urlencoded": {"schema": body_schema},
                        "multipart/form-data": {"schema": body_schema},
                    }},
                    "responses": _answers(
                        "delivered", "queued", "bad_request", "forbidden", "too_large", "unsupported_media_type",
                        "invalid", "rate_limited", "rejected", "unavailable", "conflict", html=True,
                    ),
                },
                "options": {"summary": "CORS preflight", "responses": {"204": {"description": "preflight"}}},
            },
        )
    return spec.to_dict()


@bp.get("/v1/openapi.json")
def openapi() -> Response:
    return jsonify(build_document(current_relay(), __version__))

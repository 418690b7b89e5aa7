"""The ceiling for this stack: a Flask app that forwards a JSON form post, unchecked, to one upstream URL.

    FORWARDER_UPSTREAM=http://127.0.0.1:PORT/ngp/v2/forms/demo-petition gunicorn --chdir benchmarks forwarder:app

No validation, no schema, no queue, no rate limits: it reads the JSON body, posts it urlencoded with a pooled
requests.Session, and returns the upstream's answer as it came. benchmarks/run.py compares the relay with it.
"""
from __future__ import annotations

import os

import requests
from flask import Flask, Response, request
from requests.adapters import HTTPAdapter

UPSTREAM = os.environ["FORWARDER_UPSTREAM"]

session = requests.Session()
_adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
session.mount("http://", _adapter)
session.mount("https://", _adapter)

app = Flask(__name__)


@app.post("/v1/forms/<slug>")
def forward(slug: str) -> Response:
    body = request.get_json(force=True, silent=True) or {}
    upstream = session.post(UPSTREAM, data=body, headers={"Accept": "application/json"}, timeout=(3.05, 10))
    return Response(upstream.content, status=upstream.status_code, mimetype="application/json")

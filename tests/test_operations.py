"""Operability: /metrics (content and access), /readyz, request ids, one structured log line per submission."""
from __future__ import annotations

import json
import logging
import re

import pytest

from formrelay import create_app
from formrelay.core.logs import JSONFormatter, RequestIdFilter, TextFormatter
from tests.conftest import NGP_FORM_URL, NGP_KEY, NGP_SUCCESS, base_config, free_port

VALID = {"FirstName": "Ann", "LastName": "Lee", "EmailAddress": "ann@example.org", "PostalCode": "20009"}
METRICS_TOKEN = "metrics-token-9f8e7d6c5b4a"
OUTSIDER = {"REMOTE_ADDR": "203.0.113.9"}


def make_app(tmp_path, mocked=None, **sections):
    raw = base_config()
    raw["queue"] = {"path": str(tmp_path / "queue.sqlite3"), "embedded_worker": False}
    raw.update(sections)
    if mocked is not None:
        mocked.post(NGP_FORM_URL, json=NGP_SUCCESS)
    return create_app(raw)


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus exposition, 0 when absent."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        match = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if found == labels:
            return float(match.group(3))
    return 0.0


def scrape(client, **kwargs):
    answer = client.get("/metrics", **kwargs)
    assert answer.status_code == 200, answer.data
    assert answer.mimetype == "text/plain"
    return answer.get_data(as_text=True)


# -- /metrics --------------------------------------------------------------------------------------

def test_submissions_are_counted_by_form_provider_and_outcome(tmp_path, mocked):
    client = make_app(tmp_path, mocked).test_client()
    before = scrape(client)
    assert client.post("/v1/forms/join", json=VALID).status_code == 200
    assert client.post("/v1/forms/join", json={**VALID, "EmailAddress": "nope"}).status_code == 422
    client.post("/v1/forms/join", json={**VALID, "_hp": "bot"})
    after = scrape(client)
    for outcome in ("delivered", "invalid", "discarded"):
        key = {"form": "join", "provider": "ngp", "outcome": outcome}
        assert sample(after, "formrelay_submissions_total", **key) == sample(before, "formrelay_submissions_total", **key) + 1
    spam = {"form": "join", "reason": "honeypot filled"}
    assert sample(after, "formrelay_rejections_total", **spam) == sample(before, "formrelay_rejections_total", **spam) + 1
    # the definition GET and the submission POST both answered 2xx
    calls = {"provider": "ngp", "result": "2xx"}
    assert sample(after, "formrelay_upstream_request_seconds_count", **calls) >= \
        sample(before, "formrelay_upstream_request_seconds_count", **calls) + 1


def test_queue_depth_and_oldest_age_come_from_the_store(tmp_path, mocked):
    app = make_app(tmp_path)
    mocked.post(NGP_FORM_URL, status=503)
    client = app.test_client()
    assert sample(scrape(client), "formrelay_queue_depth") == 0
    for _ in range(3):
        assert client.post("/v1/forms/join", json=VALID).get_json()["status"] == "queued"
    text = scrape(client)
    assert sample(text, "formrelay_queue_depth") == 3
    assert sample(text, "formrelay_queue_oldest_age_seconds") >= 0
    assert sample(text, "formrelay_queue_storage_up") == 1
    assert sample(text, "formrelay_upstream_request_seconds_count", provider="ngp", result="5xx") >= 3


def test_rate_limited_posts_are_counted(tmp_path, mocked):
    raw_relay = {"allowed_origins": ["https://www.example.org"], "rate_limit": "1/minute"}
    client = make_app(tmp_path, mocked, relay=raw_relay).test_client()
    before = sample(scrape(client), "formrelay_rejections_total", form="join", reason="rate limited")
    client.post("/v1/forms/join", json=VALID)
    assert client.post("/v1/forms/join", json=VALID).status_code == 429
    assert sample(scrape(client), "formrelay_rejections_total", form="join", reason="rate limited") == before + 1


def test_metrics_are_for_allowed_addresses_or_the_token(tmp_path, mocked, caplog):
    client = make_app(tmp_path, mocked, metrics={"token": METRICS_TOKEN, "allow": ["10.0.0.0/8"]}).test_client()
    assert client.get("/metrics").status_code == 403  # loopback is no longer allowed
    refused = client.get("/metrics", environ_base=OUTSIDER, headers={"Authorization": "Bearer wrong-token-000000"})
    assert refused.status_code == 403 and refused.get_json()["status"] == "forbidden"
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    with_token = client.get("/metrics", environ_base=OUTSIDER, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert with_token.status_code == 200 and b"formrelay_submissions" in with_token.data
    logging.getLogger("formrelay.test").info("a token %s in a log line", METRICS_TOKEN)
    assert METRICS_TOKEN not in caplog.text  # the metrics token is a secret like any other


def test_metrics_can_be_switched_off(tmp_path, mocked):
    client = make_app(tmp_path, mocked, metrics={"enabled": False}).test_client()
    assert client.get("/metrics").status_code == 404


def test_metrics_settings_are_validated(tmp_path):
    from formrelay.core.config import ConfigError

    with pytest.raises(ConfigError, match="metrics.allow"):
        make_app(tmp_path, metrics={"allow": ["not-a-network"]})
    with pytest.raises(ConfigError, match="metrics.token"):
        make_app(tmp_path, metrics={"token": "short"})


# -- /readyz ---------------------------------------------------------------------------------------

def test_readiness_reports_queue_forms_and_providers(tmp_path, mocked):
    client = make_app(tmp_path, mocked).test_client()
    view = client.get("/readyz").get_json()
    assert view["status"] == "ok" and view["queue"]["ok"] is True and view["queue"]["depth"] == 0
    assert view["forms"]["join"] == {"provider": "ngp", "schema": "not loaded yet"}
    client.get("/v1/forms/join")
    view = client.get("/readyz").get_json()
    assert view["forms"]["join"]["schema"] == "cached" and view["forms"]["join"]["fields"] > 0
    assert NGP_KEY not in json.dumps(view)
    public = client.get("/readyz", environ_base=OUTSIDER)
    assert public.status_code == 200 and public.get_json() == {"status": "ok"}


def test_readiness_is_degraded_when_a_definition_cannot_be_fetched(tmp_path, mocked):
    mocked.replace("GET", NGP_FORM_URL, status=401)
    client = make_app(tmp_path).test_client()
    assert client.get("/v1/forms/join").status_code == 503
    view = client.get("/readyz").get_json()
    assert view["status"] == "degraded"
    assert view["forms"]["join"]["schema"] == "failing" and "key was refused" in view["forms"]["join"]["problem"]


def test_readiness_is_unavailable_when_the_queue_storage_is_down(tmp_path, mocked):
    relay = {"allowed_origins": [], "rate_limit": "", "redis_url": f"redis://127.0.0.1:{free_port()}/0"}
    client = make_app(tmp_path, mocked, relay=relay).test_client()
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.get_json()["status"] == "unavailable" and answer.get_json()["queue"]["ok"] is False
    assert sample(scrape(client), "formrelay_queue_storage_up") == 0


def test_readiness_shows_ens_auth_failures_without_the_token(tmp_path, sandbox):
    token = "wrong-ens-token-1234567890"
    raw = {
        "relay": {"rate_limit": ""},
        "queue": {"path": str(tmp_path / "q.sqlite3"), "embedded_worker": False},
        "providers": {"ens": {"base_url": f"{sandbox.url}/ens/service", "api_token": token}},
        "forms": {"mp": {"provider": "ens", "page_id": 12345, "fields": {"Email Address": {"required": True}}}},
    }
    client = create_app(raw).test_client()
    client.get("/v1/forms/mp")
    view = client.get("/readyz").get_json()
    assert view["status"] == "degraded"
    assert view["providers"]["ens"]["state"] == "failing" and "whitelisted" in view["providers"]["ens"]["problem"]
    assert token not in json.dumps(view)
    assert sample(scrape(client), "formrelay_provider_auth_ok", provider="ens") == 0


# -- request ids and log lines ---------------------------------------------------------------------

def test_request_ids_are_echoed_when_sane_and_made_otherwise(tmp_path, mocked):
    client = make_app(tmp_path, mocked).test_client()
    assert client.get("/healthz", headers={"X-Request-ID": "lb-1234.abc"}).headers["X-Request-ID"] == "lb-1234.abc"
    made = client.get("/healthz", headers={"X-Request-ID": "<script>" * 20}).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)


def test_one_json_log_line_per_submission_without_personal_data(tmp_path, mocked, caplog):
    client = make_app(tmp_path, mocked, logging={"format": "json"}).test_client()
    caplog.set_level(logging.INFO, logger="formrelay")
    caplog.handler.addFilter(RequestIdFilter())
    answer = client.post("/v1/forms/join", json=VALID, headers={"X-Request-ID": "req-42"})
    assert answer.status_code == 200
    lines = [json.loads(JSONFormatter().format(r)) for r in caplog.records if getattr(r, "event", None) == "submission"]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == "req-42" and line["form"] == "join" and line["provider"] == "ngp"
    assert line["outcome"] == "delivered" and line["upstream_status"] == 200
    assert line["latency_ms"] >= line["upstream_ms"] > 0 and line["level"] == "INFO"
    everything = "\n".join(JSONFormatter().format(r) for r in caplog.records)
    assert "ann@example.org" not in everything and "Ann" not in everything.replace("Annotated", "")


def test_invalid_submissions_log_the_fields_in_error_not_the_values(tmp_path, mocked, caplog):
    client = make_app(tmp_path, mocked).test_client()
    caplog.set_level(logging.INFO, logger="formrelay")
    client.post("/v1/forms/join", json={**VALID, "EmailAddress": "bad-address-xyz"})
    record = next(r for r in caplog.records if getattr(r, "event", None) == "submission")
    assert record.outcome == "invalid" and record.error_fields == ["EmailAddress"]
    assert "bad-address-xyz" not in caplog.text


def test_text_lines_carry_the_request_id():
    record = logging.LogRecord("formrelay.x", logging.INFO, __file__, 1, "hello", None, None)
    record.request_id = "abc"
    assert TextFormatter().format(record).endswith("formrelay.x: hello [request abc]")

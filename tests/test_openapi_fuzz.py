"""Schemathesis against /v1/openapi.json, the sandbox NGP as the provider: no 5xx, answers as documented."""
from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from formrelay import create_app

pytestmark = pytest.mark.e2e


def test_every_operation_conforms_to_the_document(sandbox):
    app = create_app({
        "relay": {"rate_limit": "", "global_rate_limit": "", "time_trap_min": 0},
        "providers": {"ngp": {"base_url": f"{sandbox.url}/ngp/v2", "api_key": "sandbox-ngp-api-key"}},
        "forms": {"join": {"provider": "ngp", "form_id": "demo-petition"}},
        "queue": {"embedded_worker": False},
    })
    schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"GET /v1/forms/join", "POST /v1/forms/join", "GET /healthz",
                                               "GET /readyz", "GET /metrics"}
    for operation in operations:

        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def conforms(case):
            response = case.call()
            assert response.status_code not in (500, 501, 504), (case.operation.label, response.status_code)
            case.validate_response(response, checks=[status_code_conformance, content_type_conformance,
                                                     response_schema_conformance])

        conforms()

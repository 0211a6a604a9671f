"""schemathesis over /openapi.json with an admin key (it reaches every route): zero 5xx, whatever the input.

The model is scripted here (this test is about the API's handling of input, not the model); policy,
audit and keys are the real ones. Operations are driven from schemathesis' Hypothesis strategies
directly (its pytest plugin does not load with this pytest).
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.api.scripted import ScriptedBackend, answer


def test_no_server_errors(appliance):
    real = appliance.services.backend
    appliance.services.backend = ScriptedBackend(answer("Fine."))
    headers = {"Authorization": f"Bearer {appliance.tokens['admin']}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", appliance.app, headers=headers)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    try:
        for operation in operations:
            @given(case=operation.as_strategy())
            @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                      database=None)
            def check(case) -> None:
                if case.method == "DELETE":
                    case.path_parameters = {"key_id": "0000000000000000"}  # keep the test's own keys
                response = case.call(headers=headers)
                assert response.status_code < 500, (case.method, case.path, response.text[:300])
                if response.status_code >= 400:
                    assert set(response.json()["error"]) == {"message", "type", "param", "code"}

            check()
    finally:
        appliance.services.backend = real

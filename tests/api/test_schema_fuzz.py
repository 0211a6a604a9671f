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
            @settings(
                max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
            )
            def check(case) -> None:
                if case.method == "DELETE" and "key_id" in (case.path_parameters or {}):
                    case.path_parameters = {"key_id": "0000000000000000"}  # keep the test's own keys
                response = case.call(headers=headers)
                assert response.status_code < 500, (case.method, case.path, response.text[:300])
                if response.status_code >= 400:
                    assert set(response.json()["error"]) == {"message", "type", "param", "code"}

            check()
    finally:
        appliance.services.backend = real


HOSTILE_TEXT = ["x\ud800", "\udfff", "a\x00b", "\u202eevil", "\ufeff\u200b", "𝔘𝔫𝔦", "a" * 70_000, ""]
HOSTILE_NUMBERS = [-1, 0, 2**63, -(2**63) - 1, 2**64, 10**400, 1e308, -0.0, 0.5]


def _hostile(value, rng):
    """`value` with every string and number replaced by an odd one (lone surrogates, NUL, huge, negative)."""
    if isinstance(value, str):
        return rng.choice(HOSTILE_TEXT)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return rng.choice(HOSTILE_NUMBERS)
    if isinstance(value, dict):
        return {k: _hostile(v, rng) for k, v in value.items()}
    if isinstance(value, list):
        return [_hostile(v, rng) for v in value]
    return value


def test_hostile_values_in_every_field_are_never_a_server_error(appliance):
    """Schema-valid bodies with every leaf swapped for a hostile value, sent as raw JSON (escapes intact)."""
    import json
    import random

    real = appliance.services.backend
    appliance.services.backend = ScriptedBackend(answer("Fine."))
    headers = {"Authorization": f"Bearer {appliance.tokens['admin']}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", appliance.app, headers=headers)
    rng = random.Random(0)
    sent = 0
    refused_unicode: list[bool] = []
    try:
        for result in schema.get_all_operations():
            operation = result.ok()
            if (
                operation.method.upper() not in ("POST", "PUT", "PATCH")
                or operation.body is None
                or not len(operation.body)
            ):
                continue

            @given(case=operation.as_strategy())
            @settings(
                max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
            )
            def check(case) -> None:
                nonlocal sent
                if not isinstance(case.body, dict):
                    return
                raw = json.dumps(_hostile(case.body, rng))  # ASCII: lone surrogates travel as \\ud800 escapes
                response = case.call(headers={**headers, "content-type": "application/json"}, data=raw.encode())
                sent += 1
                refused_unicode.append("not valid Unicode" in response.text)
                assert response.status_code < 500, (case.path, raw[:200], response.text[:300])
                if response.status_code >= 400:
                    assert set(response.json()["error"]) == {"message", "type", "param", "code"}

            check()
        assert sent >= 20 and any(refused_unicode)  # the raw bodies (with their escapes) were the ones sent
    finally:
        appliance.services.backend = real


def test_every_success_body_is_documented(appliance):
    """Each JSON route declares what it answers (a typed model in /openapi.json), not an untyped object."""
    spec = appliance.app.openapi()
    untyped = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            ok = next((r for code, r in op["responses"].items() if code.startswith("2")), {})
            schema = ok.get("content", {}).get("application/json", {}).get("schema")
            if schema is not None and not schema.get("$ref") and schema.get("type") in (None, "object"):
                untyped.append(f"{method.upper()} {path}")
    assert untyped == []
